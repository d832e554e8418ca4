"""Every figure of /api/v1/analytics/... against the same figure computed independently from the raw fixture events
(tests/analytics/expected.py): exact counts, buckets in UTC, across New York's DST changes and in Kolkata's half-hour
zone, empty and one-event ranges, a widget filter; and the rollup path equals the raw path."""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from django_tenants.utils import tenant_context

from accounts.services import api_key_create
from tests.analytics import expected
from tests.analytics.factories import QUESTIONS, events_record, fixture_events
from tests.chat.test_protocol import knowledge_seed
from tests.factories import WorkspaceWithOwner
from tests.tenants.test_billing import workspace_on

API = "/api/v1/analytics/"
ENDPOINTS = ("summary", "queries-over-time", "top-queries", "unanswered", "documents", "embeds", "quality",
             "handoffs")


class Fixture:
    def __init__(self, shop: WorkspaceWithOwner, key: str, events: list[dict[str, Any]], embeds: dict[int, str],
                 titles: dict[int, str]) -> None:
        self.shop, self.key, self.events, self.embeds, self.titles = shop, key, events, embeds, titles


@pytest.fixture(scope="module")
def fx(django_db_blocker) -> Fixture:
    from analytics.services import analytics_rebuild
    from documents.models import Document
    from embeds.services import embed_create

    with django_db_blocker.unblock():
        shop = workspace_on("pro")
        knowledge_seed(shop.workspace, ("Router manual", "To reset the router, hold the reset button."),
                       ("Shipping policy", "Shipping costs 5 euros within the EU."),
                       ("Warranty terms", "The warranty lasts two years."))
        _key, raw_key = api_key_create(workspace=shop.workspace, name="analytics", scopes=["read"])
        with tenant_context(shop.workspace):
            titles = dict(Document.objects.values_list("pk", "title"))
            a = embed_create(name="Shop widget", allowed_origins=["https://shop.example"])
            b = embed_create(name="Help widget", allowed_origins=["https://help.example"])
            cited = sorted(titles)[:2]  # the third document is never cited
            events = fixture_events(embeds=[(a.pk, "https://shop.example"), (b.pk, "https://help.example")],
                                    documents=cited)
            events_record(events)
            analytics_rebuild()
    # The ingestion above recorded document_ingested events "now"; they are part of what the API counts too.
    with django_db_blocker.unblock(), tenant_context(shop.workspace):
        from analytics.models import Event

        for row in Event.objects.filter(kind="document_ingested", occurred_at__gte=datetime(2026, 11, 10, tzinfo=UTC)):
            events.append({"kind": row.kind, "occurred_at": row.occurred_at, "document_id": row.document_id})
    return Fixture(shop, raw_key, events, {a.pk: a.name, b.pk: b.name}, titles)


def api_get(client: Any, fx: Fixture, name: str, **params: Any) -> Any:
    response = client.get(f"{API}{name}/?{urlencode(params)}", HTTP_AUTHORIZATION=f"Api-Key {fx.key}")
    assert response.status_code == 200, (name, params, response.content[:500])
    return response.json()


def check_all(client: Any, fx: Fixture, window: tuple[datetime, datetime], *, tz: str, interval: str = "day",
              embed: int | None = None, **params: Any) -> dict[str, Any]:
    """Every endpoint == the independent computation; and the selectors' raw path == rollup path."""
    from analytics import selectors

    start, end = window
    zone = ZoneInfo(tz)
    query = {"tz": tz, "interval": interval, **params}
    if embed is not None:
        query["embed"] = embed
    events = expected.in_range(fx.events, start, end, embed)
    got = {name: api_get(client, fx, name, **query) for name in ENDPOINTS}
    assert got["summary"] == expected.summary(events)
    assert got["queries-over-time"] == expected.queries_over_time(events, start, end, zone, interval)
    assert got["quality"] == expected.quality(events, start, end, zone, interval)
    assert got["handoffs"] == expected.handoffs(events)
    assert got["embeds"] == expected.embeds(events, fx.embeds)
    assert got["documents"] == expected.documents(events, fx.titles)
    assert got["unanswered"] == expected.unanswered(events, zone)
    top = got["top-queries"]
    assert [row["count"] for row in top] == sorted((row["count"] for row in top), reverse=True)
    assert {QUESTIONS[row["question"]]: (row["count"], row["answered"], row["unanswered"]) for row in top} == \
        expected.top_queries(events, QUESTIONS)
    # The rollup path (the API's) and the raw path agree on everything.
    with tenant_context(fx.shop.workspace):
        filters = selectors.analytics_filters_parse(query)
        for function in (selectors.analytics_summary, selectors.analytics_queries_over_time,
                         selectors.analytics_quality, selectors.analytics_top_queries, selectors.analytics_unanswered,
                         selectors.analytics_documents, selectors.analytics_embeds, selectors.analytics_handoffs):
            assert function(filters, source="raw") == function(filters, source="rollup"), function.__name__
    return got


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_utc_days_and_hours(fx, host_client):
    client = host_client(fx.shop.host)
    got = check_all(client, fx, (utc("2026-03-06T00:00"), utc("2026-03-11T00:00")), tz="UTC",
                    start="2026-03-06", end="2026-03-10")
    assert len(got["queries-over-time"]) == 5 and got["summary"]["questions"] > 100
    check_all(client, fx, (utc("2026-03-08T00:00"), utc("2026-03-09T00:00")), tz="UTC", interval="hour",
              start="2026-03-08", end="2026-03-08")


