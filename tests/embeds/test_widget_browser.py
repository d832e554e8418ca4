"""The widget in Debian's Chromium (Playwright), on a business's website served from another origin: a plain
http.server on 127.0.0.1 reached as http://shop.localhost:<port>/ while the workspace is http://<slug>.localhost:<port>/.

The knowledge is typed in through documents.services and ingested by the real Celery worker; answers come from the
built-in answerer, or — where an answer must stream slowly enough to cut the network in the middle of it, or must
carry hostile markup — from a fake LLM vendor (a real HTTP server on loopback, tests/chat/fakes.py).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from chat.models import AssistantSettings, Conversation, Message
from embeds import selectors, services
from embeds.security import identity_hash
from tests.chat.fakes import FakeVendor, Reply
from tests.embeds.conftest import (
    RETURNS,
    SHIPPING,
    XSS_TITLE,
    embed_make,
    host_page_html,
    in_workspace,
    knowledge_add,
    workspace_on_plan,
)
from tests.live import LiveServer

pytestmark = pytest.mark.browser

WAIT = 90_000  # ms: the machine is shared and busy
QUESTION = "How many days do I have to return a product?"


def snippet_for(server: LiveServer, host: str, embed: Any) -> str:
    return selectors.embed_snippet(embed=embed, base_url=server.url(host, ""))


class Dialogs:
    """Every JavaScript dialog (alert, confirm, prompt) of the page and its frames; an XSS payload that runs shows
    up here."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("dialog", self._on)

    def _on(self, dialog: Any) -> None:
        self.seen.append(dialog.message)
        dialog.dismiss()


class SocketLog:
    """The frames the widget's WebSockets receive, as the browser saw them."""

    def __init__(self, page: Page) -> None:
        self.sockets = 0
        self.events: list[dict[str, Any]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: Any) -> None:
        if "/widget/v1/ws/" not in ws.url:
            return
        self.sockets += 1
        ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: Any) -> None:
        try:
            self.events.append(json.loads(payload))
        except (TypeError, ValueError):
            pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


def launcher(page: Page, name: str = "Open the chat"):
    return page.get_by_role("button", name=name)


def chat_frame(page: Page):
    return page.frame_locator("iframe#ccw-frame")


def open_chat(page: Page, name: str = "Open the chat"):
    expect(launcher(page, name)).to_be_visible(timeout=WAIT)
    launcher(page, name).click()
    frame = chat_frame(page)
    expect(frame.get_by_label(re.compile("Your message|Ihre Nachricht"))).to_be_enabled(timeout=WAIT)
    return frame


def ask(frame: Any, text: str) -> None:
    box = frame.get_by_label(re.compile("Your message|Ihre Nachricht"))
    box.fill(text)
    box.press("Enter")


