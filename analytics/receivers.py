"""Receivers of the lower floors' signals (chat, documents, embeds): one INSERT each, never raising into the sender.

The senders send after commit (transaction.on_commit), inside the workspace's schema; the insert lands there. No
embedding, no lookups beyond what the signal carries: question clustering runs later, in the beat task.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from analytics import services, webhooks
from analytics.models import EventKind

logger = logging.getLogger(__name__)


def _swallowing(receiver: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(receiver)
    def wrapped(sender: Any = None, **kwargs: Any) -> None:
        try:
            receiver(**kwargs)  # event_record runs in its own (sub)transaction: a failure stays ours
        except Exception:  # analytics must never break an answer, an upload or a widget
            logger.exception("analytics: could not record %s", receiver.__name__)

    return wrapped


def _conversation_fields(conversation: Any) -> dict[str, Any]:
    return {"conversation_id": getattr(conversation, "public_id", None), "embed_id": getattr(conversation, "embed_id", None),
            "origin": getattr(conversation, "origin", "") or "", "channel": getattr(conversation, "channel", "") or ""}


@_swallowing
def on_conversation_started(*, conversation: Any, channel: str = "", **_: Any) -> None:
    services.event_record(kind=EventKind.CONVERSATION_STARTED, **{**_conversation_fields(conversation),
                                                                  "channel": channel or conversation.channel},
                          visitor_id=conversation.visitor_id or "")


@_swallowing
def on_question_asked(*, conversation: Any, message: Any, **_: Any) -> None:
    services.event_record(kind=EventKind.QUESTION_ASKED, **_conversation_fields(conversation), message_id=message.pk,
                          question_text=message.content, occurred_at=message.created_at)


@_swallowing
def on_answer_completed(*, conversation: Any, message: Any, **_: Any) -> None:
    question = message.reply_to if message.reply_to_id else None
    services.event_record(
        kind=EventKind.ANSWER_COMPLETED, **_conversation_fields(conversation), message_id=message.pk,
        outcome=services.outcome_of(answered=message.answered, confidence=message.confidence),
        confidence=message.confidence, latency_first_token_ms=message.latency_first_token_ms,
        latency_total_ms=message.latency_total_ms, tokens_in=message.tokens_in, tokens_out=message.tokens_out,
        cost=message.cost, provider=message.provider, cited_document_ids=services.cited_document_ids(message.citations),
        question_text=question.content if question is not None else "", occurred_at=message.created_at,
    )


@_swallowing
def on_feedback_given(*, conversation: Any, message: Any, value: int, **_: Any) -> None:
    services.event_record(kind=EventKind.FEEDBACK_GIVEN, **_conversation_fields(conversation), message_id=message.pk,
                          feedback=int(value))


@_swallowing
def on_handoff_requested(*, conversation: Any, reason: str = "", **_: Any) -> None:
    services.event_record(kind=EventKind.HANDOFF_REQUESTED, **_conversation_fields(conversation),
                          reason=str(reason or "asked"))


@_swallowing
def on_agent_joined(*, conversation: Any, agent: Any = None, **_: Any) -> None:
    services.event_record(kind=EventKind.AGENT_JOINED, **_conversation_fields(conversation))


@_swallowing
def on_conversation_closed(*, conversation: Any, closed_by: Any = None, **_: Any) -> None:
    services.event_record(kind=EventKind.CONVERSATION_CLOSED, **_conversation_fields(conversation))


@_swallowing
def on_widget_opened(*, embed: Any, origin: str = "", visitor_id: str = "", **_: Any) -> None:
    services.event_record(kind=EventKind.WIDGET_OPENED, embed_id=embed.pk, origin=origin or "",
                          visitor_id=visitor_id or "")


@_swallowing
def on_document_ingested(*, document: Any, **_: Any) -> None:
    services.event_record(kind=EventKind.DOCUMENT_INGESTED, document_id=document.pk)


@_swallowing
def on_document_failed(*, document: Any, error_code: str = "", **_: Any) -> None:
    services.event_record(kind=EventKind.DOCUMENT_FAILED, document_id=document.pk, reason=str(error_code or ""))


@_swallowing
def on_conversations_purged(*, public_ids: list[str], **_: Any) -> None:
    """The workspace's retention rule deleted these conversations: keep the counts, forget what the customers wrote."""
    from analytics.models import Event

    Event.objects.filter(conversation_id__in=public_ids).exclude(question_text="").update(question_text="")
    webhooks.webhook_deliveries_forget_conversations(public_ids=public_ids)


# --- outbound webhooks (analytics.webhooks): the same signals, one cached subscription lookup each --------------------
def _conversation_data(conversation: Any) -> dict[str, Any]:
    return {"id": str(getattr(conversation, "public_id", "") or ""), "channel": getattr(conversation, "channel", ""),
            "status": getattr(conversation, "status", ""), "embed_id": getattr(conversation, "embed_id", None),
            "visitor_id": getattr(conversation, "visitor_id", "") or "",
            "created_at": _iso(getattr(conversation, "created_at", None))}


