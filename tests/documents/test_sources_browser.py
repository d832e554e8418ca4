"""Adding a website in Chromium and watching its crawl progress live (a real site on loopback, a real worker, a live
server allowed to reach loopback)."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.documents.test_pipeline import dedicated_worker, session_cookie, word_marker
from tests.documents.website import Website, page
from tests.factories import WorkspaceWithOwner, workspace_with_owner
from tests.live import LiveServer, start_live_server

HUNG_AFTER_MS = 120_000  # liveness bound for what the page waits for


@pytest.fixture(scope="module")
def crawl_env() -> dict[str, str]:
    queue = f"crawl_browser_{secrets.token_hex(3)}"
    return {"URL_IMPORT_ALLOWED_NETWORKS": "127.0.0.1/32", "SOURCE_DELAY": "0", "SOURCE_QUEUE": queue,
            "SOURCE_SLICE_SECONDS": "5"}


@pytest.fixture(scope="module")
def crawl_server(django_db_setup, django_db_blocker, crawl_env) -> Iterator[LiveServer]:
    """A live server that may add loopback websites and sends their runs to this module's worker."""
    from django.db import connection

    from tests.conftest import LOG_DIR

    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, extra_env=crawl_env, name="asgi-crawl")
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def crawl_worker(django_db_blocker, crawl_env):
    with django_db_blocker.unblock(), dedicated_worker("crawl-browser", crawl_env["SOURCE_QUEUE"], **crawl_env) as w:
        yield w


@pytest.fixture
def ws(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Browser Crawl Co")


@pytest.mark.browser
def test_adding_a_website_and_watching_its_progress(ws, crawl_server, crawl_worker, page):
    from playwright.sync_api import expect

    site = Website()
    try:
        site.put("/robots.txt", "User-agent: *\nDisallow: /staff/\n", "text/plain")
        names = [f"/help/{n}.html" for n in range(4)]
        for n, path in enumerate(names):
            site.put(path, page_html(n))
        site.put("/staff/notes.html", page_html(9))
        site.put_sitemap("/sitemap.xml", [*names, "/staff/notes.html"])
        first_gate, _ = site.hold(names[0])
        last_gate, _ = site.hold(names[2])

        name, value = session_cookie(ws.owner).split("=", 1)
        page.context.add_cookies([{"name": name, "value": value, "domain": ws.host, "path": "/"}])
        page.goto(crawl_server.url(ws.host, "/knowledge/"))
        page.get_by_role("link", name="Websites").click()
        expect(page.get_by_role("heading", name="Add a website")).to_be_visible()
        form = page.get_by_test_id("add-website")
        form.get_by_label("Address").fill(site.url("/sitemap.xml"))
        form.get_by_label("a sitemap").check()
        form.get_by_label("Re-sync").select_option("weekly")
        form.get_by_role("button", name="Add website").click()

        # The source's page, with its run going: held at the first page, nothing indexed yet.
        expect(page.get_by_role("heading", name=site.url("/sitemap.xml"))).to_be_visible()
        expect(page.locator("[data-live-state]")).to_have_text("Live updates on", timeout=20_000)
        progress = page.get_by_test_id("run-progress")
        expect(progress.locator('[data-run-field="indexed"]')).to_have_text("0")
        # Released, two pages go through and the counters move without a reload; the run is held again.
        page.evaluate("window.__sameDocument = true")
        first_gate.set()
        expect(progress.locator('[data-run-field="indexed"]')).to_have_text("2", timeout=HUNG_AFTER_MS)
        expect(progress.locator('[data-run-field="status"]')).to_have_text("Running")
        expect(progress.locator('[data-run-field="skipped"]')).to_have_text("1")  # /staff/: robots.txt
        assert page.evaluate("window.__sameDocument === true"), "the counters came from a reload, not live"
        last_gate.set()
        expect(progress.locator('[data-run-field="status"]')).to_have_text("Completed", timeout=HUNG_AFTER_MS)
        expect(progress.locator('[data-run-field="indexed"]')).to_have_text("4")
        report = page.get_by_test_id("run-report")
        expect(report.locator('tr[data-state="indexed"]')).to_have_count(4, timeout=HUNG_AFTER_MS)
        expect(report.locator('tr[data-state="skipped"]')).to_contain_text("robots_txt")
        if os.environ.get("SCREENSHOT_DIR"):
            page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "website-source.png"), full_page=True)

        page.get_by_role("link", name="← Websites").click()
        row = page.get_by_test_id("sources-table").locator("tr[data-source-id]")
        expect(row).to_contain_text("Weekly")
        expect(row).to_contain_text("4 indexed")
    finally:
        site.close()


def page_html(n: int) -> str:
    return page(f"Help {n}", ("topic", f"Topic {n}", f"Help topic {n} {word_marker('zb')}."))
