"""Visitor data rights (issue #18 item 5): export everything one visitor left in a workspace, or erase it.

A visitor is the widget's anonymous `Conversation.visitor_id` (docs/handoff.md "Visitor data rights"). Erasure deletes
their conversations with everything attached (messages, internal notes, the conversation's replay log, sequence and
answer lock in Redis) and asks the floors above, through `chat.signals.visitor_erasing`, to drop their copies
(analytics events and clustered question texts, widget rate counters). Both are recorded in the audit log by the
caller's service (`visitor_erase`, `visitor_export`) with the counts, never the visitor's words.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.services import audit_record
from chat.models import Conversation, Lead, Message
from chat.retention import _logs_delete
from chat.signals import visitor_erasing
from config.errors import NotFound, ValidationFailed

VISITOR_ID_MAX = 64  # Conversation.visitor_id


def _visitor_id_clean(visitor_id: str) -> str:
    value = (visitor_id or "").strip()
    if not value or len(value) > VISITOR_ID_MAX:
        raise ValidationFailed("A visitor id is 1 to 64 characters.", details={"field": "visitor_id"})
    return value


def _conversations(visitor_id: str):
    """The visitor's conversations: those of this visitor id, and — when a widget verified who the visitor is
    (identity verification: `verified_user_id`, signed with that embed's own secret) — every conversation of that
    same verified user of that same embed, from any other browser or device (a signed-in customer asking to be
    forgotten means all of it). Verified ids are per embed: user "42" of one widget is not user "42" of another."""
    from django.db.models import Q

    verified = set(Conversation.objects.filter(visitor_id=visitor_id).exclude(verified_user_id="")
                   .exclude(embed_id=None).values_list("embed_id", "verified_user_id"))
    where = Q(visitor_id=visitor_id)
    for embed_id, verified_user_id in verified:
        where |= Q(embed_id=embed_id, verified_user_id=verified_user_id)
    return Conversation.objects.filter(where).order_by("created_at", "pk")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def visitor_export(*, workspace: Any, actor: Any, visitor_id: str) -> dict[str, Any]:
    """Everything the workspace holds of one visitor, as one JSON-ready document: their conversations and every
    message the visitor could see or wrote (internal notes are the team's, not the visitor's, and stay out).
    Unknown visitor: NotFound (404), so a typo is not mistaken for "we hold nothing"."""
    visitor_id = _visitor_id_clean(visitor_id)
    conversations = list(_conversations(visitor_id))
    if not conversations:
        raise NotFound("No conversations of this visitor.")
    messages: dict[int, list[dict[str, Any]]] = {}
    for message in (Message.objects.filter(conversation__in=conversations).exclude(role="note")
                    .select_related("author").order_by("conversation_id", "pk")):
        messages.setdefault(message.conversation_id, []).append({
            "id": message.pk, "role": message.role, "content": message.content,
            "author_name": message.author.display_name if message.author_id and message.author else None,
            "feedback": message.feedback, "feedback_comment": message.feedback_comment,
            "created_at": _iso(message.created_at),
        })
    leads = {lead.conversation_id: {
        "name": lead.name, "email": lead.email, "phone": lead.phone, "custom_label": lead.custom_label,
        "custom_value": lead.custom_value, "stage": lead.stage, "created_at": _iso(lead.created_at),
        "updated_at": _iso(lead.updated_at),
    } for lead in Lead.objects.filter(conversation__in=conversations)}
    audit_record(workspace=workspace, actor=actor, action="visitor.exported", target=visitor_id,
                 data={"conversations": len(conversations)})
    return {
        "visitor_id": visitor_id,
        "exported_at": timezone.now().isoformat(),
        "conversations": [{
            "id": str(conversation.public_id), "channel": conversation.channel, "status": conversation.status,
            "title": conversation.title, "visitor_name": conversation.visitor_name,
            "visitor_email": conversation.visitor_email, "verified_user_id": conversation.verified_user_id,
            "origin": conversation.origin, "handoff_reason": conversation.handoff_reason,
            "metadata": conversation.metadata, "created_at": _iso(conversation.created_at),
            "last_message_at": _iso(conversation.last_message_at), "closed_at": _iso(conversation.closed_at),
            "lead": leads.get(conversation.pk), "messages": messages.get(conversation.pk, []),
        } for conversation in conversations],
    }


def visitor_erase(*, workspace: Any, actor: Any, visitor_id: str) -> dict[str, int]:
    """Erase one visitor from the current workspace schema. Returns {"conversations", "messages"} counts.
    The audit entry names the visitor id (a random pseudonym) and the counts, never what the visitor wrote.
    Unknown visitor: NotFound. Runs in one transaction with the receivers of `visitor_erasing`; the Redis logs go
    after the commit (a failure there leaves only logs that expire by themselves, CHAT_EVENT_LOG_TTL)."""
    visitor_id = _visitor_id_clean(visitor_id)
    schema = connection.schema_name
    with transaction.atomic():
        rows = list(_conversations(visitor_id).select_for_update().values_list("pk", "public_id", "visitor_id"))
        if not rows:
            raise NotFound("No conversations of this visitor.")
        ids = [pk for pk, _, _ in rows]
        message_count = Message.objects.filter(conversation_id__in=ids).count()
        by_visitor: dict[str, list[str]] = {}
        for _, public_id, row_visitor in rows:  # a verified person may have used several browsers (visitor ids)
            by_visitor.setdefault(row_visitor or visitor_id, []).append(str(public_id))
        for each_visitor, public_ids in by_visitor.items():
            visitor_erasing.send(sender=Conversation, visitor_id=each_visitor, public_ids=public_ids)
        Conversation.objects.filter(pk__in=ids).delete()  # messages and notes go with them (cascade)
        audit_record(workspace=workspace, actor=actor, action="visitor.erased", target=visitor_id,
                     data={"conversations": len(ids), "messages": message_count})
    _logs_delete(schema, [public_id for _, public_id, _ in rows])
    return {"conversations": len(ids), "messages": message_count}
