"""The SQL that raw events and rollups share: counters, latency buckets and keyed dimensions.

Every statement takes a *period expression* (what rows are grouped by besides the widget): a UTC hour when rollups
are built, a bucket number (width_bucket over bucket starts) when the raw path answers a series, a constant for
totals. Raw and rollup paths therefore count with the very same expressions.
"""
from __future__ import annotations

from analytics.models import (
    DailyKeyedRollup, DailyRollup, Event, HourlyKeyedRollup, HourlyRollup, QuestionAssignment,
)

EVENT = Event._meta.db_table
HOURLY = HourlyRollup._meta.db_table
DAILY = DailyRollup._meta.db_table
HOURLY_KEYED = HourlyKeyedRollup._meta.db_table
DAILY_KEYED = DailyKeyedRollup._meta.db_table
ASSIGNMENT = QuestionAssignment._meta.db_table

UTC_HOUR = "(date_trunc('hour', e.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"

# name, SQL over events `e`; the same names are the rollups' columns.
COUNTERS: list[tuple[str, str]] = [
    ("conversations", "count(*) FILTER (WHERE e.kind = 'conversation_started')"),
    ("questions", "count(*) FILTER (WHERE e.kind = 'question_asked')"),
    ("answers", "count(*) FILTER (WHERE e.kind = 'answer_completed')"),
    ("answered", "count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome IN ('answered', 'low_confidence'))"),
    ("low_confidence", "count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome = 'low_confidence')"),
    ("declined", "count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome = 'declined')"),
    ("handoffs", "count(*) FILTER (WHERE e.kind = 'handoff_requested')"),
    ("feedback_up", "count(*) FILTER (WHERE e.kind = 'feedback_given' AND e.feedback = 1)"),
    ("feedback_down", "count(*) FILTER (WHERE e.kind = 'feedback_given' AND e.feedback = -1)"),
    ("widget_opens", "count(*) FILTER (WHERE e.kind = 'widget_opened')"),
    ("documents_ingested", "count(*) FILTER (WHERE e.kind = 'document_ingested')"),
    ("documents_failed", "count(*) FILTER (WHERE e.kind = 'document_failed')"),
    ("tokens_in", "coalesce(sum(e.tokens_in) FILTER (WHERE e.kind = 'answer_completed'), 0)"),
    ("tokens_out", "coalesce(sum(e.tokens_out) FILTER (WHERE e.kind = 'answer_completed'), 0)"),
    ("cost", "coalesce(sum(e.cost) FILTER (WHERE e.kind = 'answer_completed'), 0)"),
]
COUNTER_NAMES = [name for name, _ in COUNTERS]
HISTOGRAMS = {"first_token_hist": "first_token_bucket", "total_hist": "total_bucket"}


def counters_select(period: str) -> str:
    columns = ", ".join(sql for _, sql in COUNTERS)
    return (f"SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, {columns} FROM {EVENT} e "
            f"WHERE e.occurred_at >= %s AND e.occurred_at < %s {{embed}} GROUP BY 1, 2")


def histogram_select(period: str, bucket_column: str) -> str:
    return (f"SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, e.{bucket_column}, count(*) FROM {EVENT} e "
            f"WHERE e.kind = 'answer_completed' AND e.{bucket_column} IS NOT NULL AND e.occurred_at >= %s "
            f"AND e.occurred_at < %s {{embed}} GROUP BY 1, 2, 3")


# Keyed dimensions: SELECT period, embed, key, n1, n2, n3 over events in [%s, %s) (+ the embed filter).
_RANGE = "e.occurred_at >= %s AND e.occurred_at < %s {embed}"
KEYED: dict[str, str] = {
    "origin": (
        "SELECT {period} AS period, e.embed_id AS embed, e.origin AS key, "
        "count(*) FILTER (WHERE e.kind = 'widget_opened'), count(*) FILTER (WHERE e.kind = 'conversation_started'), "
        "count(*) FILTER (WHERE e.kind = 'question_asked') "
        f"FROM {EVENT} e WHERE e.embed_id IS NOT NULL "
        "AND e.kind IN ('widget_opened', 'conversation_started', 'question_asked') AND " + _RANGE + " GROUP BY 1, 2, 3"
    ),
    "document": (
        "SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, d.id::text AS key, count(*), 0, 0 "
        f"FROM {EVENT} e CROSS JOIN LATERAL unnest(e.cited_document_ids) AS d(id) "
        "WHERE e.kind = 'answer_completed' AND " + _RANGE + " GROUP BY 1, 2, 3"
    ),
    "handoff": (
        "SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, e.reason AS key, count(*), 0, 0 "
        f"FROM {EVENT} e WHERE e.kind = 'handoff_requested' AND " + _RANGE + " GROUP BY 1, 2, 3"
    ),
    "cluster": (
        "SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, a.cluster_id::text AS key, "
        "count(*) FILTER (WHERE e.kind = 'question_asked'), "
        "count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome IN ('answered', 'low_confidence')), "
        "count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome = 'declined') "
        f"FROM {EVENT} e JOIN {ASSIGNMENT} a ON a.question_hash = e.question_hash "
        "WHERE e.kind IN ('question_asked', 'answer_completed') AND e.question_hash <> '' AND " + _RANGE
        + " GROUP BY 1, 2, 3"
    ),
    "unanswered": (
        "SELECT {period} AS period, coalesce(e.embed_id, 0) AS embed, e.outcome || '|' || e.question_hash AS key, "
        "count(*), floor(extract(epoch FROM max(e.occurred_at)) * 1000)::bigint, 0 "
        f"FROM {EVENT} e WHERE e.kind = 'answer_completed' AND e.outcome IN ('declined', 'low_confidence') "
        "AND e.question_hash <> '' AND " + _RANGE + " GROUP BY 1, 2, 3"
    ),
}
DIMENSIONS = list(KEYED)
# n2 of `unanswered` is the latest time (epoch ms): periods combine it with max, everything else with sum.
MAX_N2 = frozenset({"unanswered"})
N2_COMBINE = "CASE WHEN dimension = 'unanswered' THEN max(n2) ELSE sum(n2) END"


def keyed_select(dimension: str, period: str) -> str:
    return KEYED[dimension].replace("{period}", period)
