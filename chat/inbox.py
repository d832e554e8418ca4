"""The agents' side of the handoff that is not a conversation's own stream (docs/handoff.md):

* **the inbox feed**: conversation-level summaries (a customer is waiting, a new message, assigned, closed) and the
  staff-only internal notes, sent to the workspace's inbox group on the channel layer. Low rate and lossy-tolerant
  (the inbox reloads its lists on reconnect), which is what the channel layer is for (docs/websocket-protocol.md);
  the group name carries the schema (`ws.<schema>.inbox`), so one workspace's agents never hear another's.
* **presence**: which agents have the inbox open, a Redis sorted set per workspace (`<prefix>:chat:presence:<schema>`,
  member = user id, score = when the entry expires); inbox sockets refresh it on every ping, entries older than
  `PRESENCE_TTL` seconds count as offline (a crashed process leaves nothing behind for long).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connection, transaction
from django.db.models import OuterRef, Subquery

from chat import deferred
from chat.events import _prefix, async_client, sync_client
from chat.models import Conversation, Message, MessageRole
from config.channels_layer import GroupSender, workspace_group

logger = logging.getLogger(__name__)

PRESENCE_TTL = 60  # seconds; inbox sockets ping every 20
INBOX_EVENT_TYPE = "inbox.event"


def inbox_group(schema_name: str) -> str:
    return workspace_group(schema_name, "inbox")


def presence_key(schema_name: str) -> str:
    return f"{_prefix()}:presence:{schema_name}"


# --- presence ------------------------------------------------------------------------------------------------------
async def agent_presence_touch(*, schema_name: str, user_id: int) -> None:
    client = async_client()
    key = presence_key(schema_name)
    await client.zadd(key, {str(user_id): time.time() + PRESENCE_TTL})
    await client.expire(key, PRESENCE_TTL * 2)


async def agent_presence_clear(*, schema_name: str, user_id: int) -> None:
    await async_client().zrem(presence_key(schema_name), str(user_id))


def agents_online(*, schema_name: str | None = None) -> list[int]:
    """Ids of the agents with the inbox open now (sync; services call it)."""
    key = presence_key(schema_name or connection.schema_name)
    try:
        client = sync_client()
        now = time.time()
        client.zremrangebyscore(key, "-inf", now)
        return sorted(int(member) for member in client.zrangebyscore(key, now, "+inf"))
    except Exception:  # Redis is down: nobody can be shown as online
        logger.warning("chat: presence unavailable", exc_info=True)
        return []


# --- the feed --------------------------------------------------------------------------------------------------------
_sender = GroupSender("inbox-events")


def _user_brief(user_id: int | None) -> dict[str, Any] | None:
    if not user_id:
        return None
    from accounts.models import User

    user = User.objects.filter(pk=user_id).first()
    return {"id": user_id, "name": user.display_name if user else ""}


def _last_message(conversation: Conversation) -> dict[str, Any] | None:
    if hasattr(conversation, "last_role"):  # read with the conversation (conversation_with_last_message)
        if conversation.last_role is None:
            return None
        return {"role": conversation.last_role, "content": conversation.last_content or ""}
    return conversation.messages.exclude(role=MessageRole.NOTE).order_by("-id").values("role", "content").first()


def conversation_with_last_message(conversation_pk: int) -> Conversation | None:
    """The conversation with its last message (not an internal note) read in the same query."""
    last = Message.objects.filter(conversation=OuterRef("pk")).exclude(role=MessageRole.NOTE).order_by("-id")
    return Conversation.objects.filter(pk=conversation_pk).annotate(
        last_role=Subquery(last.values("role")[:1]), last_content=Subquery(last.values("content")[:1]),
    ).first()


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    """What the inbox lists of a conversation (the HTTP list and the live feed use the same shape)."""
    return _summary(conversation, _last_message(conversation))


def _summary(conversation: Conversation, last: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "status": conversation.status,
        "channel": conversation.channel,
        "title": conversation.title,
        "visitor_name": conversation.visitor_name,
        "visitor_email": conversation.visitor_email,
        "handoff_reason": conversation.handoff_reason or None,
        "assigned_agent": _user_brief(conversation.assigned_agent_id),
        "unread": conversation.agent_unread,
        "last_message": {"role": last["role"], "content": last["content"][:200]} if last else None,
        "updated_at": conversation.updated_at.isoformat() if conversation.updated_at else None,
        "handoff_at": conversation.handoff_at.isoformat() if conversation.handoff_at else None,
    }


def inbox_send(*, schema_name: str, payload: dict[str, Any]) -> None:
    """Push an event to the workspace's inbox sockets; a failure to push never fails the caller."""
    try:
        _sender.send(inbox_group(schema_name), {"type": INBOX_EVENT_TYPE, "payload": payload})
    except Exception:
        logger.warning("chat: could not push an inbox event", exc_info=True)


def inbox_publish_on_commit(conversation: Conversation, event: str, *, last: Message | None = None,
                            **extra: Any) -> None:
    """After the transaction commits: the conversation's summary, as it is then, to every inbox of the workspace.
    With `last`: `conversation` holds its row as the write of message `last` returned it (an answer's writes,
    chat.services.SUMMARY_FIELDS), and the summary is made of that now instead of being read again at commit."""
    schema = connection.schema_name
    conversation_pk = conversation.pk
    written: dict[str, Any] | None = None
    if last is not None:
        written = _summary(conversation, {"role": last.role, "content": last.content})

    def send() -> None:
        if written is not None:
            summary = written
        else:
            fresh = conversation_with_last_message(conversation_pk)
            if fresh is None:
                return
            summary = conversation_summary(fresh)
        inbox_send(schema_name=schema, payload={
            "type": "conversation", "event": event, "conversation": summary, **extra,
        })

    if extra:
        transaction.on_commit(send)
    else:  # inside an answer, once at its end (the question's and the answer's "message": one summary)
        deferred.inbox_send_on_commit((conversation_pk, event), send)


def note_payload(note: Message) -> dict[str, Any]:
    from chat import protocol

    return protocol.message_payload(note)
