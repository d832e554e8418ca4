"""The figures of the analytics API, computed independently in plain Python from the fixture events (the test's own
reading of docs/analytics.md — not the selectors)."""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

LOW = ("declined", "low_confidence")


def in_range(events: list[dict[str, Any]], start: datetime, end: datetime, embed: int | None = None) -> list[dict]:
    return [e for e in events if start <= e["occurred_at"] < end and (embed is None or e.get("embed_id") == embed)]


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip("?!.。？！ ").lower()


def latency_bucket(ms: int) -> int:
    return 0 if ms < 1 else min(167, math.floor(8 * math.log2(ms)))


def percentile(values: list[int], p: float) -> int | None:
    if not values:
        return None
    buckets = sorted(latency_bucket(v) for v in values)
    index = buckets[math.ceil(p * len(buckets)) - 1]
    return round(2 ** ((index + 0.5) / 8))


def ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 4)


def summary(events: list[dict]) -> dict[str, Any]:
    kinds = Counter(e["kind"] for e in events)
    answers = [e for e in events if e["kind"] == "answer_completed"]
    answered = sum(1 for e in answers if e["outcome"] in ("answered", "low_confidence"))
    feedback = Counter(e["feedback"] for e in events if e["kind"] == "feedback_given")
    return {
        "conversations": kinds["conversation_started"], "questions": kinds["question_asked"], "answered": answered,
        "unanswered": sum(1 for e in answers if e["outcome"] == "declined"),
        "low_confidence": sum(1 for e in answers if e["outcome"] == "low_confidence"),
        "handoffs": kinds["handoff_requested"],
        "resolution_rate": ratio(max(answered - kinds["handoff_requested"], 0), kinds["question_asked"]),
        "first_token_p50_ms": percentile([e["latency_first_token_ms"] for e in answers
                                          if e.get("latency_first_token_ms") is not None], 0.5),
        "first_token_p95_ms": percentile([e["latency_first_token_ms"] for e in answers
                                          if e.get("latency_first_token_ms") is not None], 0.95),
        "feedback_up": feedback[1], "feedback_down": feedback[-1],
        "satisfaction": ratio(feedback[1], feedback[1] + feedback[-1]),
        "tokens_in": sum(e["tokens_in"] for e in answers), "tokens_out": sum(e["tokens_out"] for e in answers),
        "cost": str(sum((e["cost"] for e in answers), Decimal(0)).quantize(Decimal("0.000001"))),
    }


def local_buckets(start: datetime, end: datetime, tz: ZoneInfo, interval: str) -> list[datetime]:
    """Local bucket starts as aware local datetimes, found by walking the range in 15-minute steps."""
    if end <= start:
        return []
    found: list[datetime] = []

    def start_of(moment: datetime) -> datetime:
        local = moment.astimezone(tz)
        if interval == "hour":
            return local.replace(minute=0, second=0, microsecond=0)
        day = local.date() - timedelta(days=local.date().weekday() if interval == "week" else 0)
        return datetime.combine(day, time(0), tzinfo=tz)

    moment = start
    while moment < end:
        bucket = start_of(moment)
        if not found or bucket.astimezone(UTC) != found[-1].astimezone(UTC):
            found.append(bucket)
        moment += timedelta(minutes=15)
    last = start_of(end - timedelta(microseconds=1))
    if last.astimezone(UTC) != found[-1].astimezone(UTC):
        found.append(last)
    return found


def bucket_of(at: datetime, tz: ZoneInfo, interval: str) -> str:
    local = at.astimezone(tz)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0).isoformat()
    day = local.date() - timedelta(days=local.date().weekday() if interval == "week" else 0)
    return datetime.combine(day, time(0), tzinfo=tz).isoformat()


def queries_over_time(events: list[dict], start: datetime, end: datetime, tz: ZoneInfo, interval: str) -> list[dict]:
    rows = {b.isoformat(): {"bucket": b.isoformat(), "questions": 0, "answered": 0, "unanswered": 0, "handoffs": 0}
            for b in local_buckets(start, end, tz, interval)}
    for e in events:
        row = rows[bucket_of(e["occurred_at"], tz, interval)]
        if e["kind"] == "question_asked":
            row["questions"] += 1
        elif e["kind"] == "answer_completed":
            row["answered" if e["outcome"] != "declined" else "unanswered"] += 1
        elif e["kind"] == "handoff_requested":
            row["handoffs"] += 1
    return list(rows.values())


