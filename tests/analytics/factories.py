"""Fixture analytics events: plain dicts (what the test expects) recorded through analytics.services.event_record,
the function the signal receivers call."""
from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

# question text -> intent (what the clustering is expected to group together)
QUESTIONS: dict[str, str] = {
    "How do I reset my router?": "reset",
    "How can I reset my router": "reset",
    "how do i  reset my router": "reset",
    "How much does shipping cost?": "shipping",
    "What is the shipping cost?": "shipping",
    "Can I return an item?": "returns",
    "How do I return an item?": "returns",
    "Do you ship to Canada?": "canada",
    "Where is my order?": "order",
    "Where is my order??": "order",
    "How do I change my password?": "password",
}
REASONS = ("asked", "unanswered", "rule")
OUTCOMES = ("answered", "answered", "answered", "low_confidence", "declined")


def event(kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "occurred_at": at, **fields}


def fixture_events(*, embeds: list[tuple[int, str]], documents: list[int], seed: int = 7) -> list[dict[str, Any]]:
    """A realistic mix around the 2026 DST changes of America/New_York (03-08 and 11-01), with events placed on the
    boundaries that matter (local midnights, the DST hours, Kolkata's half hours)."""
    rng = random.Random(seed)
    windows = [(datetime(2026, 3, 6, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)),
               (datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))]
    moments: list[datetime] = []
    for start, end in windows:
        span = int((end - start).total_seconds())
        moments += [start + timedelta(seconds=rng.randrange(span)) for _ in range(110)]
    # Boundaries: New York midnights (05:00Z in winter, 04:00Z in summer), the DST hours, Kolkata midnight (18:30Z).
    for text in ("2026-03-08T04:59:59", "2026-03-08T05:00:00", "2026-03-08T06:59:59", "2026-03-08T07:00:00",
                 "2026-03-09T03:59:59", "2026-03-09T04:00:00", "2026-03-07T18:29:59", "2026-03-07T18:30:00",
                 "2026-11-01T05:30:00", "2026-11-01T06:30:00", "2026-11-01T03:59:59", "2026-11-01T04:00:00",
                 "2026-11-02T04:59:59", "2026-11-02T05:00:00"):
        moments.append(datetime.fromisoformat(text).replace(tzinfo=UTC))
    texts = list(QUESTIONS)
    events: list[dict[str, Any]] = []
    for at in moments:
        embed_id, origin = rng.choice([(None, ""), *embeds])
        conversation = uuid.uuid4()
        common = {"embed_id": embed_id, "origin": origin, "conversation_id": conversation}
        if embed_id is not None:
            events.append(event("widget_opened", at - timedelta(seconds=2), embed_id=embed_id, origin=origin))
        events.append(event("conversation_started", at, **common))
        text = rng.choice(texts)
        events.append(event("question_asked", at, question_text=text, **common))
        outcome = rng.choice(OUTCOMES)
        answer_at = at + timedelta(milliseconds=rng.randrange(50, 4000))
        first = rng.choice([None, rng.randrange(0, 3000), rng.randrange(1, 64), 1024])
        events.append(event(
            "answer_completed", answer_at, outcome=outcome, question_text=text,
            latency_first_token_ms=first, latency_total_ms=rng.randrange(100, 9000),
            tokens_in=rng.randrange(10, 500), tokens_out=rng.randrange(5, 300),
            cost=Decimal(rng.randrange(0, 5000)) / Decimal(1_000_000), provider=rng.choice(["builtin", "openai"]),
            cited_document_ids=rng.sample(documents, rng.randrange(0, len(documents) + 1)) if outcome != "declined"
            else [], **common,
        ))
        roll = rng.random()
        if roll < 0.4:
            events.append(event("feedback_given", answer_at + timedelta(seconds=5), feedback=rng.choice([1, 1, -1, 0]),
                                **common))
        elif roll < 0.55:
            events.append(event("handoff_requested", answer_at + timedelta(seconds=3), reason=rng.choice(REASONS),
                                **common))
    events.append(event("document_ingested", datetime(2026, 3, 7, 12, tzinfo=UTC), document_id=documents[0]))
    # The one event of a quiet day (2026-07-15).
    events.append(event("answer_completed", datetime(2026, 7, 15, 12, 34, 56, tzinfo=UTC), outcome="declined",
                        question_text="Do you sell gift cards?", latency_first_token_ms=777, latency_total_ms=1500,
                        tokens_in=3, tokens_out=4, cost=Decimal("0.000100"), conversation_id=uuid.uuid4(),
                        embed_id=None, origin=""))
    return events


def events_record(events: list[dict[str, Any]]) -> None:
    """Record the fixture events in the current workspace schema."""
    from analytics.services import event_record

    for item in events:
        event_record(**item)
