"""Writes of analytics: recording events (one INSERT, from the receivers), building rollups, clustering questions.

Every function runs in the current workspace schema. Rollups are derived data: `rollups_update` recomputes the hours
that changed since its last run (Celery beat), `analytics_rebuild` recomputes everything from the raw events
(`manage.py rebuild_analytics`). Both are idempotent: an hour is deleted and written again in one transaction.
"""
from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from analytics import histogram, sql
from analytics.models import (
    ALL_WIDGETS, DailyKeyedRollup, DailyRollup, Event, HourlyKeyedRollup, HourlyRollup, Outcome, QuestionAssignment,
    QuestionCluster, RollupState,
)
from analytics.text import QUESTION_TEXT_MAX, question_hash, question_normalise
from config.db import insert_statement, statements_defer
from config.errors import ApplicationError, ErrorCode

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Hours end this long before "now" before they count as complete (events are inserted right after their commit).
ROLLUP_LAG = timedelta(seconds=60)


# --- events ----------------------------------------------------------------------------------------------------
def outcome_of(*, answered: bool | None, confidence: float | None) -> str:
    if answered is False:
        return Outcome.DECLINED
    if confidence is not None and confidence < settings.ANALYTICS_LOW_CONFIDENCE:
        return Outcome.LOW_CONFIDENCE
    return Outcome.ANSWERED


def cited_document_ids(citations: Any) -> list[int]:
    """Each document once per answer, in citation order."""
    seen: list[int] = []
    for citation in citations or []:
        try:
            document_id = int(citation.get("document_id"))
        except (AttributeError, TypeError, ValueError):
            continue
        if document_id not in seen:
            seen.append(document_id)
    return seen


def event_record(*, kind: str, occurred_at: datetime | None = None, question_text: str = "", **fields: Any) -> Event:
    """One append-only row. Called by the receivers after the sender's commit: a single INSERT."""
    if question_text:
        question_text = question_text[:QUESTION_TEXT_MAX]
        fields["question_hash"] = question_hash(question_text)
    for name in ("latency_first_token_ms", "latency_total_ms"):
        if fields.get(name) is not None:
            fields[name] = int(fields[name])
    fields["first_token_bucket"] = histogram.bucket_of(fields.get("latency_first_token_ms"))
    fields["total_bucket"] = histogram.bucket_of(fields.get("latency_total_ms"))
    if fields.get("origin"):
        fields["origin"] = fields["origin"][:300]
    if fields.get("reason"):
        fields["reason"] = fields["reason"][:60]
    event = Event(kind=kind, occurred_at=occurred_at or timezone.now(), question_text=question_text, **fields)
    # Inside a batch (an answer's writes after its last event, chat.deferred): one round trip with the others.
    if statements_defer(insert_statement(event), durable=False):
        return event
    durable_sender = connection.in_atomic_block
    with transaction.atomic():
        if not durable_sender:
            # An event is not worth waiting for a WAL flush on the answer path: a crash may lose the last few
            # hundred milliseconds of events, never an answer (the sender's own commit is not touched: we are not
            # inside its transaction).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        event.save(force_insert=True)
        return event


