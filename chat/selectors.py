"""Reads of conversations and messages. Every function runs in the current workspace schema (the caller's)."""
from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
import time
import uuid
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import BooleanField, Count, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.expressions import RawSQL

from chat.models import AssistantSettings, Conversation, ConversationStatus, Message, MessageRole

logger = logging.getLogger(__name__)

HISTORY_TURNS = 6  # recent messages given to the answerer for follow-up questions ("and on a replica?")


def public_id_parse(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def conversation_get(*, public_id: Any) -> Conversation | None:
    parsed = public_id_parse(public_id)
    if parsed is None:
        return None
    return Conversation.objects.filter(public_id=parsed).first()


def conversation_list(
    *, status: str | None = None, channel: str | None = None, search: str | None = None,
    visitor_id: str | None = None,
) -> QuerySet[Conversation]:
    conversations = Conversation.objects.annotate(message_count=Count("messages")).order_by("-updated_at", "-id")
    if status:
        conversations = conversations.filter(status=status)
    if channel:
        conversations = conversations.filter(channel=channel)
    if visitor_id:
        conversations = conversations.filter(visitor_id=visitor_id)
    if search:
        # A subquery, not a join: joining messages again would multiply message_count.
        matching = Message.objects.filter(content__icontains=search).values("conversation_id")
        conversations = conversations.filter(
            Q(title__icontains=search) | Q(visitor_name__icontains=search) | Q(visitor_email__icontains=search)
            | Q(pk__in=matching)
        )
    return conversations


def message_list(*, conversation: Conversation, include_notes: bool = True) -> QuerySet[Message]:
    messages = conversation.messages.order_by("id")
    if not include_notes:
        messages = messages.exclude(role=MessageRole.NOTE)
    return messages


def message_get(*, conversation: Conversation, message_id: int) -> Message | None:
    return conversation.messages.filter(pk=message_id).first()


def message_by_client_id(*, conversation: Conversation, client_message_id: str) -> Message | None:
    if not client_message_id:
        return None
    return conversation.messages.filter(client_message_id=client_message_id, role=MessageRole.CUSTOMER).first()


def conversation_with_client_message(
    *, conversation_id: int, client_message_id: str, with_history: bool = False,
    answer_lock_key: int | None = None, also: dict[str, Any] | None = None,
) -> tuple[Conversation, Message | None]:
    """The conversation and its customer message of `client_message_id` (None: not stored yet), in one query when
    there is none (the usual case: a new message). `with_history`: the same query reads the recent turns too, as
    `conversation_history` gives them for a message stored after this read (`conversation.recent_history`): the
    answer of a new message needs them, and they cost no round trip of their own here. `answer_lock_key`: the
    same query takes the advisory half of the answer lock when the bot answers the conversation
    (chat.events.advisory_lock_expression), which the answer would take next. `also`: more annotations the caller
    reads in the same query (documents.curated.curated_version_columns)."""
    from chat.events import advisory_lock_expression, advisory_lock_taken

    conversations = Conversation.objects.all()
    if answer_lock_key is not None:
        sql, params = advisory_lock_expression(answer_lock_key, when_status=ConversationStatus.BOT.value)
        conversations = conversations.annotate(answer_lock_taken=RawSQL(sql, params, output_field=BooleanField()))
    if client_message_id:
        conversations = conversations.annotate(client_message_pk=Subquery(
            Message.objects.filter(conversation=OuterRef("pk"), client_message_id=client_message_id,
                                   role=MessageRole.CUSTOMER).values("pk")[:1]
        ))
    if with_history:
        conversations = conversations.annotate(recent_history_json=RawSQL(_HISTORY_SQL, _HISTORY_ROLES + [HISTORY_TURNS],
                                                                         output_field=TextField()))
    if also:
        conversations = conversations.annotate(**also)
    conversation = conversations.get(pk=conversation_id)
    if answer_lock_key is not None and conversation.answer_lock_taken:
        advisory_lock_taken(answer_lock_key)
    if with_history:
        conversation.recent_history = _history_rows(json.loads(conversation.recent_history_json or "[]"))
    found = getattr(conversation, "client_message_pk", None)
    return conversation, (Message.objects.get(pk=found) if found is not None else None)


# conversation_history's query, as a subquery of the conversation's row (newest `turns` first, then put in order).
_HISTORY_ROLES = [MessageRole.CUSTOMER.value, MessageRole.ASSISTANT.value, MessageRole.AGENT.value]
_HISTORY_SQL = f"""(SELECT coalesce(json_agg(json_build_array(h.role, h.content) ORDER BY h.id), '[]')::text
FROM (SELECT m.id, m.role, m.content FROM "{Message._meta.db_table}" m
      WHERE m.conversation_id = "{Conversation._meta.db_table}"."id" AND m.role IN (%s, %s, %s)
      ORDER BY m.id DESC LIMIT %s) h)"""


def _history_rows(recent: list[tuple[str, str]] | list[list[str]]) -> list[tuple[str, str]]:
    return [("user" if role == MessageRole.CUSTOMER else "assistant", content) for role, content in recent]


def reply_for(*, message: Message) -> Message | None:
    """The assistant's (or an agent's) answer to a customer message, if it has one."""
    return message.replies.filter(role__in=(MessageRole.ASSISTANT, MessageRole.AGENT)).order_by("id").first()


def conversation_history(*, conversation: Conversation, before_message_id: int, turns: int = HISTORY_TURNS) -> list[tuple[str, str]]:
    """The recent turns before a message, oldest first, as (role, content): roles "user" and "assistant" (a human
    agent's replies count as the assistant's side of the conversation)."""
    recent = list(
        conversation.messages.filter(
            pk__lt=before_message_id, role__in=(MessageRole.CUSTOMER, MessageRole.ASSISTANT, MessageRole.AGENT)
        ).order_by("-id").values_list("role", "content")[:turns]
    )
    recent.reverse()
    return _history_rows(recent)


# The answer path reads the assistant settings on every answer (persona, providers, the unanswered rule). They are
# kept per process and per workspace schema, checked against the workspace's settings version in Redis (one GET,
# instead of a query each time they are read); every write moves the version once it commits (the model's
# queryset, post_save / post_delete in chat.apps), so no process answers with settings older than the last commit
# it could have seen. The cache key of the version carries the schema (config.cache), and so does the local entry,
# which also names the workspace's id: one workspace's settings are never served to another, nor to a later workspace
# given the same schema (a slug deleted and signed up again) while Redis still held the old one's version.
ASSISTANT_SETTINGS_VERSION_KEY = "chat:assistant-settings:version"
# A process re-reads a workspace's settings at least every ASSISTANT_SETTINGS_TTL seconds (a version bump lost to a
# Redis blip heals itself) and keeps at most ASSISTANT_SETTINGS_CACHED_MAX workspaces' (thousands of tenants).
ASSISTANT_SETTINGS_TTL = 60.0
ASSISTANT_SETTINGS_CACHED_MAX = 2000
_assistant_settings: dict[str, tuple[str, AssistantSettings | None, float, int | None]] = {}
_assistant_settings_lock = threading.Lock()


def _assistant_settings_version() -> str | None:
    """The workspace's settings version; None when Redis can't say (then nothing is cached)."""
    try:
        version = cache.get(ASSISTANT_SETTINGS_VERSION_KEY)
        if version is None:  # never written, or Redis lost it: a fresh one, so nothing cached before matches
            cache.add(ASSISTANT_SETTINGS_VERSION_KEY, secrets.token_hex(8), timeout=None)
            version = cache.get(ASSISTANT_SETTINGS_VERSION_KEY)
        return str(version) if version is not None else None
    except Exception:
        logger.warning("chat: the assistant settings version is unavailable", exc_info=True)
        return None


def assistant_settings_changed() -> None:
    """Every process reads the workspace's settings again, once the current transaction commits. The schema is the
    one of the write, taken now: at commit the connection may be in another (an import's outer transaction)."""
    from config.cache import schema_keys

    schema = connection.schema_name

    def bump() -> None:
        try:
            with schema_keys(schema):
                cache.set(ASSISTANT_SETTINGS_VERSION_KEY, secrets.token_hex(8), timeout=None)
        except Exception:  # Redis is away: the version can't be read either, so nothing is served from the cache
            logger.warning("chat: could not move the assistant settings version", exc_info=True)
        _assistant_settings.pop(schema, None)

    transaction.on_commit(bump)


def assistant_settings_get() -> AssistantSettings | None:
    """The workspace's saved settings (None: it has saved none). A copy: callers may change it."""
    schema = connection.schema_name
    workspace_id = getattr(getattr(connection, "tenant", None), "pk", None)
    version = _assistant_settings_version()
    hit = _assistant_settings.get(schema)
    now = time.monotonic()
    if (version is not None and hit is not None and hit[0] == version and hit[3] == workspace_id
            and now - hit[2] < ASSISTANT_SETTINGS_TTL):
        row = hit[1]
    else:
        row = AssistantSettings.objects.order_by("id").first()
        if version is not None:
            with _assistant_settings_lock:
                if len(_assistant_settings) >= ASSISTANT_SETTINGS_CACHED_MAX:  # bounded with many workspaces
                    _assistant_settings.clear()
                _assistant_settings[schema] = (version, row, now, workspace_id)
    return copy.deepcopy(row) if row is not None else None


def assistant_settings_current() -> AssistantSettings:
    """The workspace's settings, or the defaults when it has saved none."""
    return assistant_settings_get() or AssistantSettings()


def conversation_counts() -> dict[str, int]:
    rows = Conversation.objects.values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


# --- the agents' inbox (issue #6) ----------------------------------------------------------------------------------
INBOX_TABS = ("waiting", "mine", "open", "closed")


def inbox_list(
    *, tab: str, user_id: int, search: str | None = None, channel: str | None = None, reason: str | None = None,
    unread_only: bool = False,
) -> QuerySet[Conversation]:
    """waiting: customers waiting for a person (oldest first: they waited longest); mine: held by `user_id`; open:
    everything not closed; closed."""
    from chat.models import ConversationStatus

    conversations = Conversation.objects.all()
    if tab == "waiting":
        conversations = conversations.filter(status=ConversationStatus.WAITING).order_by("handoff_at", "id")
    elif tab == "mine":
        conversations = conversations.filter(status=ConversationStatus.AGENT, assigned_agent_id=user_id)
    elif tab == "closed":
        conversations = conversations.filter(status=ConversationStatus.CLOSED)
    else:
        conversations = conversations.exclude(status=ConversationStatus.CLOSED)
    if tab != "waiting":
        conversations = conversations.order_by("-updated_at", "-id")
    if channel:
        conversations = conversations.filter(channel=channel)
    if reason:
        conversations = conversations.filter(handoff_reason=reason)
    if unread_only:
        conversations = conversations.filter(agent_unread__gt=0)
    if search:
        matching = Message.objects.filter(content__icontains=search).exclude(role=MessageRole.NOTE).values("conversation_id")
        conversations = conversations.filter(
            Q(title__icontains=search) | Q(visitor_name__icontains=search) | Q(visitor_email__icontains=search)
            | Q(pk__in=matching)
        )
    return conversations


def inbox_counts(*, user_id: int) -> dict[str, dict[str, int]]:
    """Per tab: how many conversations, and how many with unread customer messages."""
    from django.db.models import Sum

    counts: dict[str, dict[str, int]] = {}
    for tab in INBOX_TABS:
        row = inbox_list(tab=tab, user_id=user_id).order_by().aggregate(n=Count("id"), unread=Sum("agent_unread"))
        counts[tab] = {"count": row["n"] or 0, "unread": row["unread"] or 0}
    return counts
