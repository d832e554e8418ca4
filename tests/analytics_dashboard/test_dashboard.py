"""The analytics dashboard (issue #7): who may see it, the numbers it shows are the selectors' (the API's), bad
filters are a 400 page with a message, and the "add to knowledge base" loop."""
from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from django_tenants.utils import tenant_context

from tests.analytics_dashboard.data import FORMULA_QUESTION
from tests.factories import workspace_with_owner


def _client(host_client, ws, user):
    client = host_client(ws.host)
    client.force_login(user)
    return client


def _selector_output(workspace, params=None):
    from analytics import selectors

    with tenant_context(workspace):
        filters = selectors.analytics_filters_parse(params or {})
        return {
            "summary": selectors.analytics_summary(filters),
            "over_time": selectors.analytics_queries_over_time(filters),
            "top": selectors.analytics_top_queries(filters),
            "unanswered": selectors.analytics_unanswered(filters),
            "documents": selectors.analytics_documents(filters),
            "embeds": selectors.analytics_embeds(filters),
            "quality": selectors.analytics_quality(filters),
            "handoffs": selectors.analytics_handoffs(filters),
        }


def _rows(soup, testid):
    section = soup.select_one(f'[data-testid="{testid}"]')
    assert section is not None, testid
    table = section.select_one("table")
    return [[cell.get_text(" ", strip=True) for cell in tr.select("td")] for tr in table.select("tbody tr")
            if not (len(tr.select("td")) == 1 and tr.select_one("td[colspan]"))]