# --- rollups ---------------------------------------------------------------------------------------------------
def _utc_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hours_build(h0: datetime, h1: datetime) -> int:
    """Recompute the hourly rollups of [h0, h1) (UTC hour boundaries) from raw events."""
    HourlyRollup.objects.filter(hour__gte=h0, hour__lt=h1).delete()
    HourlyKeyedRollup.objects.filter(hour__gte=h0, hour__lt=h1).delete()
    rows: dict[tuple[datetime, int], dict[str, Any]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql.counters_select(sql.UTC_HOUR).replace("{embed}", ""), [h0, h1])
        for period, embed, *values in cursor.fetchall():
            rows[(period, embed)] = dict(zip(sql.COUNTER_NAMES, values))
        hists: dict[tuple[datetime, int], dict[str, np.ndarray]] = defaultdict(dict)
        for field, column in sql.HISTOGRAMS.items():
            cursor.execute(sql.histogram_select(sql.UTC_HOUR, column).replace("{embed}", ""), [h0, h1])
            for period, embed, index, count in cursor.fetchall():
                hist = hists[(period, embed)].setdefault(field, histogram.empty())
                hist[index] += count
        for dimension in sql.DIMENSIONS:
            cursor.execute(
                f"INSERT INTO {sql.HOURLY_KEYED} (hour, embed_id, dimension, key, n1, n2, n3) "
                f"SELECT period, embed, %s, key, n1, n2, n3 FROM ("
                + sql.keyed_select(dimension, sql.UTC_HOUR).replace("{embed}", "")
                + ") AS k(period, embed, key, n1, n2, n3)",
                [dimension, h0, h1],
            )
        # Every widget together (ALL_WIDGETS), so unfiltered queries read one row per period, not one per widget.
        # Widget origins are only ever read per widget.
        cursor.execute(
            f"INSERT INTO {sql.HOURLY_KEYED} (hour, embed_id, dimension, key, n1, n2, n3) "
            f"SELECT hour, %s, dimension, key, sum(n1), {sql.N2_COMBINE}, sum(n3) FROM {sql.HOURLY_KEYED} "
            f"WHERE hour >= %s AND hour < %s AND embed_id <> %s AND dimension <> 'origin' GROUP BY hour, dimension, key",
            [ALL_WIDGETS, h0, h1, ALL_WIDGETS],
        )
    for (period, _embed), values in list(rows.items()):
        total = rows.setdefault((period, ALL_WIDGETS), {name: 0 for name in sql.COUNTER_NAMES})
        for name in sql.COUNTER_NAMES:
            total[name] += values[name]
        for field, hist in hists[(period, _embed)].items():
            hists[(period, ALL_WIDGETS)].setdefault(field, histogram.empty())
            hists[(period, ALL_WIDGETS)][field] += hist
    HourlyRollup.objects.bulk_create([
        HourlyRollup(hour=period, embed_id=embed, **values,
                     first_token_hist=histogram.to_bytes(hists[(period, embed)].get("first_token_hist", histogram.empty())),
                     total_hist=histogram.to_bytes(hists[(period, embed)].get("total_hist", histogram.empty())))
        for (period, embed), values in rows.items()
    ], batch_size=1000)
    return len(rows)


def _days_build(d0: datetime, d1: datetime) -> None:
    """Recompute the daily rollups of the UTC days [d0, d1) (midnights) from the hourly ones."""
    DailyRollup.objects.filter(day__gte=d0.date(), day__lt=d1.date()).delete()
    DailyKeyedRollup.objects.filter(day__gte=d0.date(), day__lt=d1.date()).delete()
    days: dict[tuple[Any, int], dict[str, Any]] = {}
    for row in HourlyRollup.objects.filter(hour__gte=d0, hour__lt=d1).iterator(chunk_size=2000):
        key = (row.hour.date(), row.embed_id)
        found = days.get(key)
        if found is None:
            found = days[key] = {name: 0 for name in sql.COUNTER_NAMES}
            found["cost"] = Decimal(0)
            found["first_token_hist"], found["total_hist"] = histogram.empty(), histogram.empty()
        for name in sql.COUNTER_NAMES:
            found[name] += getattr(row, name)
        found["first_token_hist"] += histogram.from_bytes(row.first_token_hist)
        found["total_hist"] += histogram.from_bytes(row.total_hist)
    DailyRollup.objects.bulk_create([
        DailyRollup(day=day, embed_id=embed, **{**values, "first_token_hist": histogram.to_bytes(values["first_token_hist"]),
                                               "total_hist": histogram.to_bytes(values["total_hist"])})
        for (day, embed), values in days.items()
    ], batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.DAILY_KEYED} (day, embed_id, dimension, key, n1, n2, n3) "
            f"SELECT (hour AT TIME ZONE 'UTC')::date, embed_id, dimension, key, sum(n1), {sql.N2_COMBINE}, sum(n3) "
            f"FROM {sql.HOURLY_KEYED} WHERE hour >= %s AND hour < %s GROUP BY 1, 2, 3, 4",
            [d0, d1],
        )


def _range_build(h0: datetime, h1: datetime) -> None:
    if h1 <= h0:
        return
    _hours_build(h0, h1)
    d0 = h0.replace(hour=0)
    d1 = h1 if h1.hour == 0 else h1.replace(hour=0) + DAY
    _days_build(d0, d1)


