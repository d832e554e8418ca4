"""Reads of analytics, for the dashboard (analytics/views.py), the API (analytics/apis.py) and exports.

Every selector answers for `AnalyticsFilters` (a half-open range [start, end), a time zone, an optional widget and a
bucket interval) in the current workspace schema. `source="rollup"` (the default) reads the hourly/daily rollups for
the whole UTC hours they cover and raw events for the rest (the edges of the range that are not whole hours, and the
hours after the rollups' watermark); `source="raw"` reads raw events only. Both count with the same SQL expressions
(analytics/sql.py) and the same latency buckets (analytics/histogram.py), so they give identical numbers.
A series whose bucket boundaries are not whole UTC hours (time zones with :30/:45 offsets) is read raw.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from django.db import connection
from django.utils import timezone

from analytics import histogram, sql
from analytics.errors import AnalyticsErrorCode
from analytics.models import ALL_WIDGETS, QuestionCluster, RollupState
from config.errors import ValidationFailed

INTERVALS = ("hour", "day", "week")
DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=400)
MAX_HOURLY_RANGE = timedelta(days=31)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SOURCES = ("rollup", "raw")


# --- filters ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalyticsFilters:
    start: datetime
    end: datetime
    tz: ZoneInfo
    embed_id: int | None = None
    interval: str = "day"


def _invalid(code: AnalyticsErrorCode, name: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details={"fields": {name: [message]}})


def _moment(value: str, *, name: str, tz: ZoneInfo, is_end: bool) -> datetime:
    value = value.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            if is_end:  # an end date is inclusive: the range runs to the next local midnight
                day += timedelta(days=1)
            return datetime.combine(day, time(0), tzinfo=tz)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(AnalyticsErrorCode.INVALID_DATE, name,
                       "Use an ISO date (2026-03-08) or date-time (2026-03-08T14:00:00Z).") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def analytics_filters_parse(params: Mapping[str, str], *, default_tz: str = "UTC",
                            now: datetime | None = None) -> AnalyticsFilters:
    """Filters from query parameters: `start`, `end` (ISO dates — the end date is included — or date-times; naive
    ones are in `tz`), `tz` (IANA name), `interval` (hour/day/week), `embed` (widget id). Default: the 30 days
    ending now. Bad values raise ValidationFailed with a stable code (analytics.errors.AnalyticsErrorCode)."""
    def param(name: str) -> str:
        value = params.get(name)
        return "" if value is None else str(value).strip()

    tz_name = param("tz") or default_tz or "UTC"
    try:
        if not tz_name or "\x00" in tz_name:
            raise ValueError
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise _invalid(AnalyticsErrorCode.INVALID_TIMEZONE, "tz", "Unknown time zone; use an IANA name such as "
                       "Europe/Berlin.") from None
    interval = param("interval") or "day"
    if interval not in INTERVALS:
        raise _invalid(AnalyticsErrorCode.INVALID_INTERVAL, "interval", f"One of {', '.join(INTERVALS)}.")
    raw_start, raw_end = param("start"), param("end")
    try:
        end = _moment(raw_end, name="end", tz=tz, is_end=True) if raw_end else (now or timezone.now())
        start = _moment(raw_start, name="start", tz=tz, is_end=False) if raw_start else end - DEFAULT_RANGE
        start, end = start.astimezone(UTC), end.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _invalid(AnalyticsErrorCode.INVALID_DATE, "start", "The date is out of range.") from None
    if end < start:
        raise _invalid(AnalyticsErrorCode.INVALID_RANGE, "end", "The end is before the start.")
    if end - start > MAX_RANGE:
        raise _invalid(AnalyticsErrorCode.RANGE_TOO_LONG, "start", "The range is longer than 400 days.")
    if interval == "hour" and end - start > MAX_HOURLY_RANGE:
        raise _invalid(AnalyticsErrorCode.RANGE_TOO_LONG, "interval",
                       "Hourly buckets cover at most 31 days; use day or week.")
    embed_id = None
    raw_embed = param("embed")
    if raw_embed:
        try:
            embed_id = int(raw_embed)
            if embed_id <= 0 or embed_id > 2**62:
                raise ValueError
        except ValueError:
            raise _invalid(AnalyticsErrorCode.INVALID_EMBED, "embed", "A widget id (a positive integer).") from None
    return AnalyticsFilters(start=start, end=end, tz=tz, embed_id=embed_id, interval=interval)


# --- buckets ---------------------------------------------------------------------------------------------------
def _local_floor(moment: datetime, tz: ZoneInfo, interval: str) -> datetime:
    local = moment.astimezone(tz)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _local_next(boundary: datetime, tz: ZoneInfo, interval: str) -> datetime:
    if interval == "hour":
        step = HOUR
        while True:
            candidate = _local_floor(boundary + step, tz, "hour")
            if candidate > boundary:
                return candidate
            step += HOUR
    local_day = boundary.astimezone(tz).date() + timedelta(days=7 if interval == "week" else 1)
    return datetime.combine(local_day, time(0), tzinfo=tz).astimezone(UTC)


def bucket_starts(filters: AnalyticsFilters) -> list[datetime]:
    """UTC instants at which the local buckets of the range start (the first one at or before `start`)."""
    if filters.end <= filters.start:
        return []
    starts = [_local_floor(filters.start, filters.tz, filters.interval)]
    while True:
        following = _local_next(starts[-1], filters.tz, filters.interval)
        if following >= filters.end:
            return starts
        starts.append(following)


def _whole_hour(moment: datetime) -> bool:
    return moment.minute == 0 and moment.second == 0 and moment.microsecond == 0


def _ceil_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


# --- plans: which parts of the range come from rollups, which from raw events -----------------------------------
@dataclass(frozen=True)
class Piece:
    source: str  # "raw" | "rollup"
    start: datetime
    end: datetime


def _rolled_until() -> datetime | None:
    state = RollupState.objects.only("rolled_until").first()
    return state.rolled_until if state is not None else None


def _plan(filters: AnalyticsFilters, source: str, boundaries: list[datetime] | None = None) -> list[Piece]:
    if source not in SOURCES:
        raise ValueError(f"source is one of {SOURCES}")
    start, end = filters.start, filters.end
    if end <= start:
        return []
    if source == "raw" or (boundaries and not all(_whole_hour(b) for b in boundaries[1:])):
        return [Piece("raw", start, end)]
    rolled = _rolled_until()
    if rolled is None:
        return [Piece("raw", start, end)]
    h0, h1 = _ceil_hour(start), min(_floor_hour(end), rolled)
    if h1 <= h0:
        return [Piece("raw", start, end)]
    pieces = [Piece("raw", start, h0)] if start < h0 else []
    pieces.append(Piece("rollup", h0, h1))
    if h1 < end:
        pieces.append(Piece("raw", h1, end))
    return pieces


def _day_cover(piece: Piece) -> tuple[list[tuple[datetime, datetime]], tuple[date, date] | None]:
    """Split a whole-hour UTC range into hourly edges and whole UTC days in the middle."""
    d0 = _ceil_hour(piece.start)
    first_midnight = d0.replace(hour=0) if d0.hour == 0 else d0.replace(hour=0) + DAY
    last_midnight = piece.end.replace(hour=0)
    if first_midnight >= last_midnight:
        return [(piece.start, piece.end)], None
    hours = [(a, b) for a, b in ((piece.start, first_midnight), (last_midnight, piece.end)) if a < b]
    return hours, (first_midnight.date(), last_midnight.date())


def _embed_sql(filters: AnalyticsFilters, alias: str) -> tuple[str, list[Any]]:
    """The widget filter on raw events."""
    if filters.embed_id is None:
        return "", []
    return f"AND {alias}.embed_id = %s", [filters.embed_id]


def _rollup_embed_sql(filters: AnalyticsFilters, *, per_widget: bool = False) -> tuple[str, list[Any]]:
    """The widget filter on rollups: one widget's rows, else the all-widgets rows (or every widget's own rows)."""
    if filters.embed_id is not None:
        return "AND r.embed_id = %s", [filters.embed_id]
    if per_widget:
        return "AND r.embed_id >= 0", []
    return "AND r.embed_id = %s", [ALL_WIDGETS]


# --- counters and histograms -----------------------------------------------------------------------------------
@dataclass
class Counters:
    values: dict[str, Any] = field(default_factory=lambda: {name: 0 for name in sql.COUNTER_NAMES})
    first_token_hist: np.ndarray = field(default_factory=histogram.empty)
    total_hist: np.ndarray = field(default_factory=histogram.empty)

    def add(self, values: Mapping[str, Any]) -> None:
        for name in sql.COUNTER_NAMES:
            self.values[name] += values[name] or 0


_SUMS = ", ".join(f"sum(r.{name})" for name in sql.COUNTER_NAMES)


def _counters(filters: AnalyticsFilters, source: str, *, boundaries: list[datetime] | None,
              hists: bool) -> dict[int, Counters]:
    """Counters per bucket index (0 for totals when `boundaries` is None)."""
    result: dict[int, Counters] = defaultdict(Counters)
    pieces = _plan(filters, source, boundaries)
    with connection.cursor() as cursor:
        for piece in pieces:
            if piece.source == "raw":
                period, period_params = (("width_bucket(e.occurred_at, %s::timestamptz[]) - 1", [boundaries])
                                         if boundaries else ("0", []))
                embed, embed_params = _embed_sql(filters, "e")
                cursor.execute(sql.counters_select(period).replace("{embed}", embed),
                               [*period_params, piece.start, piece.end, *embed_params])
                for index, _embed, *values in cursor.fetchall():
                    result[index].add(dict(zip(sql.COUNTER_NAMES, values)))
                if hists:
                    for name, column in sql.HISTOGRAMS.items():
                        cursor.execute(sql.histogram_select(period, column).replace("{embed}", embed),
                                       [*period_params, piece.start, piece.end, *embed_params])
                        for index, _embed, bucket, count in cursor.fetchall():
                            getattr(result[index], name)[bucket] += count
                continue
            embed, embed_params = _rollup_embed_sql(filters)
            hist_columns = ", r.first_token_hist, r.total_hist" if hists else ""
            if boundaries:
                queries = [(f"SELECT width_bucket(r.hour, %s::timestamptz[]) - 1 AS period{{cols}} FROM {sql.HOURLY} r "
                            f"WHERE r.hour >= %s AND r.hour < %s {embed}", [boundaries, piece.start, piece.end,
                                                                           *embed_params])]
            else:
                hours, days = _day_cover(piece)
                queries = [(f"SELECT 0 AS period{{cols}} FROM {sql.HOURLY} r WHERE r.hour >= %s AND r.hour < %s {embed}",
                            [a, b, *embed_params]) for a, b in hours]
                if days:
                    queries.append((f"SELECT 0 AS period{{cols}} FROM {sql.DAILY} r WHERE r.day >= %s AND r.day < %s "
                                    f"{embed}", [days[0], days[1], *embed_params]))
            for query, params in queries:
                if hists:  # one row per hour/day: counters and histograms are summed here, the latter with numpy
                    cursor.execute(query.replace("{cols}", ", " + ", ".join(f"r.{n}" for n in sql.COUNTER_NAMES)
                                                 + hist_columns), params)
                    rows = cursor.fetchall()
                    if not rows:
                        continue
                    for row in rows:
                        result[row[0]].add(dict(zip(sql.COUNTER_NAMES, row[1:-2])))
                    indexes = np.asarray([row[0] for row in rows], dtype=np.int64)
                    present = np.unique(indexes)
                    for position, name in ((-2, "first_token_hist"), (-1, "total_hist")):
                        sums = np.zeros((int(present.max()) + 1, histogram.BUCKETS), dtype=np.int64)
                        np.add.at(sums, indexes, histogram.stack([row[position] for row in rows]))
                        for index in present.tolist():
                            getattr(result[index], name)[:] += sums[index]
                else:
                    cursor.execute(f"SELECT period, {_SUMS.replace('r.', 't.')} FROM ("
                                   + query.replace("{cols}", ", " + ", ".join(f"r.{n}" for n in sql.COUNTER_NAMES))
                                   + ") t GROUP BY 1", params)
                    for index, *values in cursor.fetchall():
                        result[index].add(dict(zip(sql.COUNTER_NAMES, values)))
    return result


def _keyed(filters: AnalyticsFilters, source: str, dimension: str) -> dict[tuple[int, str], list[int]]:
    """Keyed totals of a dimension over the range: (embed id, key) -> [n1, n2, n3]."""
    result: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    with connection.cursor() as cursor:
        for piece in _plan(filters, source):
            if piece.source == "raw":
                embed, embed_params = _embed_sql(filters, "e")
                cursor.execute(sql.keyed_select(dimension, "0").replace("{embed}", embed),
                               [piece.start, piece.end, *embed_params])
                rows = [(embed_id, key, n1, n2, n3) for _period, embed_id, key, n1, n2, n3 in cursor.fetchall()]
            else:
                embed, embed_params = _rollup_embed_sql(filters, per_widget=dimension == "origin")
                hours, days = _day_cover(piece)
                parts, params = [], []
                for a, b in hours:
                    parts.append(f"SELECT r.embed_id, r.key, r.n1, r.n2, r.n3 FROM {sql.HOURLY_KEYED} r "
                                 f"WHERE r.dimension = %s AND r.hour >= %s AND r.hour < %s {embed}")
                    params += [dimension, a, b, *embed_params]
                if days:
                    parts.append(f"SELECT r.embed_id, r.key, r.n1, r.n2, r.n3 FROM {sql.DAILY_KEYED} r "
                                 f"WHERE r.dimension = %s AND r.day >= %s AND r.day < %s {embed}")
                    params += [dimension, days[0], days[1], *embed_params]
                n2 = "max(n2)" if dimension in sql.MAX_N2 else "sum(n2)"
                cursor.execute(f"SELECT embed_id, key, sum(n1), {n2}, sum(n3) FROM ("
                               + " UNION ALL ".join(parts) + ") t GROUP BY 1, 2", params)
                rows = cursor.fetchall()
            for embed_id, key, n1, n2, n3 in rows:
                _combine(result[(embed_id, key)], (n1, n2, n3), dimension)
    return result


def _combine(into: list[int], counts: Any, dimension: str) -> None:
    into[0] += counts[0]
    into[1] = max(into[1], counts[1]) if dimension in sql.MAX_N2 else into[1] + counts[1]
    into[2] += counts[2]


def _by_key(keyed: Mapping[tuple[int, str], list[int]], dimension: str = "") -> dict[str, list[int]]:
    """Keyed totals over every widget."""
    merged: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (_embed, key), counts in keyed.items():
        _combine(merged[key], counts, dimension)
    return merged


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _cost(value: Any) -> str:
    return str(Decimal(value or 0).quantize(Decimal("0.000001")))


# --- selectors -------------------------------------------------------------------------------------------------
def analytics_summary(filters: AnalyticsFilters, *, source: str = "rollup") -> dict[str, Any]:
    totals = _counters(filters, source, boundaries=None, hists=True).get(0) or Counters()
    v = totals.values
    return {
        "conversations": v["conversations"],
        "questions": v["questions"],
        "answered": v["answered"],
        "unanswered": v["declined"],
        "low_confidence": v["low_confidence"],
        "handoffs": v["handoffs"],
        # Questions the bot resolved: answered questions less the ones handed to a person (docs/analytics.md).
        "resolution_rate": _ratio(max(v["answered"] - v["handoffs"], 0), v["questions"]),
        "first_token_p50_ms": histogram.percentile_ms(totals.first_token_hist, 0.50),
        "first_token_p95_ms": histogram.percentile_ms(totals.first_token_hist, 0.95),
        "feedback_up": v["feedback_up"],
        "feedback_down": v["feedback_down"],
        "satisfaction": _ratio(v["feedback_up"], v["feedback_up"] + v["feedback_down"]),
        "tokens_in": int(v["tokens_in"]),
        "tokens_out": int(v["tokens_out"]),
        "cost": _cost(v["cost"]),
    }


def _label(boundary: datetime, tz: ZoneInfo) -> str:
    return boundary.astimezone(tz).isoformat()


def analytics_queries_over_time(filters: AnalyticsFilters, *, source: str = "rollup") -> list[dict[str, Any]]:
    boundaries = bucket_starts(filters)
    if not boundaries:
        return []
    series = _counters(filters, source, boundaries=boundaries, hists=False)
    rows = []
    for index, boundary in enumerate(boundaries):
        v = (series.get(index) or Counters()).values
        rows.append({"bucket": _label(boundary, filters.tz), "questions": v["questions"], "answered": v["answered"],
                     "unanswered": v["declined"], "handoffs": v["handoffs"]})
    return rows


def analytics_quality(filters: AnalyticsFilters, *, source: str = "rollup") -> dict[str, Any]:
    boundaries = bucket_starts(filters)
    series = _counters(filters, source, boundaries=boundaries, hists=True) if boundaries else {}
    up = sum(c.values["feedback_up"] for c in series.values())
    down = sum(c.values["feedback_down"] for c in series.values())
    over_time = []
    for index, boundary in enumerate(boundaries):
        c = series.get(index) or Counters()
        over_time.append({
            "bucket": _label(boundary, filters.tz),
            "first_token_p50_ms": histogram.percentile_ms(c.first_token_hist, 0.50),
            "first_token_p95_ms": histogram.percentile_ms(c.first_token_hist, 0.95),
            "total_p50_ms": histogram.percentile_ms(c.total_hist, 0.50),
            "total_p95_ms": histogram.percentile_ms(c.total_hist, 0.95),
        })
    return {"feedback_up": up, "feedback_down": down, "ratio": _ratio(up, up + down), "latency_over_time": over_time}


def analytics_top_queries(filters: AnalyticsFilters, *, limit: int = 20, source: str = "rollup") -> list[dict[str, Any]]:
    """Questions grouped by meaning (clusters): most asked first. Questions asked since the last clustering run are
    not in any cluster yet and are left out."""
    counts = {int(key): value for key, value in _by_key(_keyed(filters, source, "cluster")).items() if value[0] > 0}
    ranked = sorted(counts.items(), key=lambda item: (-item[1][0], item[0]))[:max(0, limit)]
    texts = dict(QuestionCluster.objects.filter(pk__in=[cluster_id for cluster_id, _ in ranked])
                 .values_list("pk", "representative"))
    return [{"cluster_id": cluster_id, "question": texts.get(cluster_id, ""), "count": n1, "answered": n2,
             "unanswered": n3} for cluster_id, (n1, n2, n3) in ranked]


STARTER_MIN_ASKED = 2  # asked at least twice in the window: one question is not a pattern
STARTER_MIN_ANSWERED_RATE = 0.8  # the knowledge base answered at least 4 in 5 of them
STARTER_WINDOW = timedelta(days=30)
STARTER_MAX_CHARS = 150  # embeds.leads.MAX_STARTER_CHARS


def starter_question_candidates(*, embed_id: int | None = None, now: datetime | None = None,
                                limit: int = 20) -> list[dict[str, Any]]:
    """Starter question suggestions (embeds.starters): the clustered top questions of the last 30 days (of one
    widget, when given) that were asked at least STARTER_MIN_ASKED times and answered at least
    STARTER_MIN_ANSWERED_RATE of the time — so a chip never offers what the knowledge base can't answer. Most asked
    first; the cluster's representative question is the text."""
    end = now or timezone.now()
    filters = AnalyticsFilters(start=end - STARTER_WINDOW, end=end, tz=ZoneInfo("UTC"), embed_id=embed_id,
                               interval="day")
    candidates = []
    for row in analytics_top_queries(filters, limit=200):
        question = " ".join(row["question"].split())
        rate = row["answered"] / row["count"] if row["count"] else 0.0
        if row["count"] >= STARTER_MIN_ASKED and rate >= STARTER_MIN_ANSWERED_RATE and \
                0 < len(question) <= STARTER_MAX_CHARS:
            candidates.append({"question": question, "count": row["count"], "answered_rate": round(rate, 3),
                               "cluster_id": row["cluster_id"]})
    return candidates[:limit]


