"""The acceptance test of curated answers (issue #17), in Debian's Chromium with two browser contexts: a customer in
the widget on a business's website (another origin, as tests/embeds does) and the owner in the dashboard.

The customer asks; the owner opens that conversation's transcript, clicks "Write the right answer" under the
assistant's reply and writes it; a customer then asks the same thing in other words in the widget and gets the
corrected answer, cited as from the team, and the curated answer counts the hit.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, expect

from chat.models import Conversation, Message
from documents.models import CuratedAnswer
from tests.chat.test_protocol import knowledge_seed
from tests.config.test_websocket import session_cookie
from tests.embeds.conftest import (  # noqa: F401  (fixtures)
    RETURNS,
    SHIPPING,
    embed_make,
    host_page_html,
    host_site,
    in_workspace,
    widget_server,
    workspace_on_plan,
)
from tests.embeds.test_widget_browser import chat_frame, launcher, snippet_for

pytestmark = pytest.mark.browser

WAIT = 90_000  # ms: the machine is shared and busy
QUESTION = "How many days do I have to return a product?"
PARAPHRASE = "How long do I have to return a product?"
CORRECTED = "You have 45 days from delivery to return a product, and the return label is free."


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server, host_site) -> dict[str, Any]:  # noqa: F811
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Curated Shop", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS), ("Shipping times", SHIPPING))
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
        host = ws.host
        cookie = session_cookie(ws.owner)
    page_url = host_site.page(f"curated-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"ws": ws, "host": host, "url": page_url, "cookie": cookie}


def _ask_in_widget(browser: Browser, url: str, text: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    expect(launcher(page)).to_be_visible(timeout=WAIT)
    launcher(page).click()
    frame = chat_frame(page)
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    box.fill(text)
    box.press("Enter")
    return context, frame


def test_correct_an_answer_from_a_transcript_then_a_paraphrase_gets_it(browser: Browser, shop, widget_server):  # noqa: F811
    ws, host = shop["ws"], shop["host"]
    # --- a customer asks; the knowledge base answers (30 days) -----------------------------------------------------
    customer, frame = _ask_in_widget(browser, shop["url"], QUESTION)
    first = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(first.locator(".ccw-bubble")).to_contain_text("30 days", timeout=WAIT)
    customer.close()
    conversation = in_workspace(ws.workspace, lambda: Conversation.objects.filter(channel="widget").latest("pk"))
    reply = in_workspace(ws.workspace, lambda: Message.objects.filter(conversation=conversation,
                                                                      role="assistant").latest("pk"))

    # --- the owner corrects it from the transcript ------------------------------------------------------------------
    staff = browser.new_context()
    name, value = shop["cookie"].split("=", 1)
    assert name == settings.SESSION_COOKIE_NAME
    staff.add_cookies([{"name": name, "value": value, "domain": host, "path": "/"}])
    page = staff.new_page()
    page.goto(widget_server.url(host, f"/conversations/{conversation.public_id}/"))
    item = page.locator(f'li.msg-assistant[data-message-id="{reply.pk}"]')
    expect(item).to_contain_text("30 days", timeout=WAIT)
    item.get_by_role("link", name="Write the right answer").click()
    expect(page.get_by_label("Question", exact=True)).to_have_value(QUESTION, timeout=WAIT)
    page.get_by_label("The answer customers should get").fill(CORRECTED)
    page.get_by_role("button", name="Save answer").click()
    expect(page.locator("body")).to_contain_text("from now on, questions like this one get it", timeout=WAIT)
    assert page.url.endswith(f"/conversations/{conversation.public_id}/")  # back where the fix started
    made = in_workspace(ws.workspace, lambda: CuratedAnswer.objects.get(source_message_id=reply.pk))
    assert made.question == QUESTION and made.answer == CORRECTED and made.created_by_id == ws.owner.pk

    # --- another customer asks it in other words: the corrected answer, from the team --------------------------------
    customer, frame = _ask_in_widget(browser, shop["url"], PARAPHRASE)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text(CORRECTED, timeout=WAIT)
    expect(answer.locator(".ccw-sources")).to_contain_text("Answer from the team", timeout=WAIT)
    expect(answer.locator(".ccw-bubble")).not_to_contain_text("30 days")
    customer.close()
    made = in_workspace(ws.workspace, lambda: CuratedAnswer.objects.get(pk=made.pk))
    assert made.hits == 1 and made.last_hit_at is not None
    served = in_workspace(ws.workspace, lambda: Message.objects.filter(role="assistant").latest("pk"))
    assert served.metadata["curated_answer_id"] == made.pk and served.content == CORRECTED

    # --- the curated answers page shows it, with its count -----------------------------------------------------------
    page.goto(widget_server.url(host, "/knowledge/curated/"))
    row = page.locator(f'tr[data-curated-id="{made.pk}"]')
    expect(row).to_contain_text(QUESTION, timeout=WAIT)
    expect(row.locator('[data-field="hits"]')).to_have_text("1")

    # --- "Try it": a streamed reply offers the same fix, with the question typed in ---------------------------------
    page.goto(widget_server.url(host, "/conversations/try/"))
    page.get_by_role("button", name="Start a conversation").click()
    box = page.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    expect(page.locator("[data-chat-state]")).to_have_attribute("data-state", "live", timeout=WAIT)
    box.fill("How long does standard delivery take?")
    box.press("Enter")
    streamed = page.locator("li.msg-assistant[data-message-id]").last
    expect(streamed).to_contain_text("two to four working days", timeout=WAIT)
    link = streamed.get_by_role("link", name="Write the right answer")
    expect(link).to_have_attribute("href", re.compile(r"question=How%20long%20does%20standard%20delivery%20take"))
    link.click()
    expect(page.get_by_label("Question", exact=True)).to_have_value("How long does standard delivery take?", timeout=WAIT)
    staff.close()