def _lock() -> None:
    """One rollup/clustering run per workspace at a time (transaction-scoped advisory lock)."""
    key = zlib.crc32(f"analytics:{connection.schema_name}".encode()) - 2**31
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _require_workspace() -> None:
    if getattr(connection, "schema_name", "public") == "public":
        raise ApplicationError("Analytics belong to a workspace; no workspace is selected.",
                               code=ErrorCode.WRONG_SCHEMA)


def rollups_update(*, now: datetime | None = None, cluster: bool = True) -> dict[str, Any]:
    """Bring the rollups up to date: cluster new questions, then recompute the hours that new events touched and
    the hours that ended since the last run. Later hours are read raw by the selectors."""
    _require_workspace()
    started = time.perf_counter()
    now = now or timezone.now()
    with transaction.atomic():
        _lock()
        state = RollupState.objects.select_for_update().first() or RollupState.objects.create()
        max_id = Event.objects.aggregate(m=Max("id"))["m"] or 0
        # Only events since the last run: a failed run does not move last_event_id, so nothing is skipped.
        clustered = questions_cluster(min_event_id=state.last_event_id, max_event_id=max_id) if cluster else {}
        until = _utc_hour(now - ROLLUP_LAG)
        fresh = Event.objects.filter(id__gt=state.last_event_id, id__lte=max_id).aggregate(m=Min("occurred_at"))["m"]
        start = state.rolled_until or until
        if fresh is not None:
            start = min(start, _utc_hour(fresh))  # late events, or the first run
        _range_build(start, until)
        state.rolled_until = max(until, state.rolled_until or until)
        state.last_event_id = max_id
        state.save()
    return {"from": start, "until": state.rolled_until, "last_event_id": max_id, **clustered,
            "seconds": round(time.perf_counter() - started, 3)}


def analytics_rebuild(*, now: datetime | None = None) -> dict[str, Any]:
    """Recompute clusters' assignments of unclustered questions and every rollup from the raw events."""
    _require_workspace()
    started = time.perf_counter()
    now = now or timezone.now()
    with transaction.atomic():
        _lock()
        max_id = Event.objects.aggregate(m=Max("id"))["m"] or 0
        clustered = questions_cluster(max_event_id=max_id)
        until = _utc_hour(now - ROLLUP_LAG)
        first = Event.objects.aggregate(m=Min("occurred_at"))["m"]
        HourlyRollup.objects.all().delete()
        HourlyKeyedRollup.objects.all().delete()
        DailyRollup.objects.all().delete()
        DailyKeyedRollup.objects.all().delete()
        if first is not None and _utc_hour(first) < until:
            _range_build(_utc_hour(first), until)
        RollupState.objects.all().delete()
        RollupState.objects.create(rolled_until=until, last_event_id=max_id)
    return {"events": Event.objects.count(), "until": until, "hourly_rows": HourlyRollup.objects.count(),
            "daily_rows": DailyRollup.objects.count(), **clustered,
            "seconds": round(time.perf_counter() - started, 3)}


# --- question clusters -----------------------------------------------------------------------------------------
def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