def analytics_top_queries_freshness(filters: AnalyticsFilters, *, limit: int = 10) -> dict[str, Any]:
    """How fresh Top questions is: when questions were last grouped (the rollup task clusters, every
    ANALYTICS rollup period), and the questions of the range asked since — not in any cluster yet, so not counted
    above — by exact (normalised) wording, most asked first. Only events after the last run can be unassigned
    (each run clusters every question up to the last event it saw), so this reads only those."""
    state = RollupState.objects.only("updated_at", "last_event_id").first()
    last_event_id = state.last_event_id if state is not None else 0
    embed, embed_params = _embed_sql(filters, "e")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (array_agg(e.question_text ORDER BY e.id DESC))[1], count(*), count(*) OVER (), "
            f"sum(count(*)) OVER () FROM {sql.EVENT} e "
            f"WHERE e.id > %s AND e.kind = 'question_asked' AND e.question_hash <> '' "
            f"AND e.occurred_at >= %s AND e.occurred_at < %s {embed} "
            f"AND NOT EXISTS (SELECT 1 FROM {sql.ASSIGNMENT} a WHERE a.question_hash = e.question_hash) "
            f"GROUP BY e.question_hash ORDER BY count(*) DESC, max(e.id) DESC LIMIT %s",
            [last_event_id, filters.start, filters.end, *embed_params, max(1, limit)],
        )
        rows = cursor.fetchall()
    grouped_at = state.updated_at if state is not None else None
    return {
        "grouped_at": grouped_at.astimezone(filters.tz).isoformat() if grouped_at else None,
        "pending_questions": int(rows[0][3]) if rows else 0,
        "pending_distinct": int(rows[0][2]) if rows else 0,
        "pending": [{"question": text, "count": int(count)} for text, count, _distinct, _total in rows],
    }


