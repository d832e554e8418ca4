"""Clickable sources in the widget (issue #18 item 6), in Debian's Chromium, with the widget on a foreign origin: a
source that came from a web page links to it — a new tab, `rel="noopener"`, reachable and announced for keyboard
and screen-reader users — while a typed-in source stays plain text.

The page is imported through the real URL import (documents.services.document_import_url) from a loopback site;
this process runs the pipeline (tests.factories.document_ingest_now) with private addresses allowed, and the job's
message goes to a queue of its own that no worker reads (the session's worker refuses loopback, as it should).
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.chat.fakes import FakeVendor, Reply
from tests.embeds.conftest import RETURNS, SHIPPING, embed_make, host_page_html, in_workspace, knowledge_add, \
    workspace_on_plan
from tests.embeds.test_widget_browser import WAIT, ask, open_chat, snippet_for
from tests.factories import document_ingest_now

pytestmark = pytest.mark.browser

ARTICLE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Returns and refunds</title></head>
<body><main><article><h1>Returns and refunds</h1>{paragraphs}</article></main></body></html>"""


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor("openai")
    yield fake
    fake.close()


def linked_workspace(django_db_blocker, widget_server, host_site, vendor: FakeVendor | None = None) -> dict[str, Any]:
    from django.conf import settings
    from django.test.utils import override_settings

    from chat.models import AssistantSettings
    from documents import services as document_services

    name = f"returns-{secrets.token_hex(4)}.html"
    paragraphs = "".join(f"<p>{block}</p>" for block in RETURNS.split("\n\n")[1:])
    host_site.page(name, ARTICLE.format(paragraphs=paragraphs))
    article_url = f"http://127.0.0.1:{host_site.port}/{name}"
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Linked Sources", plan="pro")
        knowledge_add(ws.workspace, [("Shipping times", SHIPPING)])  # typed in: no page to link to
        if vendor is not None:  # answered by a language model (scripted per test)
            in_workspace(ws.workspace, lambda: AssistantSettings.objects.update_or_create(id=1, defaults={
                "providers": [{"kind": "openai", "base_url": vendor.base_url, "model": "fake-llm",
                               "api_key": "test-key", "first_token_timeout": 30, "inter_token_timeout": 20}]}))
        with override_settings(URL_IMPORT_ALLOW_PRIVATE=True,
                               DOCUMENT_QUEUE=f"nobody_{secrets.token_hex(3)}"):
            assert settings.URL_IMPORT_ALLOW_PRIVATE

            def imported() -> str:
                document = document_services.document_import_url(url=article_url)
                return document_ingest_now(document)

            assert in_workspace(ws.workspace, imported) == "indexed"
        embed = embed_make(ws.workspace, [host_site.origin("shop.localhost")])
        host = ws.host
    page_url = host_site.page(f"linked-{embed.pk}.html", host_page_html(snippet_for(widget_server, host, embed)))
    return {"url": page_url, "article_url": article_url}


@pytest.fixture(scope="module")
def linked(django_db_blocker, widget_server, host_site, celery_worker) -> dict[str, Any]:
    return linked_workspace(django_db_blocker, widget_server, host_site)


@pytest.fixture(scope="module")
def linked_llm(django_db_blocker, widget_server, host_site, celery_worker, vendor) -> dict[str, Any]:
    return linked_workspace(django_db_blocker, widget_server, host_site, vendor)


def test_a_source_from_a_web_page_opens_it_in_a_new_tab(page: Page, linked):
    page.goto(linked["url"])
    frame = open_chat(page)
    ask(frame, "How many days do I have to return a product?")
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text("30 days", timeout=WAIT)
    link = answer.get_by_role("link", name=re.compile(r"Returns and refunds.*opens in a new tab"))
    expect(link).to_be_visible(timeout=WAIT)
    assert link.get_attribute("href") == linked["article_url"]
    assert link.get_attribute("target") == "_blank"
    assert "noopener" in (link.get_attribute("rel") or "").split()

    # Keyboard: the link takes focus and Enter opens the page in a new tab; the widget's page stays where it was.
    link.focus()
    expect(link).to_be_focused()
    with page.context.expect_page(timeout=WAIT) as opened:
        link.press("Enter")
    article = opened.value
    article.wait_for_load_state()
    assert article.url == linked["article_url"]
    expect(article.get_by_role("heading", name="Returns and refunds")).to_be_visible(timeout=WAIT)
    assert article.evaluate("() => window.opener") is None, "the opened page can't reach back (noopener)"
    assert page.url == linked["url"]
    article.close()

    # A mouse click does the same.
    with page.context.expect_page(timeout=WAIT) as clicked:
        link.click()
    assert clicked.value.url == linked["article_url"]
    clicked.value.close()


def test_quoted_sources_come_first_numbered_as_the_answer_cites_them(page: Page, linked_llm, vendor):
    # The model cites only its second source (the typed-in shipping text); the returns page it was also given
    # supports the answer: listed after it, under "Related", still a link to its page.
    vendor.script(Reply(text="Orders ship the same working day [2].", pieces=None, delay=0.01))
    page.goto(linked_llm["url"])
    frame = open_chat(page)
    ask(frame, "How many days do I have to return a product?")
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator(".ccw-bubble")).to_contain_text("Orders ship the same working day", timeout=WAIT)
    quoted = answer.locator(".ccw-sources > ol > li.ccw-source-quoted")
    expect(quoted).to_have_count(1, timeout=WAIT)
    expect(quoted.locator(".ccw-source-title")).to_have_text("Shipping times")
    expect(answer.locator(".ccw-bubble sup.md-cite")).to_have_text("[1]")  # renumbered: [1] is the first source
    assert answer.locator(".ccw-bubble sup.md-cite").get_attribute("title") == "Shipping times"
    expect(answer.locator(".ccw-sources-related-title")).to_have_text("Related")
    related = answer.locator(".ccw-sources > ul.ccw-sources-related > li.ccw-source-related")
    expect(related).to_have_count(1)
    link = related.get_by_role("link", name=re.compile(r"Returns and refunds.*opens in a new tab"))
    assert link.get_attribute("href") == linked_llm["article_url"]
    assert "noopener" in (link.get_attribute("rel") or "").split() and link.get_attribute("target") == "_blank"


def test_a_typed_in_source_stays_plain_text(page: Page, linked):
    page.goto(linked["url"])
    frame = open_chat(page)
    ask(frame, "How long does standard delivery take?")
    answer = frame.locator("li.ccw-assistant[data-message-id]").last
    expect(answer.locator("span.ccw-source-title", has_text="Shipping times")).to_be_visible(timeout=WAIT)
    assert answer.locator("a.ccw-source-link", has_text="Shipping").count() == 0
