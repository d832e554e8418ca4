"""Follow-up suggestions in Debian's Chromium (issue #18 item 1): the widget on a business's website served from
another origin (http://shop.localhost:<port>/, the workspace on http://<slug>.localhost:<port>/). After an answer,
follow-up chips appear under it — only pool questions the knowledge base answers, never the one just asked — and
clicking one (or Enter on it) asks it."""
from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import Conversation
from tests.chat.test_protocol import knowledge_seed
from tests.embeds.conftest import RETURNS, SHIPPING, embed_make, host_page_html, in_workspace, workspace_on_plan
from tests.embeds.test_followups import DELIVERY_QUESTION, EXPRESS_QUESTION, RETURN_QUESTION, UNANSWERABLE
from tests.embeds.test_widget_browser import WAIT, chat_frame, launcher, snippet_for, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server, host_site) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Follow-up chips", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS), ("Shipping times", SHIPPING))
        origin = host_site.origin("shop.localhost")
        embed = embed_make(ws.workspace, [origin], name="Follow-ups", behaviour={"show_followups": True},
                           starter_questions=[UNANSWERABLE, RETURN_QUESTION, DELIVERY_QUESTION, EXPRESS_QUESTION])
        host = ws.host
    return {"ws": ws, "url": host_site.page(f"followups-{embed.pk}.html",
                                            host_page_html(snippet_for(widget_server, host, embed)))}


def test_follow_up_chips_appear_after_an_answer_and_clicking_one_asks_it(page: Page, shop):
    page.goto(shop["url"])
    expect(launcher(page)).to_be_visible(timeout=WAIT)
    launcher(page).click()
    frame = chat_frame(page)
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    box.fill(DELIVERY_QUESTION)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "working days", timeout=WAIT)

    followups = frame.get_by_role("group", name="Follow-up questions")
    # The drone question shares "delivery" with what was asked but the knowledge base can't answer it: not offered.
    expect(followups.get_by_role("button")).to_have_text([EXPRESS_QUESTION, RETURN_QUESTION], timeout=WAIT)
    expect(frame.locator("#ccw-followups .ccw-starters-title")).to_have_text("You might also ask…")

    followups.get_by_role("button", name=EXPRESS_QUESTION).click()
    expect(frame.locator("li.ccw-customer").last.locator(".ccw-bubble")).to_have_text(EXPRESS_QUESTION, timeout=WAIT)
    expect(frame.locator("li.ccw-assistant[data-message-id]")).to_have_count(2, timeout=WAIT)
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "next working day", timeout=WAIT)

    # Asked questions are not offered again; the chip is a real button, so the keyboard works too.
    again = frame.get_by_role("group", name="Follow-up questions")
    expect(again.get_by_role("button")).to_have_text([RETURN_QUESTION], timeout=WAIT)
    again.get_by_role("button", name=RETURN_QUESTION).focus()
    page.keyboard.press("Enter")
    expect(frame.locator("li.ccw-customer")).to_have_count(3, timeout=WAIT)
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "30 days", timeout=WAIT)
    conversation = wait_for(lambda: in_workspace(shop["ws"].workspace, lambda: Conversation.objects.filter(
        messages__content=RETURN_QUESTION).first()), what="the conversation stored")
    asked = in_workspace(shop["ws"].workspace, lambda: list(
        conversation.messages.filter(role="customer").order_by("id").values_list("content", flat=True)))
    assert asked == [DELIVERY_QUESTION, EXPRESS_QUESTION, RETURN_QUESTION]