def analytics_unanswered(filters: AnalyticsFilters, *, limit: int = 100, source: str = "rollup") -> list[dict[str, Any]]:
    """Declined and low-confidence answers, grouped by question (normalised text) and outcome: most frequent first,
    then most recent. Counts and latest times come from the rollups; the latest wording and conversation of the
    chosen rows from one index lookup each."""
    keyed = _by_key(_keyed(filters, source, "unanswered"), "unanswered")
    ranked = sorted(((key, n1, n2) for key, (n1, n2, _n3) in keyed.items() if n1 > 0),
                    key=lambda item: (-item[1], -item[2], item[0]))[:max(0, limit)]
    if not ranked:
        return []
    pairs = [key.split("|", 1) for key, _n1, _n2 in ranked]
    embed, embed_params = _embed_sql(filters, "e")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT k.outcome, k.qhash, x.question_text, x.occurred_at, x.conversation_id "
            f"FROM unnest(%s::text[], %s::text[]) AS k(outcome, qhash) CROSS JOIN LATERAL ("
            f"SELECT e.question_text, e.occurred_at, e.conversation_id FROM {sql.EVENT} e "
            f"WHERE e.question_hash = k.qhash AND e.outcome = k.outcome AND e.kind = 'answer_completed' "
            f"AND e.outcome IN ('declined', 'low_confidence') AND e.occurred_at >= %s AND e.occurred_at < %s {embed} "
            f"ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1) x",
            [[outcome for outcome, _ in pairs], [qhash for _, qhash in pairs], filters.start, filters.end,
             *embed_params],
        )
        latest = {f"{outcome}|{qhash}": (text, at, conversation)
                  for outcome, qhash, text, at, conversation in cursor.fetchall()}
    rows = []
    for key, count, _last_ms in ranked:
        text, at, conversation = latest[key]
        rows.append({"question": text, "count": count, "last_asked_at": at.astimezone(filters.tz).isoformat(),
                     "outcome": key.split("|", 1)[0], "conversation_id": str(conversation) if conversation else None,
                     "_at": at})
    rows.sort(key=lambda row: (-row["count"], -row["_at"].timestamp(), row["outcome"], row["question"]))
    for row in rows:
        del row["_at"]
    return rows


