"""Downloads of the analytics dashboard: every table as CSV, and conversation transcripts as CSV or JSON Lines.

The tables are the selectors' own output (the page, the API and the files show the same numbers). Files are
streamed: rows are produced one at a time and transcripts read messages with a server-side cursor
(`QuerySet.iterator`), so an export of 100k messages never holds them in memory.

Spreadsheets run cells that start with `=`, `+`, `-` or `@` (and tab / carriage return) as formulas; a customer's
question is untrusted text, so such text cells are prefixed with a quote (OWASP "CSV injection").
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from analytics import selectors
from analytics.selectors import AnalyticsFilters
from chat.models import Message, MessageRole

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
TRANSCRIPT_COLUMNS = (
    "conversation_id", "conversation_started_at", "channel", "status", "role", "author", "text", "created_at",
    "citations",
)
TRANSCRIPT_CHUNK_SIZE = 2000


def csv_cell_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: strings starting with a formula character get a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Line:
    """A file-like object for csv.writer that hands back the line it was given (for streaming)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(list(header))
    for row in rows:
        yield writer.writerow([csv_cell_safe("" if value is None else value) for value in row])


# --- tables ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportTable:
    columns: tuple[str, ...]
    rows: Callable[[AnalyticsFilters], Iterable[dict[str, Any]]]


def _summary_rows(filters: AnalyticsFilters) -> list[dict[str, Any]]:
    return [{"metric": key, "value": value} for key, value in selectors.analytics_summary(filters).items()]


def _document_rows(filters: AnalyticsFilters) -> Iterator[dict[str, Any]]:
    documents = selectors.analytics_documents(filters)
    for row in documents["used"]:
        yield {**row, "never_cited": False}
    for row in documents["never_cited"]:
        yield {**row, "citations": 0, "never_cited": True}


def _quality_rows(filters: AnalyticsFilters) -> Iterator[dict[str, Any]]:
    quality = selectors.analytics_quality(filters)
    yield {"bucket": "total", "feedback_up": quality["feedback_up"], "feedback_down": quality["feedback_down"],
           "ratio": quality["ratio"]}
    for row in quality["latency_over_time"]:
        yield row


TABLES: dict[str, ExportTable] = {
    "summary": ExportTable(("metric", "value"), _summary_rows),
    "queries-over-time": ExportTable(
        ("bucket", "questions", "answered", "unanswered", "handoffs"), selectors.analytics_queries_over_time
    ),
    "top-queries": ExportTable(
        ("cluster_id", "question", "count", "answered", "unanswered"), selectors.analytics_top_queries
    ),
    "unanswered": ExportTable(
        ("question", "count", "last_asked_at", "outcome", "conversation_id"), selectors.analytics_unanswered
    ),
    "documents": ExportTable(("document_id", "title", "citations", "never_cited"), _document_rows),
    "embeds": ExportTable(
        ("embed_id", "embed_name", "origin", "opens", "conversations", "questions"), selectors.analytics_embeds
    ),
    "quality": ExportTable(
        ("bucket", "feedback_up", "feedback_down", "ratio", "first_token_p50_ms", "first_token_p95_ms",
         "total_p50_ms", "total_p95_ms"),
        _quality_rows,
    ),
    "handoffs": ExportTable(("reason", "count"), selectors.analytics_handoffs),
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def analytics_table_csv(*, table: str, filters: AnalyticsFilters) -> Iterator[str]:
    """The CSV lines of one dashboard table (KeyError for a table that does not exist)."""
    spec = TABLES[table]
    rows = spec.rows(filters)
    return csv_lines(spec.columns, ([_plain(row.get(column)) for column in spec.columns] for row in rows))


# --- transcripts -------------------------------------------------------------------------------------------------


def transcript_messages(filters: AnalyticsFilters) -> QuerySet[Message]:
    """Every message (internal notes excluded) of the conversations started in the range, oldest first."""
    messages = (
        Message.objects.filter(conversation__created_at__gte=filters.start, conversation__created_at__lt=filters.end)
        .exclude(role=MessageRole.NOTE)
        .select_related("conversation", "author")
        .order_by("conversation__created_at", "conversation_id", "created_at", "id")
    )
    if filters.embed_id is not None:
        messages = messages.filter(conversation__embed_id=filters.embed_id)
    return messages


def _author(message: Message) -> str:
    if message.author is not None:
        return message.author.email
    if message.role == MessageRole.CUSTOMER:
        return message.conversation.visitor_name or message.conversation.visitor_email or "visitor"
    return message.role


def _citations(message: Message) -> list[dict[str, Any]]:
    citations = message.citations if isinstance(message.citations, list) else []
    return [
        {key: citation.get(key) for key in ("document_id", "title", "section", "page") if key in citation}
        for citation in citations if isinstance(citation, dict)
    ]


def transcript_record(message: Message, *, tz: Any) -> dict[str, Any]:
    conversation = message.conversation
    return {
        "conversation_id": str(conversation.public_id),
        "conversation_started_at": conversation.created_at.astimezone(tz).isoformat(),
        "channel": conversation.channel,
        "status": conversation.status,
        "role": message.role,
        "author": _author(message),
        "text": message.content,
        "created_at": message.created_at.astimezone(tz).isoformat(),
        "citations": _citations(message),
    }


def _transcript_records(filters: AnalyticsFilters) -> Iterator[dict[str, Any]]:
    for message in transcript_messages(filters).iterator(chunk_size=TRANSCRIPT_CHUNK_SIZE):
        yield transcript_record(message, tz=filters.tz)


def transcripts_csv(filters: AnalyticsFilters) -> Iterator[str]:
    def rows() -> Iterator[list[Any]]:
        for record in _transcript_records(filters):
            cited = "; ".join(
                f"{c.get('title') or ''} (#{c.get('document_id')})" for c in record["citations"]
            )
            yield [*(record[column] for column in TRANSCRIPT_COLUMNS[:-1]), cited]

    return csv_lines(TRANSCRIPT_COLUMNS, rows())


def transcripts_jsonl(filters: AnalyticsFilters) -> Iterator[str]:
    for record in _transcript_records(filters):
        yield json.dumps(record, ensure_ascii=False) + "\n"
