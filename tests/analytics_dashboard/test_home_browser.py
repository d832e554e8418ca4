"""The dashboard home of a new workspace in Debian's Chromium (issue #22): the set-up checklist is there, and it
ticks as the steps are done — knowledge ingested by the real worker, a question asked in Try it, a widget created,
the widget opened on the business's own site (another origin, as in tests/embeds), a teammate invited — and once
the widget is live the last seven days show at a glance."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.config.test_websocket import session_cookie
from tests.embeds.conftest import (  # noqa: F401  (fixtures)
    RETURNS,
    embed_make,
    host_page_html,
    host_site,
    knowledge_add,
    widget_server,
    workspace_on_plan,
)
from tests.embeds.test_widget_browser import open_chat, snippet_for

pytestmark = pytest.mark.browser

WAIT = 90_000


def _step(page: Page, key: str):
    return page.locator(f'[data-testid="checklist"] li[data-step="{key}"]')


def _expect_done(page: Page, done: set[str], steps=("knowledge", "tried", "widget", "seen", "team")) -> None:
    for key in steps:
        expect(_step(page, key)).to_have_attribute("data-done", "true" if key in done else "false")
    expect(page.get_by_test_id("checklist-progress")).to_have_text(f"{len(done)} of {len(steps)} done")


def test_a_new_workspace_home_shows_the_checklist_and_it_ticks_as_the_steps_are_done(
        page: Page, django_db_blocker, widget_server, host_site, celery_worker):  # noqa: F811
    from accounts.services import invitation_create

    with django_db_blocker.unblock():
        ws = workspace_on_plan("Home Start", plan="pro")
        cookie = session_cookie(ws.owner)
    host = ws.host
    name, value = cookie.split("=", 1)
    page.context.add_cookies([{"name": name, "value": value, "domain": host, "path": "/"}])
    home = widget_server.url(host, "/")

    page.goto(home)
    expect(page.get_by_role("heading", name="Get your assistant live")).to_be_visible()
    _expect_done(page, set())
    expect(page.get_by_test_id("glance")).to_have_count(0)

    # 1. Knowledge, ingested by the worker.
    with django_db_blocker.unblock():
        knowledge_add(ws.workspace, [("Returns and refunds", RETURNS)])
    page.reload()
    _expect_done(page, {"knowledge"})
    expect(_step(page, "knowledge")).to_contain_text("1 document indexed")

    # 2. A question, asked in Try it from the checklist's own link.
    _step(page, "tried").get_by_role("link", name="Try it").click()
    page.get_by_role("button", name="Start a conversation").click()
    expect(page.locator("[data-chat-state]")).to_have_text("Live", timeout=WAIT)
    page.get_by_label("Your message").fill("How many days do I have to return a product?")
    page.get_by_label("Your message").press("Enter")
    answer = page.locator("li.msg-assistant[data-message-id]").last
    expect(answer.locator(".msg-meta")).to_be_visible(timeout=WAIT)
    expect(answer.locator("[data-field=text]")).to_contain_text("30 days")
    page.goto(home)
    _expect_done(page, {"knowledge", "tried"})

    # 3. A widget, allowed on the shop's site.
    with django_db_blocker.unblock():
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
    page.reload()
    _expect_done(page, {"knowledge", "tried", "widget"})
    expect(_step(page, "seen").get_by_role("link", name="Get the snippet")).to_be_visible()

    # 4. The widget opens on the shop's own page (another origin).
    shop = page.context.new_page()
    shop.goto(host_site.page(f"home-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed))))
    open_chat(shop)
    shop.close()
    page.reload()
    _expect_done(page, {"knowledge", "tried", "widget", "seen"})
    glance = page.get_by_test_id("glance")
    expect(glance).to_be_visible()
    expect(glance.locator('[data-figure="questions"] dd')).to_have_text("1")  # the Try it question
    expect(glance.locator('[data-figure="answered"] dd')).to_have_text(re.compile(r"^\d+%$"))
    expect(glance.locator('[data-figure="waiting"] a')).to_have_attribute("href", "/conversations/inbox/")

    # 5. A teammate invited: every step done, the checklist makes way for the figures.
    with django_db_blocker.unblock():
        invitation_create(workspace=ws.workspace, email="mate@example.test", role="agent", invited_by=ws.owner,
                          actor_role="owner")
    page.reload()
    expect(page.get_by_test_id("checklist")).to_have_count(0)
    expect(page.get_by_test_id("glance")).to_be_visible()
    page.get_by_test_id("glance").locator('[data-figure="questions"] a').click()
    expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()
