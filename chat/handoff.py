"""Human handoff (issue #6; docs/handoff.md): a conversation waits for a person, an agent joins, replies, adds
internal notes, hands back to the bot, assigns it to a colleague, closes it.

Every function runs in the current workspace schema (the caller's) and is an atomic action: the state change is
made under `select_for_update`, and its events go out *on commit* — the customer-visible ones through the
conversation's event log (the same seq stream as the bot's answers, chat/events.py), the staff-only ones (summaries
for the inbox, internal notes) to the workspace's inbox group (chat/inbox.py). Internal notes never enter the
conversation's log, so no customer socket can ever receive one.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
import zoneinfo
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from chat import inbox, protocol, selectors, signals
from chat.events import ConversationLog
from chat.models import Conversation, ConversationStatus, Message, MessageRole, OfficeHours
from config.errors import Conflict, ErrorCode, NotFound, PermissionDenied, ValidationFailed

logger = logging.getLogger(__name__)


class HandoffReason:
    ASKED = "asked"  # the "talk to a person" button (or the API)
    KEYWORD = "keyword"  # the customer asked for a person in words
    UNANSWERED = "unanswered"  # the workspace's rule: the bot could not answer N times in a row
    AGENT = "agent"  # an agent took the conversation over from the bot


# --- asking for a person in words ------------------------------------------------------------------------------------
# Deliberately narrow: a request for a person, not any mention of one ("my agent said..." must not hand off).
_HUMAN_REQUEST_PATTERNS = [
    # English
    r"\b(talk|speak|chat|connect me|put me through)\b.{0,20}\b(human|person|agent|someone|somebody|representative|"
    r"operator|real person|staff|support team|customer service)\b",
    r"\b(real|live|actual)\s+(human|person|agent)\b",
    r"\bhuman\s+(agent|being|please)\b",
    r"^\s*(agent|human|operator|representative)\s*(please|pls)?\s*[.!?]*\s*$",
    r"\b(i\s+)?(want|need|would like)\s+(a|an|to\s+talk\s+to\s+a)\s+(human|person|agent|representative)\b",
    # German
    r"\b(mit\s+)?(einem|einer)\s+(menschen|mitarbeiter(in)?|person|berater(in)?)\s+(sprechen|reden|chatten)\b",
    r"\becht(e|en)\s+(mensch|person)\b",
    # French
    r"\b(parler|discuter)\s+(a|avec)\s+(un|une|quelqu'un)\s*(humain|personne|agent|conseiller|conseillere|"
    r"vrai)?\b",
    # Spanish
    r"\b(hablar|chatear)\s+con\s+(un|una|alguien)\s*(humano|persona|agente|asesor|operador)?\b",
    r"\b(agente|persona)\s+real\b",
    # Italian / Portuguese / Dutch
    r"\bparlare\s+con\s+(un|una)\s+(operatore|persona|umano)\b",
    r"\bfalar\s+com\s+(um|uma|alguem)\s*(atendente|humano|pessoa)?\b",
    r"\b(spreken|praten)\s+met\s+(een\s+)?(mens|medewerker|persoon)\b",
]
_HUMAN_REQUEST_RE = re.compile("|".join(f"(?:{p})" for p in _HUMAN_REQUEST_PATTERNS), re.IGNORECASE)


def _fold(text: str) -> str:
    """Lower case without accents ("à" → "a"), so the patterns stay ASCII."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("’", "'")


def text_asks_for_human(text: str) -> bool:
    """A clear request for a person, in a few languages ("talk to a human", "real person", "mit einem Menschen
    sprechen", "parler à un conseiller", "hablar con un agente")."""
    return bool(text) and len(text) <= 500 and _HUMAN_REQUEST_RE.search(_fold(text)) is not None


# --- office hours and who is online -----------------------------------------------------------------------------------
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def office_hours_get() -> OfficeHours | None:
    return OfficeHours.objects.order_by("id").first()