def analytics_documents(filters: AnalyticsFilters, *, source: str = "rollup") -> dict[str, Any]:
    """Answers citing each document (a document counts once per answer), and indexed documents never cited in the
    range."""
    from documents.models import Document, DocumentStatus

    citations = {int(key): value[0] for key, value in _by_key(_keyed(filters, source, "document")).items()
                 if value[0] > 0}
    titles = dict(Document.objects.filter(pk__in=list(citations)).values_list("pk", "title"))
    used = [{"document_id": document_id, "title": titles.get(document_id), "citations": count}
            for document_id, count in sorted(citations.items(), key=lambda item: (-item[1], item[0]))]
    never = Document.objects.filter(status=DocumentStatus.INDEXED).exclude(pk__in=list(citations)).order_by("title", "pk")
    return {"used": used, "never_cited": [{"document_id": pk, "title": title}
                                          for pk, title in never.values_list("pk", "title")]}


def analytics_embeds(filters: AnalyticsFilters, *, source: str = "rollup") -> list[dict[str, Any]]:
    """Per widget and page origin: widget opens, conversations started and questions asked."""
    from embeds.models import Embed

    keyed = {key: value for key, value in _keyed(filters, source, "origin").items() if any(value)}
    names = dict(Embed.objects.filter(pk__in={embed_id for embed_id, _ in keyed}).values_list("pk", "name"))
    return [{"embed_id": embed_id, "embed_name": names.get(embed_id), "origin": origin, "opens": n1,
             "conversations": n2, "questions": n3}
            for (embed_id, origin), (n1, n2, n3) in sorted(keyed.items(), key=lambda item: (item[0][0], item[0][1]))]


