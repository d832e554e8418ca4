"""The acceptance test of the handoff (issue #6), in Debian's Chromium with two browser contexts: a customer in the
widget on a business's website (another origin, as tests/embeds does) and an agent in the dashboard's inbox.

The customer asks the bot, then asks for a person; the agent's inbox shows the conversation live (and the title
badge); the agent joins, the customer sees "<name> joined"; typing shows both ways; the agent replies; the agent
hands back and the bot answers the next question; the history (after a reload) shows all of it, in order.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, expect

from chat.models import Conversation, Message
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
from tests.factories import member

pytestmark = pytest.mark.browser

WAIT = 90_000  # ms: the machine is shared and busy
FIRST = "How many days do I have to return a product?"
SECOND = "How long does standard delivery take?"


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server, host_site) -> dict[str, Any]:  # noqa: F811
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Handoff Shop", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS), ("Shipping times", SHIPPING))
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
        agent = member(ws.workspace, "agent")
        agent.full_name = "Alice Agent"
        agent.save(update_fields=["full_name"])
        host = ws.host
        cookie = session_cookie(agent)
    page_url = host_site.page(f"handoff-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"ws": ws, "host": host, "url": page_url, "agent": agent, "cookie": cookie}


def test_customer_asks_for_a_person_agent_joins_replies_and_hands_back(browser: Browser, shop, widget_server):  # noqa: F811
    host = shop["host"]
    # --- the agent opens the inbox (and so counts as online) -----------------------------------------------------
    agent_context = browser.new_context()
    name, value = shop["cookie"].split("=", 1)
    agent_context.add_cookies([{"name": name, "value": value, "domain": host, "path": "/"}])
    assert name == settings.SESSION_COOKIE_NAME
    agent = agent_context.new_page()
    agent.goto(widget_server.url(host, "/conversations/inbox/"))
    expect(agent.locator("[data-inbox-state]")).to_have_text("Live", timeout=WAIT)
    base_title = agent.title()

    # --- the customer asks the bot, then for a person ------------------------------------------------------------
    customer_context = browser.new_context()
    customer = customer_context.new_page()
    customer.goto(shop["url"])
    expect(launcher(customer)).to_be_visible(timeout=WAIT)
    launcher(customer).click()
    frame = chat_frame(customer)
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    box.fill(FIRST)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "30 days", timeout=WAIT)
    frame.get_by_role("button", name="Talk to a person").click()
    # What happens next: someone is online, so "a person will join" (no email form).
    expect(frame.locator("#ccw-notice")).to_contain_text("asked a person from our team", timeout=WAIT)
    expect(frame.locator("#ccw-contact")).to_have_count(0)

    # --- the inbox shows it live, with the title badge -----------------------------------------------------------
    item = agent.locator("[data-inbox-list] [data-conversation-id]").filter(has_text=FIRST)
    expect(item).to_be_visible(timeout=WAIT)
    expect(item).to_contain_text("asked")
    expect(agent).to_have_title(re.compile(r"^\(1\) " + re.escape(base_title)), timeout=WAIT)
    expect(agent.locator('[data-count="waiting"]')).to_have_text("1")
    item.click()
    pane = agent.locator("[data-pane]")
    expect(pane.locator("[data-pane-log]")).to_contain_text(FIRST, timeout=WAIT)
    expect(pane.locator("[data-pane-log]")).to_contain_text("30 days")

    # --- the agent joins: the customer sees it ----------------------------------------------------------------------
    pane.get_by_role("button", name="Join").click()
    expect(frame.locator("li.ccw-system").last).to_contain_text("Alice Agent joined the conversation", timeout=WAIT)
    expect(pane.locator("[data-pane-status]")).to_have_text("Agent", timeout=WAIT)

    # --- typing, both ways, and the agent's reply ------------------------------------------------------------------
    reply = pane.get_by_label("Reply to the customer")
    expect(reply).to_be_visible(timeout=WAIT)
    reply.press_sequentially("Hi, I'm Alice. ", delay=30)
    expect(frame.locator("#ccw-typing")).to_have_text("Someone from our team is typing…", timeout=WAIT)
    reply.press_sequentially("Your return label is in your account.", delay=5)
    reply.press("Enter")
    agent_message = frame.locator("li.ccw-agent").last
    expect(agent_message).to_contain_text("Your return label is in your account.", timeout=WAIT)
    expect(agent_message.locator(".ccw-author")).to_have_text("Alice Agent")
    box.press_sequentially("Thanks", delay=30)
    expect(pane.locator("[data-pane-typing]")).to_have_text("The customer is typing…", timeout=WAIT)
    box.press_sequentially(", Alice!", delay=5)
    box.press("Enter")
    expect(pane.locator("[data-pane-log]")).to_contain_text("Thanks, Alice!", timeout=WAIT)

    # --- an internal note: the agent sees it, the customer never does ----------------------------------------------
    note = pane.get_by_label("Internal note")
    note.fill("Regular customer, approved by Carol")
    pane.get_by_role("button", name="Add note").click()
    expect(pane.locator("li.msg-note")).to_contain_text("approved by Carol", timeout=WAIT)

    # --- hand back: the bot answers the next question --------------------------------------------------------------
    pane.get_by_role("button", name="Hand back to bot").click()
    expect(frame.locator("li.ccw-system").last).to_contain_text("handed the conversation back", timeout=WAIT)
    expect(frame.get_by_role("button", name="Talk to a person")).to_be_visible(timeout=WAIT)
    box.fill(SECOND)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "two to four working days", timeout=WAIT)
    expect(pane.locator("[data-pane-log]")).to_contain_text("two to four working days", timeout=WAIT)
    assert "Carol" not in frame.locator("#ccw-log").inner_text()

    # --- the history, after a reload, shows all of it in order -----------------------------------------------------
    customer.reload()
    launcher(customer).click()
    frame = chat_frame(customer)
    expect(frame.locator("li.ccw-assistant").last).to_contain_text("two to four working days", timeout=WAIT)
    items = frame.locator("#ccw-log li.ccw-msg[data-message-id]")  # not the greeting
    roles = items.evaluate_all(
        "els => els.map(e => ['customer', 'assistant', 'agent', 'system'].find(r => e.classList.contains('ccw-' + r)))")
    assert roles == ["customer", "assistant", "system", "agent", "customer", "system", "customer", "assistant"], roles
    texts = items.all_inner_texts()
    assert FIRST in texts[0] and "30 days" in texts[1] and "Alice Agent joined" in texts[2]
    assert "return label" in texts[3] and "Thanks, Alice!" in texts[4] and "handed the conversation back" in texts[5]
    assert SECOND in texts[6] and "two to four working days" in texts[7]
    assert "Carol" not in " ".join(texts)

    # The stored conversation: one stream, every message with its seq in order, the handoff reason recorded.
    def stored() -> tuple[Any, list[tuple[str, int | None]]]:
        conversation = Conversation.objects.get(title__startswith=FIRST[:40])
        rows = list(Message.objects.filter(conversation=conversation).exclude(role="note")
                    .order_by("id").values_list("role", "seq"))
        return conversation, rows

    conversation, rows = in_workspace(shop["ws"].workspace, stored)
    assert conversation.handoff_reason == "asked" and conversation.status == "bot"
    seqs = [seq for _role, seq in rows]
    assert all(seqs) and seqs == sorted(seqs), rows
    agent_context.close()
    customer_context.close()


def test_nobody_online_the_customer_leaves_an_email(browser: Browser, shop):
    """No agent has the inbox open: the customer is told so and leaves an email address, stored on the
    conversation for the reply."""
    from chat.events import sync_client
    from chat.inbox import presence_key

    sync_client().delete(presence_key(shop["ws"].workspace.schema_name))  # nobody online
    context = browser.new_context()
    customer = context.new_page()
    customer.goto(shop["url"])
    expect(launcher(customer)).to_be_visible(timeout=WAIT)
    launcher(customer).click()
    frame = chat_frame(customer)
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    box.fill("I want to speak to a human")
    box.press("Enter")
    expect(frame.locator("#ccw-notice")).to_contain_text("Nobody from our team is available", timeout=WAIT)
    email = frame.locator("#ccw-contact").get_by_label("Your email (optional)")
    expect(email).to_be_visible(timeout=WAIT)
    email.fill("waiting.customer@example.test")
    frame.locator("#ccw-contact").get_by_role("button", name="Send").click()
    expect(frame.locator("#ccw-notice")).to_contain_text("we'll reply to waiting.customer@example.test", timeout=WAIT)
    stored = in_workspace(shop["ws"].workspace, lambda: Conversation.objects.filter(
        visitor_email="waiting.customer@example.test").values_list("status", "handoff_reason").first())
    assert stored == ("waiting", "keyword")
    context.close()