NOTIFY_AFTER_MAX = 1800  # seconds; a Celery countdown must stay well below the broker's visibility timeout


def office_hours_set(*, enabled: bool, timezone_name: str, weekly_hours: dict[str, list[list[str]]],
                     notify_agents: bool | None = None, notify_after_seconds: int | None = None,
                     daily_digest: bool | None = None) -> OfficeHours:
    """Save the workspace's office hours; the notification settings (chat.notifications) change only when given."""
    try:
        zoneinfo.ZoneInfo(timezone_name)
    except Exception:  # not found, or not a valid key at all (a path, a NUL, ...)
        raise ValidationFailed("Unknown time zone.", details={"fields": {"timezone": ["An IANA name, e.g. Europe/Berlin."]}}) from None
    clean: dict[str, list[list[str]]] = {}
    for day, spans in (weekly_hours or {}).items():
        if day not in WEEKDAYS or not isinstance(spans, list):
            raise ValidationFailed("Unknown day.", details={"fields": {"weekly_hours": [f"Days are {WEEKDAYS}."]}})
        clean[day] = []
        for span in spans:
            try:
                start, end = (dt.time.fromisoformat(span[0]), dt.time.fromisoformat(span[1]))
            except (TypeError, ValueError, IndexError):
                raise ValidationFailed("Hours are [\"HH:MM\", \"HH:MM\"].", details={"fields": {"weekly_hours": [day]}}) from None
            if end <= start:
                raise ValidationFailed("A span must end after it starts.", details={"fields": {"weekly_hours": [day]}})
            clean[day].append([start.strftime("%H:%M"), end.strftime("%H:%M")])
    if notify_after_seconds is not None and not 0 <= notify_after_seconds <= NOTIFY_AFTER_MAX:
        raise ValidationFailed(f"The delay is 0 to {NOTIFY_AFTER_MAX} seconds.",
                               details={"fields": {"notify_after_seconds": [f"0 to {NOTIFY_AFTER_MAX}."]}})
    hours = office_hours_get() or OfficeHours()
    hours.enabled, hours.timezone, hours.weekly_hours = enabled, timezone_name, clean
    if notify_agents is not None:
        hours.notify_agents = notify_agents
    if notify_after_seconds is not None:
        hours.notify_after_seconds = notify_after_seconds
    if daily_digest is not None:
        hours.daily_digest = daily_digest
    hours.save()
    return hours


def office_hours_open(hours: OfficeHours | None, *, now: dt.datetime | None = None) -> bool:
    """Within the workspace's weekly hours, in its time zone. No hours configured (or disabled): always open."""
    if hours is None or not hours.enabled:
        return True
    try:
        zone = zoneinfo.ZoneInfo(hours.timezone)
    except Exception:
        zone = zoneinfo.ZoneInfo("UTC")
    local = (now or timezone.now()).astimezone(zone)
    spans = (hours.weekly_hours or {}).get(WEEKDAYS[local.weekday()]) or []
    clock = local.time().replace(tzinfo=None)
    for span in spans:
        try:
            if dt.time.fromisoformat(span[0]) <= clock < dt.time.fromisoformat(span[1]):
                return True
        except (TypeError, ValueError, IndexError):
            continue
    return False


