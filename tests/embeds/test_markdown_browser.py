"""One Markdown renderer for every place an answer is shown (issue #22), in Debian's Chromium: the same answer
(scripted by a fake LLM vendor, so it is the same text every time) asked in the widget on a business's site and in
the dashboard's Try it, then read in the transcript and the inbox, becomes the same DOM everywhere — the answer and
its source snippets — and the markup in it is never executed (`<img onerror>` and `<script>` are text,
`javascript:` links stay their label). Every page also fails on a Content-Security-Policy violation
(tests/conftest.py), which an inline handler that got into the DOM would cause."""
from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from chat.models import AssistantSettings, Conversation
from tests.config.test_websocket import session_cookie
from tests.embeds.conftest import embed_make, host_page_html, in_workspace, knowledge_add, workspace_on_plan
from tests.embeds.test_widget_browser import Dialogs, ask, open_chat, snippet_for
from tests.chat.fakes import FakeVendor, Reply

pytestmark = pytest.mark.browser

WAIT = 90_000
QUESTION = "How many days do I have to return a product?"
ANSWER = (
    "You can return it within **30 days** of delivery [1].\n\n"
    "## What to do\n"
    "1. Print the `label`\n"
    "2. Visit [our page](https://shop.example/returns)\n\n"
    "- Not a link: [click](javascript:alert('link'))\n"
    "- *Refunds* take five days\n\n"
    "<img src=x onerror=\"alert('answer')\"> <script>alert('answer2')</script> <a href=\"javascript:alert(1)\">x</a>"
)
RETURNS_MD = """# Returns and refunds

You can return any product within **30 days** of delivery for a full refund. Print the prepaid return label from
your account page <img src=x onerror="alert('snippet')"> and drop the parcel at any post office.
"""
# Markdown and hostile strings rendered by the module itself in both the widget frame and a dashboard page.
CORPUS = [
    ANSWER, RETURNS_MD, "plain", "", "**bold** *em* `code` [a](https://x.example/) [b](mailto:a@b.example) [1] [2]",
    "```\n<script>alert(1)</script>\n```", "[x](javascript:alert(1)) [y](//evil.example/) [z](/relative)",
    "<svg onload=alert(1)>", "# heading <b>bold</b>\n- one\n- two\n\n3) three", "line one\nline two",
]
RENDER_ALL = """(texts) => texts.map((text) => {
  const box = document.createElement("div");
  document.body.appendChild(box);
  window.CCGMarkdown.render(box, text, {citations: [{title: "Returns <b>and</b> refunds"}], sourcesLabel: "Sources"});
  const html = box.innerHTML;
  box.remove();
  return html;
})"""


