"""The analytics page in Debian's Chromium: a seeded workspace's dashboard draws its SVG charts from the embedded
data (no CDN, nothing fetched but the page's own static files), the tables fold under "Data table", and a transcript
download works through the real ASGI server (streamed)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.analytics_dashboard.data import seed_workspace
from tests.factories import PASSWORD, workspace_with_owner
from tests.live import LiveServer

pytestmark = pytest.mark.browser

WAIT = 60_000


@pytest.fixture(scope="module")
def seeded_workspace(django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Charts Co")
        seeded = seed_workspace(ws.workspace, ws.owner)
    return ws, seeded


def test_analytics_page_draws_svg_charts(page: Page, live_server: LiveServer, seeded_workspace):
    ws, seeded = seeded_workspace
    requested_hosts: set[str] = set()
    page.on("request", lambda request: requested_hosts.add(request.url.split("/")[2]))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # CSP violations are console errors; failed loads are listed by address (the browser's own favicon probe aside)
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    page.set_default_timeout(WAIT)

    page.goto(live_server.url(ws.host, "/login/?next=/analytics/"))
    page.get_by_label("Email").fill(ws.owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()

    # Cards are server-rendered.
    expect(page.locator('[data-metric="questions"] .metric-value')).to_have_text("3")

    # Every chart is drawn: an SVG image with a title, axes and one mark per data point.
    figures = page.locator("figure[data-chart]")
    expect(figures).to_have_count(4)
    for index in range(4):
        expect(figures.nth(index)).to_have_attribute("data-chart-ready", "true")
    questions_chart = page.locator('[data-testid="queries-over-time"] svg.ccg-chart')
    expect(questions_chart).to_have_attribute("role", "img")
    expect(questions_chart.locator("path.ccg-line")).to_have_count(4)
    assert questions_chart.locator("circle.ccg-point").count() >= 4
    assert "Questions" in questions_chart.locator("circle.ccg-point title").first.text_content()
    assert page.locator('[data-testid="queries-over-time"] .ccg-axis-y text').count() >= 2
    handoff_bars = page.locator('[data-testid="handoffs"] svg rect.ccg-bar')
    expect(handoff_bars).to_have_count(page.locator('[data-testid="handoffs"] tbody tr').count())
    expect(page.locator('[data-testid="documents"] svg rect.ccg-bar').first).to_be_visible()
    # the data tables are still there, folded
    assert page.locator('[data-testid="queries-over-time"] details.chart-data').get_attribute("open") is None

    # Charts follow the width: on a phone-sized viewport they are drawn again, narrower (not just scaled down).
    drawn = int(questions_chart.get_attribute("width"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function(
        "w => +document.querySelector('[data-testid=queries-over-time] svg.ccg-chart').getAttribute('width') < w",
        arg=drawn)

    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / "analytics-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(Path(folder) / "analytics.png"), full_page=True)

    assert requested_hosts <= {f"{ws.host}:{live_server.port}"}, requested_hosts  # no CDN, nothing elsewhere
    assert not errors, errors

    # A transcript download through the ASGI server (streamed in batches), with the browser's session.
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    response = live_server.request("GET", ws.host, "/analytics/export/transcripts.jsonl", headers={"Cookie": cookie})
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in response.text.splitlines()]
    assert {r["conversation_id"] for r in records} == {str(seeded.conversation.public_id)}
    assert len(records) >= 6 and all(r["role"] != "note" for r in records)