def test_new_york_across_both_dst_changes(fx, host_client):
    client = host_client(fx.shop.host)
    ny = ZoneInfo("America/New_York")
    start, end = expected.local_range(date(2026, 3, 6), date(2026, 3, 10), ny)
    got = check_all(client, fx, (start, end), tz="America/New_York", start="2026-03-06", end="2026-03-10")
    assert got["queries-over-time"][2]["bucket"] == "2026-03-08T00:00:00-05:00"
    assert got["queries-over-time"][3]["bucket"] == "2026-03-09T00:00:00-04:00"
    # The 23-hour day of the spring change, and the 25-hour day of the autumn one (01:00 twice), by the hour.
    start, end = expected.local_range(date(2026, 3, 8), date(2026, 3, 8), ny)
    spring = check_all(client, fx, (start, end), tz="America/New_York", interval="hour",
                       start="2026-03-08", end="2026-03-08")
    assert len(spring["queries-over-time"]) == 23
    start, end = expected.local_range(date(2026, 11, 1), date(2026, 11, 1), ny)
    autumn = check_all(client, fx, (start, end), tz="America/New_York", interval="hour",
                       start="2026-11-01", end="2026-11-01")
    buckets = [row["bucket"] for row in autumn["queries-over-time"]]
    assert len(buckets) == 25 and "2026-11-01T01:00:00-04:00" in buckets and "2026-11-01T01:00:00-05:00" in buckets
    start, end = expected.local_range(date(2026, 10, 30), date(2026, 11, 3), ny)
    check_all(client, fx, (start, end), tz="America/New_York", start="2026-10-30", end="2026-11-03")


def test_weeks_over_months(fx, host_client):
    ny = ZoneInfo("America/New_York")
    start, end = expected.local_range(date(2026, 3, 1), date(2026, 11, 15), ny)
    got = check_all(host_client(fx.shop.host), fx, (start, end), tz="America/New_York", interval="week",
                    start="2026-03-01", end="2026-11-15")
    assert all(datetime.fromisoformat(row["bucket"]).weekday() == 0 for row in got["queries-over-time"][1:])


def test_kolkata_half_hour_zone(fx, host_client):
    client = host_client(fx.shop.host)
    kolkata = ZoneInfo("Asia/Kolkata")
    start, end = expected.local_range(date(2026, 3, 6), date(2026, 3, 10), kolkata)
    got = check_all(client, fx, (start, end), tz="Asia/Kolkata", start="2026-03-06", end="2026-03-10")
    assert got["queries-over-time"][0]["bucket"] == "2026-03-06T00:00:00+05:30"
    start, end = expected.local_range(date(2026, 3, 8), date(2026, 3, 8), kolkata)
    check_all(client, fx, (start, end), tz="Asia/Kolkata", interval="hour", start="2026-03-08",
              end="2026-03-08")


def test_widget_filter(fx, host_client):
    embed_id = sorted(fx.embeds)[0]
    got = check_all(host_client(fx.shop.host), fx, (utc("2026-03-06T00:00"), utc("2026-11-05T00:00")),
                    tz="UTC", embed=embed_id, start="2026-03-06", end="2026-11-04")
    assert {row["embed_id"] for row in got["embeds"]} == {embed_id}


