"""Starter questions and the lead form in Debian's Chromium (issue #18 acceptance): the widget on a business's
website served from another origin (http://shop.localhost:<port>/, the workspace on http://<slug>.localhost:<port>/).

Chips show before the first message and are buttons: clicking one asks it and the answer streams; after a decline
the widget offers them again ("You could ask…"). The lead form comes before the chat: it refuses empty required
fields and a bad email in the page, shows the server's refusal of a bad phone number on that field, then starts the
chat; the lead is stored on the conversation and an agent sees it in the inbox. A form shown at handoff asks before
a person is called.
"""
from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from chat.models import Conversation, Lead
from tests.chat.test_protocol import knowledge_seed
from tests.config.test_websocket import session_cookie
from tests.embeds.conftest import RETURNS, SHIPPING, embed_make, host_page_html, in_workspace, workspace_on_plan
from tests.embeds.test_widget_browser import WAIT, chat_frame, launcher, snippet_for, wait_for
from tests.factories import member

pytestmark = pytest.mark.browser

RETURN_QUESTION = "How many days do I have to return a product?"
DELIVERY_QUESTION = "How long does standard delivery take?"
OUT_OF_SCOPE = "What is the capital of France?"


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server, host_site) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Chips and Leads", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS), ("Shipping times", SHIPPING))
        origin = host_site.origin("shop.localhost")
        chips = embed_make(ws.workspace, [origin], name="Chips",
                           starter_questions=[RETURN_QUESTION, DELIVERY_QUESTION])
        leads = embed_make(ws.workspace, [origin], name="Leads", lead_form={
            "when": "before_chat", "custom_label": "Order number",
            "fields": {"name": "required", "email": "required", "phone": "optional", "custom": "optional"}})
        agent = member(ws.workspace, "agent")
        cookie = session_cookie(agent)
        host = ws.host
    return {
        "ws": ws, "host": host, "cookie": cookie, "leads": leads,
        "chips_url": host_site.page(f"chips-{chips.pk}.html", host_page_html(snippet_for(widget_server, host, chips))),
        "leads_url": host_site.page(f"leads-{leads.pk}.html", host_page_html(snippet_for(widget_server, host, leads))),
    }


def test_chips_are_shown_asked_on_click_and_offered_again_after_a_decline(page: Page, shop):
    page.goto(shop["chips_url"])
    expect(launcher(page)).to_be_visible(timeout=WAIT)
    launcher(page).click()
    frame = chat_frame(page)
    chips = frame.get_by_role("group", name="Suggested questions")
    expect(chips.get_by_role("button")).to_have_text([RETURN_QUESTION, DELIVERY_QUESTION], timeout=WAIT)
    expect(frame.locator("#ccw-starters .ccw-starters-title")).to_have_count(0)  # no "you could ask" yet

    chips.get_by_role("button", name=DELIVERY_QUESTION).click()
    expect(frame.locator("li.ccw-customer").first.locator(".ccw-bubble")).to_have_text(DELIVERY_QUESTION, timeout=WAIT)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text("working days", timeout=WAIT)
    expect(frame.locator("#ccw-starters")).to_have_count(0)  # the chips step aside once the chat has begun

    box = frame.get_by_label("Your message")
    box.fill(OUT_OF_SCOPE)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]")).to_have_count(2, timeout=WAIT)
    again = frame.locator("#ccw-starters")
    expect(again.locator(".ccw-starters-title")).to_have_text("You could ask…", timeout=WAIT)
    # Keyboard too: the chip is a real button.
    again.get_by_role("button", name=RETURN_QUESTION).focus()
    page.keyboard.press("Enter")
    expect(frame.locator("li.ccw-customer")).to_have_count(3, timeout=WAIT)
    expect(frame.locator("li.ccw-customer").last.locator(".ccw-bubble")).to_have_text(RETURN_QUESTION)
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "30 days", timeout=WAIT)
    conversation = wait_for(lambda: in_workspace(shop["ws"].workspace, lambda: Conversation.objects.filter(
        messages__content=RETURN_QUESTION).first()), what="the conversation stored")
    asked = in_workspace(shop["ws"].workspace, lambda: list(
        conversation.messages.filter(role="customer").order_by("id").values_list("content", flat=True)))
    assert asked == [DELIVERY_QUESTION, OUT_OF_SCOPE, RETURN_QUESTION]


