"""Downloads: every dashboard table as CSV (same filters, same numbers, formula-safe), transcripts as CSV and JSON
Lines (this workspace's messages only, internal notes left out), audit-logged."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django_tenants.utils import tenant_context

from accounts.models import AuditEntry
from tests.analytics_dashboard.data import FORMULA_QUESTION

TABLES = ["summary", "queries-over-time", "top-queries", "unanswered", "documents", "embeds", "quality", "handoffs"]


@pytest.fixture
def owner_client(ws, host_client):
    client = host_client(ws.host)
    client.force_login(ws.owner)
    return client


def _download(response) -> str:
    assert response.status_code == 200, response.content[:500]
    return b"".join(response.streaming_content).decode()


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("table", TABLES)
def test_every_table_downloads_as_csv(table, owner_client, ws, seeded, seeded_other):
    from analytics import exports

    response = owner_client.get(f"/analytics/export/{table}.csv")
    text = _download(response)
    assert response["Content-Type"].startswith("text/csv")
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;") and f'{table}-{ws.workspace.slug}-' in disposition
    assert disposition.endswith('.csv"')
    rows = _csv(text)
    assert tuple(rows[0]) == exports.TABLES[table].columns
    assert all(len(row) == len(rows[0]) for row in rows)
    assert "OTHERWORKSPACE" not in text  # isolation: nothing of the other workspace


def test_table_rows_are_the_selectors(owner_client, ws, seeded):
    from analytics import selectors

    with tenant_context(ws.workspace):
        filters = selectors.analytics_filters_parse({})
        summary = selectors.analytics_summary(filters)
        handoffs = selectors.analytics_handoffs(filters)
        top = selectors.analytics_top_queries(filters)
    rows = _csv(_download(owner_client.get("/analytics/export/summary.csv")))[1:]
    assert {metric: value for metric, value in rows} == {
        key: "" if value is None else str(value) for key, value in summary.items()}
    rows = _csv(_download(owner_client.get("/analytics/export/handoffs.csv")))[1:]
    assert rows == [[row["reason"], str(row["count"])] for row in handoffs]
    rows = _csv(_download(owner_client.get("/analytics/export/top-queries.csv")))[1:]
    assert [row[2] for row in rows] == [str(row["count"]) for row in top]


def test_csv_cells_never_start_a_formula(owner_client, seeded):
    text = _download(owner_client.get("/analytics/export/top-queries.csv")) + _download(
        owner_client.get("/analytics/export/unanswered.csv"))
    cells = [cell for row in _csv(text) for cell in row]
    assert "'" + FORMULA_QUESTION in cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@", "\t", "\r")]
    transcript = _csv(_download(owner_client.get("/analytics/export/transcripts.csv")))
    texts = [row[6] for row in transcript[1:]]
    assert "'" + FORMULA_QUESTION in texts and FORMULA_QUESTION not in texts


def test_csv_guard_unit():
    from analytics.exports import csv_cell_safe, csv_lines

    assert csv_cell_safe("=1+2") == "'=1+2"
    assert csv_cell_safe("+1") == "'+1" and csv_cell_safe("-1") == "'-1" and csv_cell_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell_safe("fine = ok") == "fine = ok"
    assert csv_cell_safe(-3) == -3  # numbers stay numbers
    assert list(csv_lines(["a", "b"], [["x", None]])) == ["a,b\r\n", "x,\r\n"]


def test_transcripts_csv(owner_client, ws, seeded, seeded_other):
    response = owner_client.get("/analytics/export/transcripts.csv")
    text = _download(response)
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="transcripts-' in response["Content-Disposition"]
    rows = _csv(text)
    assert rows[0] == ["conversation_id", "conversation_started_at", "channel", "status", "role", "author", "text",
                       "created_at", "citations"]
    mine = [row for row in rows[1:] if row[0] == str(seeded.conversation.public_id)]
    assert [row[4] for row in mine][:6] == ["customer", "assistant"] * 3
    assert mine[0][5] == f"Visitor {seeded.marker}" and mine[0][2] == "widget"
    assert f"Returns {seeded.marker}" in mine[1][8]
    assert seeded.note_text not in text and "note" not in {row[4] for row in rows[1:]}
    assert "OTHERWORKSPACE" not in text  # isolation


def test_transcripts_jsonl(owner_client, ws, seeded, seeded_other):
    response = owner_client.get("/analytics/export/transcripts.jsonl")
    text = _download(response)
    assert response["Content-Type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in records if r["conversation_id"] == str(seeded.conversation.public_id)]
    assert mine and mine[0]["text"] == seeded.questions[0] and mine[0]["role"] == "customer"
    assert mine[1]["citations"] == [{"document_id": 1, "title": f"Returns {seeded.marker}"}]
    assert set(mine[0]) == {"conversation_id", "conversation_started_at", "channel", "status", "role", "author",
                            "text", "created_at", "citations"}
    assert all(r["role"] != "note" for r in records)
    assert "OTHERWORKSPACE" not in text and seeded.note_text not in text


def test_other_workspace_sees_only_its_own(other_ws, host_client, seeded, seeded_other):
    client = host_client(other_ws.host)
    client.force_login(other_ws.owner)
    text = _download(client.get("/analytics/export/transcripts.jsonl"))
    assert "OTHERWORKSPACE" in text and seeded.marker not in text
    for table in TABLES:
        assert seeded.marker not in _download(client.get(f"/analytics/export/{table}.csv")), table


def test_transcripts_follow_the_date_range(owner_client, seeded):
    text = _download(owner_client.get("/analytics/export/transcripts.jsonl?start=2020-01-01&end=2020-01-31"))
    assert text == ""


def test_unknown_table_is_404(owner_client):
    assert owner_client.get("/analytics/export/nonsense.csv").status_code == 404
    response = owner_client.get("/analytics/export/nonsense.csv", HTTP_ACCEPT="application/json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert owner_client.get("/analytics/export/transcripts.xml").status_code == 404


def test_bad_filters_on_an_export_are_400(owner_client):
    response = owner_client.get("/analytics/export/summary.csv?start=nope", HTTP_ACCEPT="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"]
    assert owner_client.get("/analytics/export/transcripts.csv?interval=year").status_code == 400


def test_exports_are_audit_logged(owner_client, ws, seeded):
    before = AuditEntry.objects.filter(workspace=ws.workspace, action="analytics.exported").count()
    _download(owner_client.get("/analytics/export/transcripts.csv"))
    entry = AuditEntry.objects.filter(workspace=ws.workspace, action="analytics.exported").latest("pk")
    assert entry.target == "transcripts.csv" and entry.actor == ws.owner
    assert AuditEntry.objects.filter(workspace=ws.workspace, action="analytics.exported").count() == before + 1


def test_transcripts_stream_through_a_server_side_cursor(ws, seeded):
    """Messages are read with .iterator() in chunks, never the whole queryset at once."""
    from unittest import mock

    from analytics import exports, selectors

    with tenant_context(ws.workspace):
        filters = selectors.analytics_filters_parse({})
        with mock.patch.object(exports, "TRANSCRIPT_CHUNK_SIZE", 2):
            lines = exports.transcripts_jsonl(filters)
            first = next(lines)
            assert json.loads(first)["conversation_id"]
            rest = list(lines)
    assert len(rest) >= 5


def test_every_download_link_on_the_page_works_with_the_pages_filters(owner_client, seeded):
    from bs4 import BeautifulSoup

    page = owner_client.get(f"/analytics/?interval=hour&tz=Europe/Berlin&embed={seeded.embed.pk}")
    links = [a["href"] for a in BeautifulSoup(page.content, "html.parser").select('[data-testid="exports"] a')]
    assert len(links) == len(TABLES) + 2
    for href in links:
        assert "interval=hour" in href and "tz=Europe%2FBerlin" in href and f"embed={seeded.embed.pk}" in href
        _download(owner_client.get(href))
    hourly = _csv(_download(owner_client.get(next(h for h in links if "queries-over-time" in h))))
    assert hourly[1][0].endswith(("+01:00", "+02:00"))  # Berlin's buckets, as on the page


@pytest.mark.slow
def test_a_large_transcript_export_streams_in_bounded_memory(django_db_blocker):
    """Memory does not grow with the number of messages: exporting 8000 messages peaks no higher than exporting 2000
    (the queryset is read in chunks through a server-side cursor, the lines are handed on one by one; a list() or a
    plain queryset loop would peak about four times higher)."""
    import tracemalloc
    from unittest import mock

    from analytics import exports, selectors
    from chat.models import Message
    from chat.services import conversation_start
    from tests.factories import workspace_with_owner

    ws = workspace_with_owner(name="Big transcripts")

    def peak_exporting(embed_id: int) -> tuple[int, int]:
        filters = selectors.analytics_filters_parse({"embed": str(embed_id)})
        tracemalloc.start()
        try:
            lines = sum(1 for _line in exports.transcripts_csv(filters))
            return lines, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with tenant_context(ws.workspace), mock.patch.object(exports, "TRANSCRIPT_CHUNK_SIZE", 500):
        for embed_id, count in ((101, 2000), (202, 8000)):
            conversation = conversation_start(channel="widget", embed_id=embed_id)
            Message.objects.bulk_create(
                [Message(conversation=conversation, role="customer" if i % 2 else "assistant",
                         content=f"message {i} " + "x" * 300) for i in range(count)], batch_size=2000)
        small_lines, small_peak = peak_exporting(101)
        big_lines, big_peak = peak_exporting(202)
    assert (small_lines, big_lines) == (2001, 8001)
    assert big_peak < small_peak * 1.5, (small_peak, big_peak)