def quality(events: list[dict], start: datetime, end: datetime, tz: ZoneInfo, interval: str) -> dict[str, Any]:
    feedback = Counter(e["feedback"] for e in events if e["kind"] == "feedback_given")
    per: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"first": [], "total": []})
    for e in events:
        if e["kind"] == "answer_completed":
            bucket = per[bucket_of(e["occurred_at"], tz, interval)]
            if e.get("latency_first_token_ms") is not None:
                bucket["first"].append(e["latency_first_token_ms"])
            if e.get("latency_total_ms") is not None:
                bucket["total"].append(e["latency_total_ms"])
    over_time = []
    for b in local_buckets(start, end, tz, interval):
        values = per[b.isoformat()]
        over_time.append({"bucket": b.isoformat(), "first_token_p50_ms": percentile(values["first"], 0.5),
                          "first_token_p95_ms": percentile(values["first"], 0.95),
                          "total_p50_ms": percentile(values["total"], 0.5),
                          "total_p95_ms": percentile(values["total"], 0.95)})
    return {"feedback_up": feedback[1], "feedback_down": feedback[-1],
            "ratio": ratio(feedback[1], feedback[1] + feedback[-1]), "latency_over_time": over_time}


def top_queries(events: list[dict], intents: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events:
        if e["kind"] == "question_asked":
            counts[intents[e["question_text"]]][0] += 1
        elif e["kind"] == "answer_completed" and e["question_text"] in intents:
            counts[intents[e["question_text"]]][1 if e["outcome"] != "declined" else 2] += 1
    return {intent: tuple(values) for intent, values in counts.items() if values[0] > 0}


def unanswered(events: list[dict], tz: ZoneInfo) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e in events:
        if e["kind"] == "answer_completed" and e["outcome"] in LOW:
            groups[(e["outcome"], normalised(e["question_text"]))].append(e)
    rows = []
    for (outcome, _), items in groups.items():
        latest = max(items, key=lambda e: e["occurred_at"])
        rows.append({"question": latest["question_text"], "count": len(items),
                     "last_asked_at": latest["occurred_at"].astimezone(tz).isoformat(), "outcome": outcome,
                     "conversation_id": str(latest["conversation_id"])})
    rows.sort(key=lambda r: (-r["count"], -datetime.fromisoformat(r["last_asked_at"]).timestamp(), r["outcome"],
                             r["question"]))
    return rows


def documents(events: list[dict], titles: dict[int, str]) -> dict[str, Any]:
    cited = Counter(d for e in events if e["kind"] == "answer_completed" for d in set(e.get("cited_document_ids", [])))
    return {"used": [{"document_id": d, "title": titles.get(d), "citations": n}
                     for d, n in sorted(cited.items(), key=lambda item: (-item[1], item[0]))],
            "never_cited": [{"document_id": d, "title": t}
                            for d, t in sorted(titles.items(), key=lambda item: (item[1], item[0])) if d not in cited]}


def embeds(events: list[dict], names: dict[int, str]) -> list[dict]:
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    column = {"widget_opened": "opens", "conversation_started": "conversations", "question_asked": "questions"}
    for e in events:
        if e.get("embed_id") is None or e["kind"] not in column:
            continue
        key = (e["embed_id"], e["origin"])
        row = rows.setdefault(key, {"embed_id": key[0], "embed_name": names[key[0]], "origin": key[1], "opens": 0,
                                    "conversations": 0, "questions": 0})
        row[column[e["kind"]]] += 1
    return [rows[key] for key in sorted(rows)]


def handoffs(events: list[dict]) -> list[dict]:
    counts = Counter(e["reason"] for e in events if e["kind"] == "handoff_requested")
    return [{"reason": r, "count": n} for r, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def local_range(start: date, end: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The API's reading of ?start=<date>&end=<date>: local midnight to the local midnight after `end`."""
    return (datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC),
            datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC))