def test_the_lead_form_validates_starts_the_chat_and_the_lead_reaches_the_inbox(browser: Browser, shop,
                                                                                widget_server):
    customer = browser.new_context().new_page()
    customer.goto(shop["leads_url"])
    expect(launcher(customer)).to_be_visible(timeout=WAIT)
    launcher(customer).click()
    frame = chat_frame(customer)
    form = frame.locator("form#ccw-lead")
    expect(form).to_be_visible(timeout=WAIT)
    expect(frame.get_by_label("Your message")).to_be_disabled()
    name, email = form.get_by_label("Name"), form.get_by_label("Email")
    phone, order = form.get_by_label("Phone (optional)"), form.get_by_label("Order number (optional)")

    # Required fields, in the page.
    form.get_by_role("button", name="Start the chat").click()
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(form.locator('[data-error-for="name"]')).to_have_text("Please fill this in.")
    expect(form.locator('[data-error-for="email"]')).to_have_text("Please fill this in.")
    expect(name).to_be_focused()
    # A bad email, in the page.
    name.fill("Ada Lovelace")
    email.fill("ada@")
    form.get_by_role("button", name="Start the chat").click()
    expect(form.locator('[data-error-for="email"]')).to_have_text("Please enter a valid email address.")
    expect(form.locator('[data-error-for="name"]')).to_be_hidden()
    # A bad phone number is the server's call: its refusal lands on the field, and nothing is created.
    email.fill("ada@example.test")
    phone.fill("call me")
    form.get_by_role("button", name="Start the chat").click()
    expect(form.locator('[data-error-for="phone"]')).to_contain_text("Enter a phone number", timeout=WAIT)
    expect(phone).to_be_focused()
    assert in_workspace(shop["ws"].workspace, lambda: Conversation.objects.filter(
        embed_id=shop["leads"].pk).count()) == 0

    phone.fill("+44 20 7946 0958")
    order.fill("A-1042")
    form.get_by_role("button", name="Start the chat").click()
    expect(form).to_have_count(0, timeout=WAIT)
    expect(frame.locator("li.ccw-lead-saved")).to_have_text("Thanks — we have your details.")
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    box.fill(RETURN_QUESTION)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "30 days", timeout=WAIT)
    lead = in_workspace(shop["ws"].workspace, lambda: Lead.objects.select_related("conversation").get(
        embed_id=shop["leads"].pk))
    assert (lead.name, lead.email, lead.phone, lead.custom_label, lead.custom_value) == (
        "Ada Lovelace", "ada@example.test", "+44 20 7946 0958", "Order number", "A-1042")

    # --- an agent sees the lead in the inbox ---------------------------------------------------------------------
    agent_context = browser.new_context()
    cookie_name, value = shop["cookie"].split("=", 1)
    agent_context.add_cookies([{"name": cookie_name, "value": value, "domain": shop["host"], "path": "/"}])
    agent = agent_context.new_page()
    agent.goto(widget_server.url(shop["host"], "/conversations/inbox/"))
    expect(agent.locator("[data-inbox-state]")).to_have_text("Live", timeout=WAIT)
    agent.locator('[data-tab="open"]').click()
    item = agent.locator("[data-inbox-list] [data-conversation-id]").filter(has_text=RETURN_QUESTION)
    expect(item).to_be_visible(timeout=WAIT)
    item.click()
    details = agent.locator("[data-pane] [data-pane-lead]")
    expect(details).to_be_visible(timeout=WAIT)
    expect(details.locator('[data-lead-field="name"]')).to_have_text("Ada Lovelace")
    expect(details.locator('[data-lead-field="email"]')).to_have_text("ada@example.test")
    expect(details.locator('[data-lead-field="phone"]')).to_have_text("+44 20 7946 0958")
    expect(details.locator('[data-lead-field="order number"]')).to_have_text("A-1042")
    expect(agent.locator("[data-pane] [data-pane-visitor]")).to_contain_text("ada@example.test")
    agent_context.close()  # the agent goes offline (the handoff test below wants nobody there)


def test_the_handoff_form_asks_before_a_person_is_called(browser: Browser, shop, widget_server, host_site,
                                                         django_db_blocker):
    """`when: handoff`: the chat starts at once; "Talk to a person" asks for the email first, then calls a person.
    Nobody is online, and the widget doesn't ask for the address a second time."""
    with django_db_blocker.unblock():
        embed = embed_make(shop["ws"].workspace, [host_site.origin("shop.localhost")], name="Handoff form",
                           lead_form={"when": "handoff", "fields": {"email": "required"}})
    from chat.events import sync_client
    from chat.inbox import presence_key

    sync_client().delete(presence_key(shop["ws"].workspace.schema_name))  # nobody online
    url = host_site.page(f"handoff-lead-{embed.pk}.html",
                         host_page_html(snippet_for(widget_server, shop["host"], embed)))
    customer = browser.new_context().new_page()
    customer.goto(url)
    expect(launcher(customer)).to_be_visible(timeout=WAIT)
    launcher(customer).click()
    frame = chat_frame(customer)
    box = frame.get_by_label("Your message")
    expect(box).to_be_enabled(timeout=WAIT)
    expect(frame.locator("form#ccw-lead")).to_have_count(0)
    box.fill(RETURN_QUESTION)
    box.press("Enter")
    expect(frame.locator("li.ccw-assistant[data-message-id]").last.locator(".ccw-bubble")).to_contain_text(
        "30 days", timeout=WAIT)
    frame.get_by_role("button", name="Talk to a person").click()
    form = frame.locator("form#ccw-lead")
    expect(form).to_contain_text("So our team can get back to you", timeout=WAIT)
    form.get_by_role("button", name="Send").click()
    expect(form.locator('[data-error-for="email"]')).to_have_text("Please fill this in.")
    form.get_by_label("Email").fill("grace@example.test")
    form.get_by_role("button", name="Send").click()
    expect(form).to_have_count(0, timeout=WAIT)
    expect(frame.locator("#ccw-notice")).to_contain_text("Nobody from our team is available", timeout=WAIT)
    expect(frame.locator("#ccw-contact")).to_have_count(0)
    conversation = wait_for(lambda: in_workspace(shop["ws"].workspace, lambda: Conversation.objects.filter(
        embed_id=embed.pk, status="waiting").first()), what="the conversation waiting for a person")
    lead = in_workspace(shop["ws"].workspace, lambda: Lead.objects.get(conversation=conversation))
    assert (lead.email, lead.stage, conversation.visitor_email) == ("grace@example.test", "handoff",
                                                                     "grace@example.test")
