"""Analytics → Top questions right after questions were asked (issue #22): clusters are rebuilt by the rollup task
every few minutes, so the page says when questions were last grouped and lists what was asked since, instead of
"No questions in this range"."""
from __future__ import annotations

from bs4 import BeautifulSoup
from django_tenants.utils import tenant_context

from tests.factories import workspace_with_owner


def _page(host_client, ws) -> BeautifulSoup:
    client = host_client(ws.host)
    client.force_login(ws.owner)
    response = client.get("/analytics/")
    assert response.status_code == 200
    return BeautifulSoup(response.content, "html.parser")


def _table(section) -> list[list[str]]:
    return [[td.get_text(" ", strip=True) for td in tr.select("td")] for tr in section.select("tbody tr")]


def _ask(ws, *questions: str) -> None:
    from chat import services

    with tenant_context(ws.workspace):
        for question in questions:
            conversation = services.conversation_start(channel="widget")
            services.customer_message_post(conversation=conversation, text=question)


def test_questions_show_up_right_after_they_are_asked_then_join_the_clusters(host_client):
    from analytics import services

    ws = workspace_with_owner(name="Fresh questions")
    _ask(ws, "How do I reset my password?", "How do I reset my password?", "Where is my parcel?")

    soup = _page(host_client, ws)
    top = soup.select_one('[data-testid="top-queries"]')
    assert "Not grouped yet" in top.select_one('[data-testid="top-freshness"]').get_text()
    assert "No questions in this range." not in top.get_text()
    assert _table(top.select_one("table"))[0] == ["No grouped questions in this range yet."]
    pending = top.select_one('[data-testid="top-pending"]')
    assert _table(pending) == [["How do I reset my password?", "2"], ["Where is my parcel?", "1"]]
    assert "3 questions (2 different wordings)" in pending.get_text(" ", strip=True)

    with tenant_context(ws.workspace):
        services.rollups_update()  # what the beat task runs every few minutes
    soup = _page(host_client, ws)
    top = soup.select_one('[data-testid="top-queries"]')
    assert "Grouped at " in top.select_one('[data-testid="top-freshness"]').get_text()
    assert not top.select('[data-testid="top-pending"]')
    rows = _table(top.select_one("table"))
    assert [row[:2] for row in rows] == [["How do I reset my password?", "2"], ["Where is my parcel?", "1"]]

    _ask(ws, "Do you ship to Norway?")
    top = _page(host_client, ws).select_one('[data-testid="top-queries"]')
    assert _table(top.select_one('[data-testid="top-pending"]')) == [["Do you ship to Norway?", "1"]]
    assert len(_table(top.select_one("table"))) == 2  # the grouped ones stay as they were


def test_the_freshness_selector_reads_only_the_range_and_the_widget(host_client):
    from datetime import timedelta

    from django.utils import timezone

    from analytics import selectors
    from analytics.models import EventKind
    from analytics.services import event_record

    ws = workspace_with_owner(name="Fresh ranges")
    now = timezone.now()
    with tenant_context(ws.workspace):
        event_record(kind=EventKind.QUESTION_ASKED, question_text="Old one", occurred_at=now - timedelta(days=40))
        event_record(kind=EventKind.QUESTION_ASKED, question_text="From widget 7", embed_id=7)
        event_record(kind=EventKind.QUESTION_ASKED, question_text="From the dashboard")
        everything = selectors.analytics_top_queries_freshness(selectors.analytics_filters_parse({}))
        widget = selectors.analytics_top_queries_freshness(selectors.analytics_filters_parse({"embed": "7"}))
    assert {row["question"] for row in everything["pending"]} == {"From widget 7", "From the dashboard"}
    assert everything["grouped_at"] is None and everything["pending_questions"] == 2
    assert widget["pending"] == [{"question": "From widget 7", "count": 1}]