def questions_cluster(*, min_event_id: int = 0, max_event_id: int | None = None, batch: int = 256) -> dict[str, int]:
    """Give every question not yet clustered (by normalised text) a cluster: the nearest centroid if its cosine
    similarity reaches ANALYTICS_CLUSTER_THRESHOLD, else a new cluster. Runs in the beat task, never on the answer
    path. Earliest questions first, so a cluster's representative is the first way it was asked."""
    from documents.embedding import embedder

    limit = "AND e.id <= %s" if max_event_id is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.question_hash, (array_agg(e.question_text ORDER BY e.id))[1] FROM {sql.EVENT} e "
            f"WHERE e.question_hash <> '' AND e.kind IN ('question_asked', 'answer_completed') AND e.id > %s {limit} "
            f"AND NOT EXISTS (SELECT 1 FROM {sql.ASSIGNMENT} a WHERE a.question_hash = e.question_hash) "
            f"GROUP BY e.question_hash ORDER BY min(e.id)",
            [min_event_id, *([max_event_id] if max_event_id is not None else [])],
        )
        pending = cursor.fetchall()
    if not pending:
        return {"questions_clustered": 0, "clusters_created": 0}
    threshold = settings.ANALYTICS_CLUSTER_THRESHOLD
    clusters = list(QuestionCluster.objects.order_by("id"))
    centroids = [np.frombuffer(bytes(c.centroid), dtype=np.float32).copy() for c in clusters]
    sums = [centroid * max(c.size, 1) for centroid, c in zip(centroids, clusters)]
    matrix = _unit(np.vstack(centroids)) if centroids else None
    model = embedder()
    created = 0
    assignments: list[tuple[str, int, str]] = []  # hash, index into clusters, text
    for offset in range(0, len(pending), batch):
        chunk = pending[offset:offset + batch]
        vectors = _unit(np.asarray(model.embed([question_normalise(text) for _, text in chunk]), dtype=np.float32))
        for (qhash, text), vector in zip(chunk, vectors):
            best = -1
            if matrix is not None and len(matrix):
                scores = matrix @ vector
                best = int(np.argmax(scores))
                if scores[best] < threshold:
                    best = -1
            if best < 0:
                clusters.append(QuestionCluster(representative=text, size=0))
                sums.append(np.zeros_like(vector))
                best = len(clusters) - 1
                created += 1
                matrix = vector[None, :] if matrix is None else np.vstack([matrix, vector])
            clusters[best].size += 1
            sums[best] = sums[best] + vector
            matrix[best] = _unit(sums[best][None, :])[0]
            assignments.append((qhash, best, text))
    for cluster, total in zip(clusters, sums):
        cluster.centroid = _unit(total[None, :])[0].astype(np.float32).tobytes()
    QuestionCluster.objects.bulk_create([c for c in clusters if c.pk is None])
    QuestionCluster.objects.bulk_update([c for c in clusters if c.pk is not None], ["centroid", "size"],
                                        batch_size=500)
    QuestionAssignment.objects.bulk_create(
        [QuestionAssignment(question_hash=qhash, cluster_id=clusters[index].pk, text=text)
         for qhash, index, text in assignments], batch_size=1000, ignore_conflicts=True,
    )
    return {"questions_clustered": len(assignments), "clusters_created": created}


# --- visitor erasure (chat.signals.visitor_erasing; docs/handoff.md "Visitor data rights") --------------------------
def visitor_events_erase(*, visitor_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """Forget one visitor: delete their raw events (their conversations' and the widget opens under their id), then
    the clustered question texts no remaining event asks. A cluster that held one of them loses its member: deleted
    when nothing is left, else its centroid is rebuilt from the remaining members' embeddings (the old one mixed in
    the visitor's question) and its representative taken from them. Rollups keep their counts: they hold no text
    and no visitor id. Runs inside the erasure's transaction and raises on failure (the erasure then rolls back)."""
    from documents.embedding import embedder

    events = Event.objects.filter(conversation_id__in=conversation_ids) | Event.objects.filter(visitor_id=visitor_id)
    hashes = set(events.exclude(question_hash="").values_list("question_hash", flat=True))
    deleted, _ = events.delete()
    still_asked = set(Event.objects.filter(question_hash__in=hashes).values_list("question_hash", flat=True))
    orphans = hashes - still_asked
    affected = set(QuestionAssignment.objects.filter(question_hash__in=orphans).values_list("cluster_id", flat=True))
    QuestionAssignment.objects.filter(question_hash__in=orphans).delete()
    rebuilt = 0
    for cluster in QuestionCluster.objects.filter(pk__in=affected).order_by("pk"):
        members = list(cluster.assignments.order_by("created_at", "question_hash").values_list("text", flat=True))
        if not members:
            cluster.delete()
            continue
        vectors = _unit(np.asarray(embedder().embed([question_normalise(text) for text in members]), dtype=np.float32))
        cluster.centroid = _unit(vectors.sum(axis=0)[None, :])[0].astype(np.float32).tobytes()
        cluster.size = len(members)
        cluster.representative = members[0]
        cluster.save(update_fields=["centroid", "size", "representative"])
        rebuilt += 1
    return {"events": deleted, "questions": len(orphans), "clusters_rebuilt": rebuilt}