@pytest.mark.parametrize("role", ["owner", "admin", "agent", "viewer"])
def test_every_role_with_analytics_view_sees_the_page(role, ws, ws_users, host_client, seeded):
    response = _client(host_client, ws, ws_users[role]).get("/analytics/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<h1>Analytics</h1>" in body
    assert 'id="analytics-chart-data"' in body  # the charts' data, for static/js/charts.js
    assert "cdn" not in body.lower()


def test_people_without_access_are_turned_away(ws, other_ws, host_client):
    anonymous = host_client(ws.host).get("/analytics/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    stranger = host_client(ws.host)
    stranger.force_login(other_ws.owner)  # a member of another workspace, not of this one
    for path in ("/analytics/", "/analytics/export/summary.csv", "/analytics/export/transcripts.jsonl"):
        response = stranger.get(path)
        assert response.status_code == 403, path
        assert ws.workspace.name not in response.content.decode()


def _assert_page_shows(soup, expected):
    summary = expected["summary"]
    cards = {card["data-metric"]: card.select_one(".metric-value") for card in soup.select("[data-metric]")}
    for key in ("conversations", "questions", "handoffs", "first_token_p50_ms", "first_token_p95_ms",
                "resolution_rate", "satisfaction", "cost"):
        raw = summary[key]
        assert cards[key]["data-value"] == ("" if raw is None else str(raw)), key
    assert cards["conversations"].get_text(strip=True) == str(summary["conversations"])
    assert cards["questions"].get_text(strip=True) == str(summary["questions"])
    assert cards["tokens"].get_text(strip=True) == str(summary["tokens_in"] + summary["tokens_out"])
    if summary["resolution_rate"] is not None:
        assert cards["resolution_rate"].get_text(strip=True) == f"{summary['resolution_rate'] * 100:.1f} %"

    assert _rows(soup, "queries-over-time") == [
        [r["bucket"], str(r["questions"]), str(r["answered"]), str(r["unanswered"]), str(r["handoffs"])]
        for r in expected["over_time"]]
    assert _rows(soup, "top-queries") == [
        [r["question"], str(r["count"]), str(r["answered"]), str(r["unanswered"])] for r in expected["top"]]
    assert [row[:3] for row in _rows(soup, "unanswered")] == [
        [r["question"], str(r["count"]), r["last_asked_at"][:16].replace("T", " ")] for r in expected["unanswered"]]
    assert _rows(soup, "documents") == [
        [r["title"] if r["title"] is not None else "(deleted document)", str(r["citations"])]
        for r in expected["documents"]["used"]]
    assert _rows(soup, "handoffs") == [[r["reason"], str(r["count"])] for r in expected["handoffs"]]
    assert [row[2:] for row in _rows(soup, "embeds")] == [
        [str(r["opens"]), str(r["conversations"]), str(r["questions"])] for r in expected["embeds"]]
    quality = soup.select_one('[data-testid="quality"]')
    assert quality.select_one('[data-quality="feedback_up"]').get_text() == str(expected["quality"]["feedback_up"])
    assert quality.select_one('[data-quality="feedback_down"]').get_text() == str(expected["quality"]["feedback_down"])
    assert _rows(soup, "quality") == [
        [r["bucket"], *("–" if r[k] is None else str(r[k]) for k in
                        ("first_token_p50_ms", "first_token_p95_ms", "total_p50_ms", "total_p95_ms"))]
        for r in expected["quality"]["latency_over_time"]]


def test_the_page_shows_the_selectors_numbers(ws, host_client, seeded):
    response = _client(host_client, ws, ws.owner).get("/analytics/")
    assert response.status_code == 200
    soup = BeautifulSoup(response.content, "html.parser")
    expected = _selector_output(ws.workspace)
    assert expected["summary"]["questions"] >= 3 and expected["summary"]["conversations"] >= 1  # the seed counts
    assert any(seeded.questions[1] == row["question"] for row in expected["unanswered"])
    assert expected["top"] and expected["handoffs"] and expected["embeds"]  # no table is vacuously equal
    _assert_page_shows(soup, expected)


API_FIGURES = {"summary": "summary", "over_time": "queries-over-time", "top": "top-queries",
               "unanswered": "unanswered", "documents": "documents", "embeds": "embeds", "quality": "quality",
               "handoffs": "handoffs"}


@pytest.mark.parametrize("query", ["", "interval=hour&tz=Europe/Berlin", "interval=week&tz=America/New_York"])
def test_the_page_shows_the_apis_numbers(query, ws, host_client, seeded):
    """The API and the page, asked with the same filters, show the same figures."""
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.now().date()
    query = f"start={today - timedelta(days=6)}&end={today + timedelta(days=1)}&{query}"
    client = _client(host_client, ws, ws.owner)
    expected = {}
    for key, figure in API_FIGURES.items():
        response = client.get(f"/api/v1/analytics/{figure}/?{query}")
        assert response.status_code == 200, (figure, response.content[:300])
        expected[key] = response.json()
    page = client.get(f"/analytics/?{query}")
    assert page.status_code == 200
    assert expected["summary"]["questions"] >= 3
    _assert_page_shows(BeautifulSoup(page.content, "html.parser"), expected)


@pytest.mark.parametrize("query", ["start=yesterday", "interval=fortnight", "tz=Mars/Olympus", "embed=abc",
                                   "start=2026-05-01&end=2026-04-01"])
def test_invalid_filters_show_a_message_not_a_500(query, ws, host_client):
    response = _client(host_client, ws, ws.owner).get(f"/analytics/?{query}")
    assert response.status_code == 400
    soup = BeautifulSoup(response.content, "html.parser")
    error = soup.select_one('[data-testid="filter-error"]')
    assert error is not None and error.get_text(strip=True)
    form = soup.select_one('[data-testid="filters"]')
    assert form is not None  # the form is there to fix them, with the offending field marked
    name = query.split("&")[-1].split("=")[0]
    assert form.select_one(f'[name="{name}"]').get("aria-invalid") == "true"
    assert not soup.select("[data-metric]")  # no numbers for filters that could not be read


def test_widget_filter_narrows_the_numbers(ws, host_client, seeded):
    client = _client(host_client, ws, ws.owner)
    response = client.get(f"/analytics/?embed={seeded.embed.pk}")
    assert response.status_code == 200
    soup = BeautifulSoup(response.content, "html.parser")
    expected = _selector_output(ws.workspace, {"embed": str(seeded.embed.pk)})["summary"]
    card = soup.select_one('[data-metric="questions"] .metric-value')
    assert card["data-value"] == str(expected["questions"]) and expected["questions"] == 3
    assert soup.select_one(f'#a-embed option[value="{seeded.embed.pk}"]').has_attr("selected")
    assert soup.select_one('[data-testid="range"]').get_text().endswith(f"(UTC) · {seeded.embed.name} only")


def test_add_to_knowledge_opens_the_faq_form_prefilled(ws, host_client, seeded):
    client = _client(host_client, ws, ws.owner)
    soup = BeautifulSoup(client.get("/analytics/").content, "html.parser")
    links = soup.select('[data-testid="unanswered"] a[data-testid="add-to-knowledge"]')
    assert links, "every unanswered row has the action"
    declined = seeded.questions[1]
    link = next(a for a in links if a.find_parent("tr").select_one("td").get_text(strip=True) == declined)
    page = client.get(link["href"])
    assert page.status_code == 200
    form = BeautifulSoup(page.content, "html.parser").select_one("form#add-faq")
    assert form.select_one("input[name=question]")["value"] == declined
    assert form.find_parent("details").has_attr("open")


def test_add_to_knowledge_is_offered_only_to_who_may_add(ws, ws_users, host_client, seeded):
    soup = BeautifulSoup(_client(host_client, ws, ws_users["viewer"]).get("/analytics/").content, "html.parser")
    assert soup.select('[data-testid="unanswered"] tbody tr')
    assert not soup.select('a[data-testid="add-to-knowledge"]')


def test_an_empty_workspace_renders(host_client, django_db_blocker):
    empty = workspace_with_owner(name="Empty analytics")
    client = host_client(empty.host)
    client.force_login(empty.owner)
    response = client.get("/analytics/?interval=hour")
    assert response.status_code == 200
    assert "No questions in this range." in response.content.decode()
    assert FORMULA_QUESTION not in response.content.decode()