def _message_data(message: Any) -> dict[str, Any]:
    return {"id": message.pk, "role": message.role, "content": message.content, "created_at": _iso(message.created_at),
            "answered": message.answered, "confidence": message.confidence,
            "citations": message.citations if isinstance(message.citations, list) else [],
            "author_id": message.author_id}


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _webhook(event_type: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., None]]:
    def wrap(build: Callable[..., dict[str, Any]]) -> Callable[..., None]:
        @functools.wraps(build)
        def receiver(sender: Any = None, **kwargs: Any) -> None:
            try:
                webhooks.webhook_event_emit(event_type=event_type, data=build(**kwargs))
            except Exception:  # a webhook must never break an answer, an upload or a widget
                logger.exception("webhooks: could not queue %s", event_type)

        return receiver

    return wrap


@_webhook("conversation.created")
def webhook_conversation_created(*, conversation: Any, **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation)}


@_webhook("message.created")
def webhook_message_created(*, conversation: Any, message: Any, **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation), "message": _message_data(message)}


@_webhook("handoff.requested")
def webhook_handoff_requested(*, conversation: Any, reason: str = "", **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation), "reason": str(reason or "asked")}


@_webhook("conversation.closed")
def webhook_conversation_closed(*, conversation: Any, closed_by: Any = None, **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation), "closed_by_id": getattr(closed_by, "pk", None)}


@_webhook("feedback.received")
def webhook_feedback_received(*, conversation: Any, message: Any, value: int, **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation), "message_id": message.pk, "value": int(value),
            "comment": getattr(message, "feedback_comment", "") or ""}


def _document_data(document: Any) -> dict[str, Any]:
    return {"id": document.pk, "title": getattr(document, "title", ""), "status": getattr(document, "status", ""),
            "content_type": getattr(document, "content_type", ""), "source_url": getattr(document, "source_url", "")}


@_webhook("document.indexed")
def webhook_document_indexed(*, document: Any, **_: Any) -> dict[str, Any]:
    return {"document": _document_data(document)}


@_webhook("document.failed")
def webhook_document_failed(*, document: Any, error_code: str = "", **_: Any) -> dict[str, Any]:
    return {"document": _document_data(document), "error_code": str(error_code or ""),
            "error_message": getattr(document, "error_message", "") or ""}


@_webhook("lead.captured")
def webhook_lead_captured(*, conversation: Any, lead: Any, created: bool = True, **_: Any) -> dict[str, Any]:
    return {"conversation": _conversation_data(conversation), "created": bool(created), "lead": {
        "name": lead.name, "email": lead.email, "phone": lead.phone, "custom_label": lead.custom_label,
        "custom_value": lead.custom_value, "stage": lead.stage, "embed_id": lead.embed_id,
        "created_at": _iso(lead.created_at), "updated_at": _iso(lead.updated_at)}}


@_webhook("source.synced")
def webhook_source_synced(*, source: Any, run: Any, **_: Any) -> dict[str, Any]:
    counters = ("discovered", "fetched", "indexed", "unchanged", "failed", "skipped", "added", "changed", "removed")
    return {"source": {"id": source.pk, "url": source.url, "title": source.title, "schedule": source.schedule},
            "run": {"id": run.pk, "kind": run.kind, "status": run.status, "trigger": run.trigger,
                    "stop_code": run.stop_code, "started_at": _iso(run.started_at),
                    "finished_at": _iso(run.finished_at), **{name: getattr(run, name) for name in counters}}}


def receivers_connect() -> None:
    from chat import signals as chat_signals
    from documents import events as document_signals
    from embeds import signals as embed_signals

    pairs = [
        (chat_signals.conversation_started, on_conversation_started),
        (chat_signals.question_asked, on_question_asked),
        (chat_signals.answer_completed, on_answer_completed),
        (chat_signals.feedback_given, on_feedback_given),
        (chat_signals.handoff_requested, on_handoff_requested),
        (chat_signals.agent_joined, on_agent_joined),
        (chat_signals.conversation_closed, on_conversation_closed),
        (chat_signals.conversations_purged, on_conversations_purged),
        (embed_signals.widget_opened, on_widget_opened),
        (document_signals.document_ingested, on_document_ingested),
        (document_signals.document_failed, on_document_failed),
        (chat_signals.conversation_started, webhook_conversation_created),
        (chat_signals.question_asked, webhook_message_created),
        (chat_signals.answer_completed, webhook_message_created),
        (chat_signals.agent_replied, webhook_message_created),
        (chat_signals.handoff_requested, webhook_handoff_requested),
        (chat_signals.conversation_closed, webhook_conversation_closed),
        (chat_signals.feedback_given, webhook_feedback_received),
        (document_signals.document_ingested, webhook_document_indexed),
        (document_signals.document_failed, webhook_document_failed),
        (document_signals.source_synced, webhook_source_synced),
        (chat_signals.lead_captured, webhook_lead_captured),
    ]
    for signal, receiver in pairs:
        signal.connect(receiver, dispatch_uid=f"analytics.{receiver.__name__}", weak=False)


def on_visitor_erasing(*, visitor_id: str, public_ids: list[str], **_: Any) -> None:
    """Not swallowed: an erasure that could not reach analytics must fail and roll back, not half-succeed."""
    services.visitor_events_erase(visitor_id=visitor_id, conversation_ids=public_ids)
    webhooks.webhook_deliveries_forget_conversations(public_ids=public_ids)  # their payloads hold what was said


def erasure_receivers_connect() -> None:
    from chat import signals as chat_signals

    chat_signals.visitor_erasing.connect(on_visitor_erasing, dispatch_uid="analytics.on_visitor_erasing", weak=False)