def analytics_handoffs(filters: AnalyticsFilters, *, source: str = "rollup") -> list[dict[str, Any]]:
    counts = {key: value[0] for key, value in _by_key(_keyed(filters, source, "handoff")).items() if value[0] > 0}
    return [{"reason": reason, "count": count}
            for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


# --- the review queue (issue #17) -------------------------------------------------------------------------------
REVIEW_DAYS = 30
REVIEW_LIMIT = 300


def review_queue(*, days: int = REVIEW_DAYS, limit: int = REVIEW_LIMIT) -> list[dict[str, Any]]:
    """Answers to look at: rated not helpful, declined, or answered with low confidence, in the last `days`, newest
    first (at most `limit`), grouped by the question clusters (questions not clustered yet are grouped by their
    normalised text). An answer the team already corrected (a curated answer written from it) is left out."""
    from django.conf import settings
    from django.db.models import Q

    from analytics.models import QuestionAssignment
    from analytics.text import question_hash, question_normalise
    from chat.models import Message, MessageRole
    from documents.models import CuratedAnswer

    since = timezone.now() - timedelta(days=days)
    corrected = CuratedAnswer.objects.exclude(source_message_id=None).values("source_message_id")
    low = settings.ANALYTICS_LOW_CONFIDENCE
    messages = list(
        Message.objects.filter(role=MessageRole.ASSISTANT, created_at__gte=since)
        .filter(Q(feedback=-1) | Q(answered=False) | Q(answered=True, confidence__lt=low))
        .exclude(pk__in=corrected).exclude(reply_to=None)
        .select_related("reply_to", "conversation").order_by("-created_at", "-id")[:max(0, limit)]
    )
    hashes = {m.pk: question_hash(m.reply_to.content) for m in messages}
    clusters = dict(QuestionAssignment.objects.filter(question_hash__in=set(hashes.values()))
                    .values_list("question_hash", "cluster_id"))
    representatives = dict(QuestionCluster.objects.filter(pk__in=set(clusters.values()))
                           .values_list("pk", "representative"))
    groups: dict[str, dict[str, Any]] = {}
    for message in messages:
        cluster_id = clusters.get(hashes[message.pk])
        key = f"c{cluster_id}" if cluster_id else f"q{hashes[message.pk]}"
        group = groups.setdefault(key, {
            "cluster_id": cluster_id,
            "question": representatives.get(cluster_id) if cluster_id else question_normalise(message.reply_to.content),
            "items": [],
        })
        reasons = []
        if message.feedback == -1:
            reasons.append("thumbs_down")
        if message.answered is False:
            reasons.append("declined")
        elif message.confidence is not None and message.confidence < low:
            reasons.append("low_confidence")
        group["items"].append({
            "message_id": message.pk, "question": message.reply_to.content, "answer": message.content,
            "reasons": reasons, "created_at": message.created_at,
            "conversation_id": str(message.conversation.public_id),
            "curated_answer_id": (message.metadata or {}).get("curated_answer_id"),
        })
    ordered = sorted(groups.values(), key=lambda g: (-len(g["items"]), -g["items"][0]["created_at"].timestamp()))
    for group in ordered:
        group["count"] = len(group["items"])
    return ordered