def wait_for(predicate, timeout: float = 90, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def support(django_db_blocker, widget_server, host_site, celery_worker) -> dict[str, Any]:
    """A workspace answered by the built-in answerer, with a widget allowed on http://shop.localhost:<port>."""
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Widget Shop", plan="pro")
        knowledge_add(ws.workspace, [("Returns and refunds", RETURNS), (XSS_TITLE, SHIPPING)])
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")], theme={
            "greeting": "Hello! <img src=x onerror=\"alert('greeting')\"> Ask us.",
            "title": "<b>Shop help</b>", "placeholder": "\"><script>alert('placeholder')</script>",
            "color_primary": "#0f766e",
        })
        host = ws.host
    page_url = host_site.page(f"shop-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"ws": ws, "embed": embed, "host": host, "url": page_url}


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor("openai")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def streaming(django_db_blocker, widget_server, host_site, celery_worker, vendor) -> dict[str, Any]:
    """A workspace answered by an LLM vendor that streams slowly (scripted per test)."""
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Widget Stream", plan="pro")
        knowledge_add(ws.workspace, [("Returns and refunds", RETURNS)])
        in_workspace(ws.workspace, lambda: AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [{
            "kind": "openai", "base_url": vendor.base_url, "model": "fake-llm", "api_key": "test-key",
            "first_token_timeout": 30, "inter_token_timeout": 20,
        }]}))
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
        host = ws.host
    page_url = host_site.page(f"stream-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"ws": ws, "embed": embed, "host": host, "url": page_url}


# --- the happy path ----------------------------------------------------------------------------------------------
def test_ask_stream_sources_rate_reload(page: Page, support, widget_server, host_site):
    dialogs = Dialogs(page)
    sockets = SocketLog(page)
    page.goto(support["url"])
    # The host page hides every button and div and paints everything magenta: none of it reaches the widget.
    button = launcher(page)
    expect(button).to_be_visible(timeout=WAIT)
    assert button.evaluate("b => getComputedStyle(b).display") != "none"
    assert "Comic Sans" not in button.evaluate("b => getComputedStyle(b).fontFamily")
    frame = open_chat(page)
    iframe = page.locator("iframe#ccw-frame")
    box = iframe.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 300  # the page's `iframe {width: 1px}` didn't apply

    ask(frame, QUESTION)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text("30 days", timeout=WAIT)
    expect(answer.locator(".ccw-source-title").first).to_have_text("Returns and refunds", timeout=WAIT)
    customer = frame.locator("li.ccw-customer").last
    expect(customer).to_contain_text(QUESTION)

    # It streamed: token events arrived over the socket before the final message, and they add up to it.
    completed = wait_for(lambda: sockets.of_type("agent_completed"), what="agent_completed")[-1]
    tokens = [e for e in sockets.of_type("token") if e["reply_to"] == completed["reply_to"]]
    assert tokens and "".join(e["text"] for e in tokens) == completed["message"]["content"]
    assert "cost" not in completed["message"] and "provider" not in completed["message"]

    # Rate it.
    helpful = answer.get_by_role("button", name="Helpful", exact=True)
    helpful.click()
    expect(helpful).to_have_attribute("aria-pressed", "true", timeout=WAIT)
    message_id = int(answer.get_attribute("data-message-id"))
    wait_for(lambda: in_workspace(support["ws"].workspace, lambda: Message.objects.get(pk=message_id).feedback) == 1,
             what="the feedback stored")
    stored = in_workspace(support["ws"].workspace,
                          lambda: Conversation.objects.get(messages__pk=message_id))
    assert stored.channel == "widget" and stored.embed_id == support["embed"].pk
    assert stored.origin == host_site.origin("shop.localhost")

    # Come back later: the same conversation, with its answer and rating.
    page.reload()
    frame = open_chat(page)
    expect(frame.locator("li.ccw-customer").first).to_contain_text(QUESTION, timeout=WAIT)
    again = frame.locator(f'li.ccw-assistant[data-message-id="{message_id}"]')
    expect(again.locator(".ccw-bubble")).to_contain_text("30 days", timeout=WAIT)
    expect(again.get_by_role("button", name="Helpful", exact=True)).to_have_attribute("aria-pressed", "true")
    expect(frame.locator("li.ccw-customer")).to_have_count(1)
    assert dialogs.seen == []


def test_disallowed_origin_shows_nothing_and_is_refused(page: Page, support, widget_server, host_site):
    """The same snippet on http://evil.localhost:<port> (the same little server, another origin)."""
    dialogs = Dialogs(page)
    snippet = snippet_for(widget_server, support["host"], support["embed"])
    url = host_site.page("evil.html", host_page_html(snippet), host="evil.localhost")
    asked = []
    page.on("request", lambda request: asked.append(request.url) if "/widget/v1/" in request.url else None)
    with page.expect_console_message(lambda m: "not available on this page" in m.text, timeout=WAIT):
        page.goto(url)
    assert any("/widget/v1/config/" in u for u in asked) and not any("/widget/v1/frame/" in u for u in asked)
    refused = widget_server.request("GET", support["host"], f"/widget/v1/config/{support['embed'].public_key}/",
                                    headers={"Origin": host_site.origin("evil.localhost")})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    expect(page.locator("customercare-widget")).to_have_count(0)
    assert page.evaluate("typeof window.CustomerCare.open") == "function"  # the API exists, and does nothing
    page.evaluate("window.CustomerCare.open()")
    expect(page.locator("iframe")).to_have_count(0)

    # Framing the chat directly, claiming to be the shop: the browser refuses to show it (frame-ancestors).
    frame_url = widget_server.url(support["host"], f"/widget/v1/frame/{support['embed'].public_key}/"
                                                   f"?o={host_site.origin('shop.localhost')}")
    page.set_content(f'<iframe id="direct" src="{frame_url}" width="400" height="500"></iframe>')
    page.wait_for_timeout(1500)
    expect(page.frame_locator("#direct").locator("#ccw-input")).to_have_count(0)
    # (the control: the same iframe on the shop's own origin does render)
    page.goto(host_site.page("blank.html", "<!doctype html><title>blank</title>"))
    page.set_content(f'<iframe id="direct" src="{frame_url}" width="400" height="500"></iframe>')
    expect(page.frame_locator("#direct").locator("#ccw-input")).to_have_count(1, timeout=WAIT)
    # and claiming to be itself gets a refusal from the server
    refused = widget_server.request("GET", support["host"], f"/widget/v1/frame/{support['embed'].public_key}/"
                                                            f"?o={host_site.origin('evil.localhost')}")
    assert refused.status_code == 403
    assert dialogs.seen == []


def test_xss_payloads_never_run(page: Page, support):
    """Markup in the question, the document title (sources), the greeting, title and placeholder: shown as text."""
    dialogs = Dialogs(page)
    page.goto(support["url"])
    frame = open_chat(page)
    expect(frame.locator(".ccw-greeting")).to_have_text("Hello! <img src=x onerror=\"alert('greeting')\"> Ask us.")
    expect(frame.locator("h1")).to_have_text("<b>Shop help</b>")
    assert frame.locator("#ccw-input").get_attribute("placeholder") == "\"><script>alert('placeholder')</script>"
    payload = "<img src=x onerror=\"alert('question')\"><script>alert('q2')</script> How long does standard delivery take?"
    ask(frame, payload)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text("working days", timeout=WAIT)
    expect(frame.locator("li.ccw-customer").last.locator(".ccw-bubble")).to_have_text(payload)
    titles = answer.locator(".ccw-source-title")
    expect(titles.filter(has_text="onerror")).to_have_count(1, timeout=WAIT)
    expect(titles.filter(has_text="onerror")).to_have_text(XSS_TITLE)
    # Nothing became an element: no <img> or <b> anywhere in the chat, and only the frame's own script.
    assert frame.locator("img").count() == 0 and frame.locator("b").count() == 0
    assert frame.locator("script[src]").count() == 2 and frame.locator("script:not([src])").count() == 1  # config JSON; ours: markdown.js + frame.js
    assert dialogs.seen == []


def test_answer_markup_is_safe_markdown(page: Page, streaming, vendor):
    dialogs = Dialogs(page)
    vendor.script(Reply(text=(
        "**Returns** take *30 days* [1].\n\n- Print the `label`\n- Visit [our page](https://shop.example/returns)\n"
        "- Not a link: [click](javascript:alert('link'))\n\n<img src=x onerror=\"alert('answer')\"> "
        "<script>alert('answer2')</script> <a href=\"javascript:alert('a')\">x</a>"
    ), pieces=None, delay=0.01))
    page.goto(streaming["url"])
    frame = open_chat(page)
    ask(frame, QUESTION)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    bubble = answer.locator(".ccw-bubble")
    expect(bubble.locator("strong")).to_have_text("Returns", timeout=WAIT)
    expect(bubble.locator("em")).to_have_text("30 days")
    expect(bubble.locator("code")).to_have_text("label")
    expect(bubble.locator("li")).to_have_count(3)
    links = bubble.locator("a")
    expect(links).to_have_count(1)
    assert links.get_attribute("href") == "https://shop.example/returns"
    assert links.get_attribute("rel") == "noopener noreferrer nofollow" and links.get_attribute("target") == "_blank"
    expect(bubble).to_contain_text("Not a link: click")
    expect(bubble).to_contain_text("<img src=x onerror=\"alert('answer')\">")
    expect(bubble.locator("sup.md-cite")).to_have_text("[1]")
    assert bubble.locator("img, script, iframe, b, [onerror]").count() == 0
    assert dialogs.seen == []


def test_network_cut_mid_answer_completes_without_missing_or_doubled_text(page: Page, context: BrowserContext,
                                                                          streaming, vendor):
    words = [f"word{n:02d}" for n in range(60)]
    full = " ".join(words) + " [1]."
    vendor.script(Reply(text=full, delay=0.1))
    sockets = SocketLog(page)
    page.goto(streaming["url"])
    frame = open_chat(page)
    ask(frame, QUESTION)
    streaming_bubble = frame.locator("li.ccw-streaming .ccw-bubble")
    expect(streaming_bubble).to_contain_text("word05", timeout=WAIT)
    context.set_offline(True)
    expect(frame.locator("#ccw-notice")).to_contain_text("offline", timeout=WAIT)
    seen_while_online = len(sockets.of_type("token"))
    page.wait_for_timeout(2500)  # the answer goes on being written on the server meanwhile
    context.set_offline(False)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_have_text(" ".join(words) + " [1].", timeout=WAIT)
    # One answer, each word once, in order; and it really did reconnect and resume.
    text = answer.locator(".ccw-bubble").inner_text()
    assert [w for w in text.split() if w.startswith("word")] == words
    expect(frame.locator("li.ccw-assistant[data-message-id]")).to_have_count(1)
    expect(frame.locator("li.ccw-streaming")).to_have_count(0)
    assert sockets.sockets >= 2
    assert len(sockets.of_type("token")) > seen_while_online
    resumed_seqs = [e["seq"] for e in sockets.events if "seq" in e]
    assert len(resumed_seqs) == len(set(resumed_seqs)), "an event was delivered twice"
    expect(frame.locator("#ccw-notice")).to_be_hidden(timeout=WAIT)


# --- identity, language, keyboard, phone ---------------------------------------------------------------------
def test_verified_customer_finds_their_conversations_on_another_device(browser, support, widget_server, host_site):
    embed, secret = in_workspace(support["ws"].workspace, services.embed_identity_secret_rotate,
                                 embed=support["embed"])
    snippet = snippet_for(widget_server, support["host"], embed)

    signed_at = int(time.time())

    def page_for(user_id: str, user_hash: str) -> str:
        # What the business's page does after its backend computed user_hash = HMAC(secret, "<user_ts>:<user_id>").
        identify = (f"<script>window.CustomerCare = {{q: [['identify', {{user_id: {json.dumps(user_id)}, "
                    f"user_ts: {signed_at}, user_hash: {json.dumps(user_hash)}}}]]}};</script>")
        return host_site.page(f"account-{abs(hash((user_id, user_hash)))}.html", host_page_html(snippet, head=identify))

    alice_page = page_for("alice-42", identity_hash(secret, "alice-42", signed_at))
    laptop = browser.new_context()
    try:
        page = laptop.new_page()
        page.goto(alice_page)
        frame = open_chat(page)
        ask(frame, QUESTION)
        expect(frame.locator("li.ccw-assistant[data-message-id]").last).to_contain_text("30 days", timeout=WAIT)
    finally:
        laptop.close()
    stored = in_workspace(support["ws"].workspace,
                          lambda: Conversation.objects.filter(verified_user_id="alice-42").count())
    assert stored == 1

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.goto(alice_page)
        frame = open_chat(page)
        expect(frame.locator("li.ccw-customer").first).to_contain_text(QUESTION, timeout=WAIT)
        # On a phone the chat fills the screen.
        box = page.locator("iframe#ccw-frame").bounding_box()
        assert box and box["width"] >= 380 and box["height"] >= 800
    finally:
        phone.close()

    # Someone claiming to be Alice with a made-up hash is an anonymous visitor: nothing of hers.
    mallory = browser.new_context()
    try:
        page = mallory.new_page()
        page.goto(page_for("alice-42", "0" * 64))
        frame = open_chat(page)
        expect(frame.locator(".ccw-greeting")).to_be_visible()
        page.wait_for_timeout(1000)
        expect(frame.locator("li.ccw-customer")).to_have_count(0)
    finally:
        mallory.close()


def test_german_keyboard_and_screen_reader_basics(page: Page, django_db_blocker, widget_server, host_site):
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Widget DE", plan="pro")
        host = ws.host
    embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")], theme={"language": "de"})
    url = host_site.page(f"de-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    page.goto(url)
    button = launcher(page, "Chat öffnen")
    expect(button).to_be_visible(timeout=WAIT)
    expect(button).to_have_attribute("aria-expanded", "false")
    button.focus()
    page.keyboard.press("Enter")
    frame = chat_frame(page)
    expect(frame.get_by_label("Ihre Nachricht")).to_be_enabled(timeout=WAIT)
    expect(launcher(page, "Chat schließen")).to_have_attribute("aria-expanded", "true")
    assert page.locator("iframe#ccw-frame").get_attribute("title") == "Schreiben Sie uns"
    expect(frame.locator("html")).to_have_attribute("lang", "de")
    expect(frame.get_by_role("button", name="Senden")).to_be_visible()
    expect(frame.get_by_role("button", name="Mit einem Menschen sprechen")).to_be_visible()
    frame.get_by_label("Ihre Nachricht").focus()
    page.keyboard.press("Escape")
    expect(page.locator("iframe#ccw-frame")).to_be_hidden(timeout=WAIT)
    expect(launcher(page, "Chat öffnen")).to_be_focused()


def test_a_flood_gets_a_friendly_message(page: Page, django_db_blocker, limited_server, host_site):
    """Against the server with tight limits (two questions per IP per hour)."""
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Widget Limits", plan="pro")
        host = ws.host
    embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
    url = host_site.page(f"limits-{embed.pk}.html", host_page_html(snippet_for(limited_server, host, embed)))
    page.goto(url)
    frame = open_chat(page)
    for n in range(2):
        ask(frame, f"Question number {n}?")
        expect(frame.locator("li.ccw-assistant[data-message-id]")).to_have_count(n + 1, timeout=WAIT)
    ask(frame, "And one more?")
    expect(frame.locator("#ccw-notice")).to_contain_text("a little too fast", timeout=WAIT)
    expect(frame.locator("#ccw-notice")).to_contain_text(re.compile(r"wait \d+ s"))