@pytest.fixture(scope="module")
def vendor():
    fake = FakeVendor("openai", [Reply(text=ANSWER, pieces=None, delay=0.005)])
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server, host_site, celery_worker, vendor) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Markdown Shop", plan="pro")
        knowledge_add(ws.workspace, [("Returns and refunds", RETURNS_MD)])
        in_workspace(ws.workspace, lambda: AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [{
            "kind": "openai", "base_url": vendor.base_url, "model": "fake-llm", "api_key": "test-key",
            "first_token_timeout": 30, "inter_token_timeout": 20,
        }]}))
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
        cookie = session_cookie(ws.owner)
        host = ws.host
    url = host_site.page(f"markdown-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"ws": ws, "host": host, "url": url, "cookie": cookie}


def _dashboard(browser: Any, shop: dict[str, Any]) -> Any:
    context = browser.new_context()
    name, value = shop["cookie"].split("=", 1)
    context.add_cookies([{"name": name, "value": value, "domain": shop["host"], "path": "/"}])
    return context


def _inner(locator: Any) -> str:
    return locator.evaluate("node => node.innerHTML")


def _snippets(locator: Any) -> list[str]:
    return locator.evaluate_all("nodes => nodes.map(node => node.innerHTML)")


def _assert_safe(html: str) -> None:
    """Rendered HTML holds no element of the text's markup and no javascript: link (its text may mention both)."""
    lowered = html.lower()
    assert "<img" not in lowered and "<script" not in lowered and "<svg" not in lowered and "<b>" not in lowered, html
    assert "<a href=\"javascript" not in lowered and "<a href='javascript" not in lowered, html
    assert "<a " not in lowered.replace('<a href="https://', "").replace('<a href="mailto:', ""), html


def test_the_same_answer_renders_identically_in_the_widget_try_it_transcript_and_inbox(
        page: Page, browser, shop, widget_server):
    # --- the widget, on the shop's site --------------------------------------------------------------------------
    dialogs = Dialogs(page)
    page.goto(shop["url"])
    frame = open_chat(page)
    ask(frame, QUESTION)
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble strong").first).to_have_text("30 days", timeout=WAIT)
    expect(answer.locator(".ccw-snippet").first).to_be_visible(timeout=WAIT)
    widget_html = _inner(answer.locator(".ccw-bubble"))
    widget_snippets = _snippets(answer.locator(".ccw-snippet"))
    # What the renderer made of it: the Markdown, and the markup as text.
    bubble = answer.locator(".ccw-bubble")
    expect(bubble.locator("ol > li")).to_have_count(2)
    expect(bubble.locator("ul > li")).to_have_count(2)
    expect(bubble.locator("code")).to_have_text("label")
    expect(bubble.locator("sup.md-cite")).to_have_text("[1]")
    expect(bubble.locator("a")).to_have_count(1)
    assert bubble.locator("a").get_attribute("href") == "https://shop.example/returns"
    expect(bubble).to_contain_text("Not a link: click")
    expect(bubble).to_contain_text("<img src=x onerror=\"alert('answer')\"> <script>alert('answer2')</script>")
    assert bubble.locator("img, script, svg, [onerror]").count() == 0
    # The snippet's Markdown is rendered (the issue: "**30 days**" showed its asterisks), its markup is text.
    assert widget_snippets and any("<strong>30 days</strong>" in s for s in widget_snippets), widget_snippets
    assert not any("**" in s or "<img" in s for s in widget_snippets), widget_snippets
    _assert_safe(widget_html)

    # The module itself, in the frame and in a dashboard page: the same HTML for every text of the corpus.
    widget_frame = next(f for f in page.frames if "/widget/v1/frame/" in f.url)
    in_widget = widget_frame.evaluate(RENDER_ALL, CORPUS)

    conversation = in_workspace(shop["ws"].workspace,
                                lambda: Conversation.objects.filter(channel="widget").latest("created_at"))

    # --- Try it, streamed and then reloaded (server-rendered) ------------------------------------------------------
    context = _dashboard(browser, shop)
    staff = context.new_page()
    staff_dialogs = Dialogs(staff)
    staff.goto(widget_server.url(shop["host"], "/conversations/try/"))
    staff.get_by_role("button", name="Start a conversation").click()
    expect(staff.locator("[data-chat-state]")).to_have_text("Live", timeout=WAIT)
    staff.get_by_label("Your message").fill(QUESTION)
    staff.get_by_label("Your message").press("Enter")
    streamed = staff.locator("li.msg-assistant[data-message-id]").last
    expect(streamed.locator(".msg-meta")).to_be_visible(timeout=WAIT)  # completed
    assert _inner(streamed.locator("[data-field=text]")) == widget_html
    assert _snippets(streamed.locator(".msg-snippet")) == widget_snippets
    assert staff.evaluate(RENDER_ALL, CORPUS) == in_widget
    for html in in_widget:
        _assert_safe(html)

    staff.reload()
    expect(staff.locator("[data-chat-state]")).to_have_text("Live", timeout=WAIT)
    served = staff.locator("li.msg-assistant[data-message-id]").last
    expect(served.locator('[data-field=text][data-rendered="markdown"]')).to_have_count(1)
    assert _inner(served.locator("[data-field=text]")) == widget_html
    assert _snippets(served.locator(".msg-snippet")) == widget_snippets

    # --- the widget conversation's transcript ----------------------------------------------------------------------
    staff.goto(widget_server.url(shop["host"], f"/conversations/{conversation.public_id}/"))
    transcript = staff.locator("li.msg-assistant[data-message-id]").last
    expect(transcript.locator('[data-rendered="markdown"]').first).to_be_attached(timeout=WAIT)
    assert _inner(transcript.locator("[data-field=text]")) == widget_html
    assert _snippets(transcript.locator(".msg-snippet")) == widget_snippets
    # The customer's question stays text.
    expect(staff.locator("li.msg-customer [data-field=text]").first).to_have_text(QUESTION)

    # --- the inbox ---------------------------------------------------------------------------------------------------
    staff.goto(widget_server.url(shop["host"], "/conversations/inbox/"))
    expect(staff.locator("[data-inbox-state]")).to_have_text("Live", timeout=WAIT)
    staff.locator('[data-tab="open"]').click()
    staff.locator(f'[data-conversation-id="{conversation.public_id}"]').click()
    pane_answer = staff.locator("[data-pane-log] li.msg-assistant").last
    expect(pane_answer.locator("strong").first).to_have_text("30 days", timeout=WAIT)
    assert _inner(pane_answer.locator("[data-field=text]")) == widget_html

    assert staff.locator("img[src=x], script:not([src]):not([type])").count() == 0
    assert dialogs.seen == [] and staff_dialogs.seen == []
    context.close()