def test_date_times_that_are_not_whole_hours(fx, host_client):
    check_all(host_client(fx.shop.host), fx, (utc("2026-03-07T18:29:59"), utc("2026-03-09T03:59:59")),
              tz="UTC", start="2026-03-07T18:29:59Z", end="2026-03-09T03:59:59+00:00")


def test_empty_range(fx, host_client):
    got = check_all(host_client(fx.shop.host), fx, (utc("2026-05-01T00:00"), utc("2026-05-03T00:00")),
                    tz="UTC", start="2026-05-01", end="2026-05-02")
    assert got["summary"]["questions"] == 0 and got["summary"]["resolution_rate"] is None
    assert got["summary"]["first_token_p50_ms"] is None and got["summary"]["cost"] == "0.000000"
    assert [row["questions"] for row in got["queries-over-time"]] == [0, 0]
    assert got["top-queries"] == [] and got["unanswered"] == [] and got["handoffs"] == []
    # start == end: an empty range with no buckets at all
    got = check_all(host_client(fx.shop.host), fx, (utc("2026-03-08T10:00"), utc("2026-03-08T10:00")),
                    tz="UTC", start="2026-03-08T10:00:00Z", end="2026-03-08T10:00:00Z")
    assert got["queries-over-time"] == [] and got["summary"]["questions"] == 0


def test_one_event_range(fx, host_client):
    client = host_client(fx.shop.host)
    for params, start, end in (
        ({"start": "2026-07-15", "end": "2026-07-15"}, utc("2026-07-15T00:00"), utc("2026-07-16T00:00")),
        ({"start": "2026-07-15T12:30:00Z", "end": "2026-07-15T12:40:00Z"}, utc("2026-07-15T12:30"),
         utc("2026-07-15T12:40")),
    ):
        got = check_all(client, fx, (start, end), tz="UTC", **params)
        assert got["summary"]["unanswered"] == 1 and got["summary"]["first_token_p50_ms"] == 756
            # 777 ms lies in bucket 76, [2^(76/8), 2^(77/8)) = [733, 779): reported as its middle, 2^(76.5/8) = 756
        assert got["summary"]["first_token_p95_ms"] == 756
        assert [row["question"] for row in got["unanswered"]] == ["Do you sell gift cards?"]


def test_rollups_update_picks_up_late_events_and_new_hours(fx, host_client):
    """A late event in an hour already rolled up, and an hour that ended since: the incremental update (what beat
    runs) recomputes both; the numbers still match raw events."""
    from analytics.services import rollups_update
    from tests.analytics.factories import event

    late = [event("question_asked", utc("2026-03-08T12:15"), question_text="How do I reset my router?",
                  embed_id=None, origin="", conversation_id=None),
            event("handoff_requested", utc("2026-03-08T12:16"), reason="late", embed_id=None, origin="",
                  conversation_id=None)]
    with tenant_context(fx.shop.workspace):
        events_record(late)
        report = rollups_update()
    assert report["from"] <= utc("2026-03-08T12:00")
    fx.events.extend(late)
    got = check_all(host_client(fx.shop.host), fx, (utc("2026-03-08T00:00"), utc("2026-03-09T00:00")),
                    tz="UTC", start="2026-03-08", end="2026-03-08")
    assert {"reason": "late", "count": 1} in got["handoffs"]


def test_the_rollup_path_really_reads_rollups(fx):
    """Guard against a vacuous raw == rollup: whole-hour ranges are planned on the rollups (raw only at the edges and
    after the watermark); half-hour zones' day buckets fall back to raw."""
    from analytics import selectors

    with tenant_context(fx.shop.workspace):
        filters = selectors.analytics_filters_parse({"start": "2026-03-06", "end": "2026-03-10", "tz": "America/New_York"})
        assert [p.source for p in selectors._plan(filters, "rollup", selectors.bucket_starts(filters))] == ["rollup"]
        filters = selectors.analytics_filters_parse({"start": "2026-03-07T18:29:59Z", "end": "2026-03-09T03:59:59Z"})
        assert [p.source for p in selectors._plan(filters, "rollup")] == ["raw", "rollup", "raw"]
        filters = selectors.analytics_filters_parse({"start": "2026-03-06", "end": "2026-03-10", "tz": "Asia/Kolkata"})
        assert [p.source for p in selectors._plan(filters, "rollup", selectors.bucket_starts(filters))] == ["raw"]
        assert [p.source for p in selectors._plan(filters, "rollup")] == ["raw", "rollup", "raw"]
