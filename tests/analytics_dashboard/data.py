"""Data for the dashboard tests, through the product's own actions: chat's services (conversation, questions,
answers, feedback, internal note, handoff) and the embed's `widget_opened` signal. Analytics records its events from
their signals (analytics.receivers) — the same path as production; clustering runs as the beat task would."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from django_tenants.utils import tenant_context

FORMULA_QUESTION = "=HYPERLINK(\"http://evil.example\",\"click\")"
ORIGIN = "https://shop.example"


@dataclass
class Seeded:
    marker: str
    embed: Any
    conversation: Any
    questions: list[str] = field(default_factory=list)
    note_text: str = ""


def seed_workspace(workspace: Any, owner: Any, *, marker: str | None = None) -> Seeded:
    """One widget conversation: three questions (answered, declined, low confidence — the last one formula-like),
    their answers, a thumbs-up, an internal note and a handoff."""
    from analytics.services import questions_cluster
    from chat import handoff
    from chat import services as chat_services
    from embeds import signals as embed_signals
    from embeds.models import Embed
    from embeds.services import embed_create

    marker = marker or f"M{secrets.token_hex(4)}"
    with tenant_context(workspace):
        embed = embed_create(name=f"Shop widget {marker}", allowed_origins=[ORIGIN])
        embed_signals.widget_opened.send(sender=Embed, embed=embed, origin=ORIGIN, visitor_id=f"v-{marker}")
        conversation = chat_services.conversation_start(
            channel="widget", embed_id=embed.pk, origin=ORIGIN, visitor_id=f"v-{marker}",
            visitor_name=f"Visitor {marker}",
        )
        asked = [f"How long is the return window {marker}?", f"Do you ship to Mars {marker}?", FORMULA_QUESTION]
        confidences = [0.9, None, 0.2]
        first_answer = None
        for index, (text, confidence) in enumerate(zip(asked, confidences)):
            question, _ = chat_services.customer_message_post(conversation=conversation, text=text)
            answered = confidence is not None
            answer = chat_services.assistant_answer_persist(
                conversation=conversation, reply_to=question,
                result={"answer": f"Answer {index} {marker}" if answered else "I don't know.", "answered": answered,
                        "confidence": confidence,
                        "citations": [{"document_id": 1, "title": f"Returns {marker}"}] if answered else [],
                        "tokens_in": 100, "tokens_out": 20, "cost": "0.001"},
                latency_first_token_ms=200 + index * 100, latency_total_ms=900 + index * 100,
            )
            first_answer = first_answer or answer
        chat_services.message_feedback_set(conversation=conversation, message_id=first_answer.pk, value=1)
        note_text = f"Internal note {marker}: customer is a VIP"
        handoff.internal_note_add(conversation=conversation, author=owner, text=note_text)
        handoff.conversation_handoff_request(conversation=conversation, reason="asked")
        questions_cluster()  # what the beat task does: top questions are grouped by meaning
    return Seeded(marker=marker, embed=embed, conversation=conversation, questions=asked, note_text=note_text)