def handoff_availability(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """What the customer is told when they start waiting: is anybody there, and if not, leave an email."""
    open_now = office_hours_open(office_hours_get(), now=now)
    online = len(inbox.agents_online()) if open_now else 0
    available = open_now and online > 0
    return {"office_hours_open": open_now, "agents_online": online, "available": available,
            "ask_email": not available}


# --- internals ----------------------------------------------------------------------------------------------------
def _locked(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def _agent_brief(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "name": user.display_name}


def _system_message(conversation: Conversation, text: str, *, author: Any = None) -> Message:
    message = Message.objects.create(
        conversation=conversation, role=MessageRole.SYSTEM, content=text,
        author=author if getattr(author, "pk", None) else None,
    )
    return message


def _append_on_commit(conversation: Conversation, events: list[dict[str, Any]], messages: dict[int, Message]) -> None:
    """Append `events` to the conversation's log after commit; `messages` maps an event's index to the message it
    carries, whose seq is then recorded (as for the bot's answers)."""
    log = ConversationLog.of(connection.schema_name, conversation)
    conversation_pk = conversation.pk

    def send() -> None:
        from chat.services import message_seqs_record

        try:
            appended = log.append_sync(events)
        except Exception:  # the change stands; sockets see it on their next reload
            logger.exception("chat: could not append %s", [event["type"] for event in events])
            return
        seqs = {messages[i].pk: seq for i, (seq, _body) in enumerate(appended) if i in messages}
        if seqs:
            message_seqs_record(conversation=Conversation(pk=conversation_pk), seqs=seqs)
            for i, message in messages.items():
                message.seq = seqs.get(message.pk, message.seq)

    transaction.on_commit(send)


def _signal_on_commit(signal: Any, **kwargs: Any) -> None:
    def send() -> None:
        try:
            signal.send(sender=Conversation, **kwargs)
        except Exception:  # receivers must never break the sender (chat/signals.py)
            logger.exception("chat: a receiver of %s failed", signal)

    transaction.on_commit(send)


def _require_person(agent: Any) -> None:
    if not getattr(agent, "pk", None):
        raise PermissionDenied("Only a person can do this (not an API key).", details={"permission": "conversations.handle"})


def _holder_conflict(conversation: Conversation) -> Conflict:
    holder = inbox._user_brief(conversation.assigned_agent_id)
    name = holder["name"] if holder else "someone else"
    return Conflict(f"{name} is already handling this conversation.", code=ErrorCode.CONVERSATION_TAKEN,
                    details={"agent": holder})


# --- the customer asks for a person ----------------------------------------------------------------------------------
def conversation_handoff_request(*, conversation: Conversation, reason: str = HandoffReason.ASKED) -> Conversation:
    """The conversation waits for an agent (from `bot`; idempotent otherwise). The customer is told what happens next
    (`status {status: waiting, reason, next: {...}}`): someone will join, or nobody is there now — leave an email."""
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == ConversationStatus.CLOSED:
            raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
        if conversation.status != ConversationStatus.BOT:
            return conversation  # already waiting for, or talking to, a person
        conversation.status = ConversationStatus.WAITING
        conversation.handoff_reason = reason[:40]
        conversation.handoff_at = timezone.now()
        conversation.save(update_fields=["status", "handoff_reason", "handoff_at", "updated_at"])
        next_steps = handoff_availability()
        _append_on_commit(conversation, [protocol.conversation_event(
            "status", status=conversation.status, reason=reason, next=next_steps,
        )], {})
        inbox.inbox_publish_on_commit(conversation, "waiting")
        _signal_on_commit(signals.handoff_requested, conversation=conversation, reason=reason)
    return conversation


def customer_message_received(*, conversation: Conversation, message: Message, counted: bool = False) -> bool:
    """After a new customer message is stored and sequenced: count it unread for the agents (unless the message's
    own write did: `counted`), tell the inbox, and hand off when the customer asked for a person in words. True when
    the bot must not answer it."""
    if not counted:
        Conversation.objects.filter(pk=conversation.pk).update(agent_unread=F("agent_unread") + 1)
    handed_off = False
    if conversation.status == ConversationStatus.BOT and text_asks_for_human(message.content):
        conversation_handoff_request(conversation=conversation, reason=HandoffReason.KEYWORD)
        conversation.status = ConversationStatus.WAITING
        handed_off = True
    else:
        # `counted`: the message's own write returned the conversation's row (chat.services.SUMMARY_FIELDS)
        inbox.inbox_publish_on_commit(conversation, "message", last=message if counted else None)
    return handed_off


def bot_answer_completed(*, conversation: Conversation, answer: Message, streak: int | None = None) -> None:
    """After the bot's answer is stored and sequenced: the workspace's rule (`handoff_after_unanswered`) hands off
    once the bot could not answer that many times in a row; the inbox hears of the answer. `streak`: the
    conversation's unanswered streak as the answer's own write left it (read from the database when not given)."""
    threshold = selectors.assistant_settings_current().handoff_after_unanswered or 0
    if threshold and answer.answered is False:
        if streak is None:
            streak = Conversation.objects.filter(pk=conversation.pk).values_list("unanswered_streak",
                                                                                 flat=True).first()
        if streak is not None and streak >= threshold:
            conversation_handoff_request(conversation=conversation, reason=HandoffReason.UNANSWERED)
            return
    # with `streak`, the answer's own write returned the conversation's row (chat.services.SUMMARY_FIELDS)
    inbox.inbox_publish_on_commit(conversation, "message", last=answer if streak is not None else None)


def conversation_contact_set(*, conversation: Conversation, email: str) -> Conversation:
    """The customer leaves an email address for a reply (nobody was online)."""
    email = (email or "").strip()
    if not protocol.EMAIL_RE.match(email) or len(email) > 254:
        raise ValidationFailed("That is not an email address.", details={"fields": {"email": ["An email address."]}})
    with transaction.atomic():
        conversation = _locked(conversation)
        conversation.visitor_email = email
        conversation.save(update_fields=["visitor_email", "updated_at"])
        inbox.inbox_publish_on_commit(conversation, "contact")
    return conversation


# --- agents ------------------------------------------------------------------------------------------------------
def conversation_join(*, conversation: Conversation, agent: Any) -> Conversation:
    """`agent` takes the conversation (waiting, or from the bot). Exactly one agent holds a conversation: the row lock
    makes two joins at the same moment one after the other, and the second is told who has it
    (409 conversation_taken, `details.agent`). Joining again is a no-op."""
    _require_person(agent)
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == ConversationStatus.CLOSED:
            raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
        if conversation.status == ConversationStatus.AGENT:
            if conversation.assigned_agent_id == agent.pk:
                return conversation
            if conversation.assigned_agent_id:
                raise _holder_conflict(conversation)
        _take(conversation, agent)
    return conversation


def _take(conversation: Conversation, agent: Any) -> None:
    """Inside the caller's transaction, on a locked row: `agent` holds the conversation from now on."""
    if conversation.status == ConversationStatus.BOT:
        conversation.handoff_reason = HandoffReason.AGENT
        conversation.handoff_at = timezone.now()
        _signal_on_commit(signals.handoff_requested, conversation=conversation, reason=HandoffReason.AGENT)
    conversation.status = ConversationStatus.AGENT
    conversation.assigned_agent = agent
    conversation.agent_unread = 0
    conversation.save(update_fields=[
        "status", "assigned_agent", "agent_unread", "handoff_reason", "handoff_at", "updated_at",
    ])
    joined = _system_message(conversation, f"{agent.display_name} joined the conversation", author=agent)
    _append_on_commit(conversation, [
        protocol.conversation_event("agent_joined", agent=_agent_brief(agent), message=protocol.message_payload(joined)),
        protocol.conversation_event("status", status=conversation.status, reason=conversation.handoff_reason),
    ], {0: joined})
    inbox.inbox_publish_on_commit(conversation, "assigned")
    _signal_on_commit(signals.agent_joined, conversation=conversation, agent=agent)


def conversation_assign(*, conversation: Conversation, agent: Any, assigned_by: Any) -> Conversation:
    """Hand the conversation to a colleague (`agent`, who must be able to handle conversations here). The customer
    sees them join."""
    from accounts.roles import role_has_permission
    from accounts.selectors import membership_role

    _require_person(assigned_by)
    if agent is None or not role_has_permission(
        membership_role(user_id=agent.pk, workspace_id=connection.tenant.pk), "conversations.handle"
    ):
        raise ValidationFailed("That person can't handle conversations here.",
                               details={"fields": {"agent_id": ["Not an agent of this workspace."]}})
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == ConversationStatus.CLOSED:
            raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
        if conversation.status == ConversationStatus.AGENT and conversation.assigned_agent_id == agent.pk:
            return conversation
        _take(conversation, agent)
    return conversation


def _require_holder(conversation: Conversation, agent: Any) -> None:
    if conversation.status == ConversationStatus.CLOSED:
        raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
    if conversation.status != ConversationStatus.AGENT or conversation.assigned_agent_id != agent.pk:
        if conversation.status == ConversationStatus.AGENT and conversation.assigned_agent_id:
            raise _holder_conflict(conversation)
        raise Conflict("Join the conversation first.", code=ErrorCode.NOT_ASSIGNED,
                       details={"status": conversation.status})


def agent_message_post(*, conversation: Conversation, agent: Any, text: str, client_message_id: str = "") -> tuple[Message, bool]:
    """The holding agent's reply, in the conversation's stream (a `message` event, role agent): (message, created).
    Once per client message id."""
    _require_person(agent)
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("The message is empty.", code=ErrorCode.EMPTY_MESSAGE)
    if len(text) > settings.CHAT_MESSAGE_MAX_CHARS:
        raise ValidationFailed("The message is too long.", code=ErrorCode.MESSAGE_TOO_LONG,
                               details={"max_chars": settings.CHAT_MESSAGE_MAX_CHARS})
    with transaction.atomic():
        conversation = _locked(conversation)
        if client_message_id:
            existing = conversation.messages.filter(client_message_id=client_message_id).first()
            if existing is not None:
                if existing.role != MessageRole.AGENT or existing.author_id != agent.pk:
                    raise Conflict("That client id is taken.", details={"client_id": client_message_id})
                return existing, False
        _require_holder(conversation, agent)
        message = Message.objects.create(
            conversation=conversation, role=MessageRole.AGENT, content=text, author=agent,
            client_message_id=client_message_id,
        )
        now = timezone.now()
        Conversation.objects.filter(pk=conversation.pk).update(last_message_at=now, updated_at=now, agent_unread=0)
        _append_on_commit(conversation, [
            protocol.conversation_event("message", message=protocol.message_payload(message)),
        ], {0: message})
        inbox.inbox_publish_on_commit(conversation, "message")
        _signal_on_commit(signals.agent_replied, conversation=conversation, message=message)
    return message, True


def internal_note_add(*, conversation: Conversation, author: Any, text: str) -> Message:
    """A note for colleagues (role note). Never in the conversation's log, never in the customer's history: it goes
    to the inbox group (staff only) and to the dashboard's transcript."""
    _require_person(author)
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("The note is empty.", code=ErrorCode.EMPTY_MESSAGE)
    if len(text) > settings.CHAT_MESSAGE_MAX_CHARS:
        raise ValidationFailed("The note is too long.", code=ErrorCode.MESSAGE_TOO_LONG)
    with transaction.atomic():
        conversation = _locked(conversation)
        note = Message.objects.create(conversation=conversation, role=MessageRole.NOTE, content=text, author=author)
        payload = inbox.note_payload(note)
        inbox.inbox_publish_on_commit(conversation, "note", note=payload)
    return note


def conversation_hand_back(*, conversation: Conversation, agent: Any) -> Conversation:
    """Back to the bot: it answers the customer's next question again."""
    _require_person(agent)
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == ConversationStatus.CLOSED:
            raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
        if conversation.status == ConversationStatus.BOT:
            return conversation
        if conversation.status == ConversationStatus.AGENT and conversation.assigned_agent_id not in (None, agent.pk):
            raise _holder_conflict(conversation)
        conversation.status = ConversationStatus.BOT
        conversation.assigned_agent = None
        conversation.unanswered_streak = 0
        conversation.save(update_fields=["status", "assigned_agent", "unanswered_streak", "updated_at"])
        left = _system_message(conversation, f"{agent.display_name} handed the conversation back to the assistant",
                               author=agent)
        _append_on_commit(conversation, [
            protocol.conversation_event("agent_left", agent=_agent_brief(agent), message=protocol.message_payload(left)),
            protocol.conversation_event("status", status=conversation.status),
        ], {0: left})
        inbox.inbox_publish_on_commit(conversation, "handed_back")
    return conversation


def conversation_close(*, conversation: Conversation, closed_by: Any, send_transcript: bool = False) -> Conversation:
    """Close it; with `send_transcript`, the customer gets the transcript (without internal notes) by email."""
    with transaction.atomic():
        conversation = _locked(conversation)
        if conversation.status == ConversationStatus.CLOSED:
            return conversation
        if send_transcript and not conversation.visitor_email:
            raise ValidationFailed("The customer left no email address.",
                                   details={"fields": {"send_transcript": ["No email address on file."]}})
        conversation.status = ConversationStatus.CLOSED
        conversation.closed_at = timezone.now()
        conversation.save(update_fields=["status", "closed_at", "updated_at"])
        name = getattr(closed_by, "display_name", "") or "Support"
        closed = _system_message(conversation, f"{name} closed the conversation", author=closed_by)
        _append_on_commit(conversation, [
            protocol.conversation_event("agent_left", agent=_agent_brief(closed_by) if getattr(closed_by, "pk", None)
                                        else None, message=protocol.message_payload(closed)),
            protocol.conversation_event("status", status=conversation.status),
        ], {0: closed})
        inbox.inbox_publish_on_commit(conversation, "closed")
        _signal_on_commit(signals.conversation_closed, conversation=conversation,
                          closed_by=closed_by if getattr(closed_by, "pk", None) else None)
        if send_transcript:
            conversation_pk = conversation.pk
            transaction.on_commit(lambda: transcript_email_send(conversation=Conversation.objects.get(pk=conversation_pk)))
    return conversation


def transcript_text(*, conversation: Conversation) -> str:
    labels = {MessageRole.CUSTOMER: "You", MessageRole.ASSISTANT: "Assistant"}
    lines = [f"Conversation {conversation.public_id}", ""]
    for message in selectors.message_list(conversation=conversation, include_notes=False).select_related(None):
        if message.role == MessageRole.SYSTEM:
            lines.append(f"— {message.content} —")
            continue
        who = labels.get(message.role)
        if who is None:
            author = message.author
            who = author.display_name if author is not None else "Support"
        stamp = message.created_at.strftime("%Y-%m-%d %H:%M UTC") if message.created_at else ""
        lines.append(f"[{stamp}] {who}: {message.content}")
    return "\n".join(lines) + "\n"


def transcript_email_send(*, conversation: Conversation) -> None:
    workspace = getattr(connection, "tenant", None)
    name = getattr(workspace, "name", "") or "Support"
    try:
        send_mail(
            subject=f"Your conversation with {name}", message=transcript_text(conversation=conversation),
            from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=[conversation.visitor_email],
        )
    except Exception:  # the conversation is closed either way
        logger.exception("chat: the transcript of %s could not be sent", conversation.public_id)


def conversation_mark_read(*, conversation: Conversation) -> Conversation:
    Conversation.objects.filter(pk=conversation.pk).update(agent_unread=0)
    conversation.agent_unread = 0
    inbox.inbox_publish_on_commit(conversation, "read")
    return conversation


def conversation_for_agent(*, public_id: Any) -> Conversation:
    conversation = selectors.conversation_get(public_id=public_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation
