"""Writes of conversations and messages, and the answer of a customer's question (conversation_answer_stream).

Every function runs in the current workspace schema (the caller's). Events go to the conversation's event log
(chat/events.py) through a *sink*: `SyncSink` appends directly (REST, commands), `LoopSink` hands them to the ASGI
event loop, which streams them to the sockets. Events of state changes that happen in a transaction are sent on
commit, so nobody is told about a change that was rolled back.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from chat import deferred, protocol, selectors, signals
from chat.events import ConversationLog, SyncSink
from chat.models import Channel, Conversation, ConversationStatus, Lead, Message, MessageRole
from tenants import billing
from config.db import insert_statement, statements_run, update_statement
from config.errors import ApplicationError, Conflict, ErrorCode, NotFound, ValidationFailed

logger = logging.getLogger(__name__)

SEQ_WAIT_SECONDS = 30.0


class EventSink(Protocol):
    def emit(self, event: dict[str, Any], *, release_lock: str | None = None) -> Future[int]: ...

    def reply(self, frame: dict[str, Any], *, seq_future: Future[int] | None = None) -> None: ...

    def typing(self, role: str, state: bool) -> None: ...


def conversation_log(conversation: Conversation) -> ConversationLog:
    return ConversationLog.of(connection.schema_name, conversation)


def _emit_on_commit(conversation: Conversation, events: list[dict[str, Any]]) -> None:
    log = conversation_log(conversation)

    def send() -> None:
        try:
            log.append_sync(events)
        except Exception:  # the state change stands; watchers see it on their next resume or reload
            logger.exception("chat: could not append %s", [event["type"] for event in events])

    transaction.on_commit(send)


def _signal_on_commit(signal: Any, **kwargs: Any) -> None:
    """Tell the floors above (chat/signals.py) once the change is committed (inside an answer: once the answer is
    done, chat.deferred); a listener's failure is not ours."""
    deferred.signal_send_on_commit(signal, sender=Conversation, **kwargs)


# --- conversations ---------------------------------------------------------------------------------------------
def conversation_start(
    *, channel: str = Channel.DASHBOARD, created_by: Any = None, title: str = "", visitor_id: str = "",
    visitor_name: str = "", visitor_email: str = "", embed_id: int | None = None, origin: str = "",
    metadata: dict[str, Any] | None = None,
) -> Conversation:
    if channel not in Channel.values:
        raise ValidationFailed("Unknown channel.", details={"fields": {"channel": [f"One of {Channel.values}."]}})
    conversation = Conversation.objects.create(
        channel=channel, created_by=created_by if getattr(created_by, "pk", None) else None, title=title[:200],
        visitor_id=visitor_id[:64], visitor_name=visitor_name[:200], visitor_email=visitor_email,
        embed_id=embed_id, origin=origin[:300], metadata=metadata or {},
    )
    _signal_on_commit(signals.conversation_started, conversation=conversation, channel=channel)
    return conversation


def conversation_lead_save(
    *, conversation: Conversation, values: dict[str, str], custom_label: str = "", stage: str = "",
) -> Lead:
    """Store the visitor's lead form answers on the conversation (already validated against the widget's form by
    embeds.leads); a second submission replaces the first. The email also becomes the conversation's contact
    address (the one the inbox and handoff use). Sends `lead_captured` on commit."""
    fields = {
        "name": values.get("name", ""), "email": values.get("email", ""), "phone": values.get("phone", ""),
        "custom_value": values.get("custom", ""), "custom_label": custom_label if values.get("custom") else "",
        "stage": stage, "visitor_id": conversation.visitor_id, "embed_id": conversation.embed_id,
    }
    with transaction.atomic():
        lead, created = Lead.objects.update_or_create(conversation=conversation, defaults=fields)
        contact: dict[str, str] = {}
        if fields["email"]:
            contact["visitor_email"] = fields["email"]
        if fields["name"]:
            contact["visitor_name"] = fields["name"]
        if contact:
            Conversation.objects.filter(pk=conversation.pk).update(**contact)
            for name, value in contact.items():
                setattr(conversation, name, value)
        _signal_on_commit(signals.lead_captured, conversation=conversation, lead=lead, created=created)
    return lead


def conversation_request_human(*, conversation: Conversation, reason: str = "asked") -> Conversation:
    """The customer asked for a person: the conversation waits for an agent. Idempotent. The handoff itself (what
    the customer is told, the inbox, the handoff_requested signal) is chat.handoff's."""
    from chat import handoff

    return handoff.conversation_handoff_request(conversation=conversation, reason=reason)


# --- messages --------------------------------------------------------------------------------------------------
def customer_message_post(
    *, conversation: Conversation, text: str, client_message_id: str = "", author: Any = None,
    looked_up: bool = False, count_unread: bool = False,
) -> tuple[Message, bool]:
    """Store a customer's message once per client message id: (message, created). A retry with the same id gets the
    first message back, whatever its text. `looked_up`: the caller has just looked for that client id and found
    nothing. `count_unread`: count it unread for the agents in the same write (chat.handoff.customer_message_received).
    The message and its conversation's bookkeeping are one round trip (config.db.statements_run)."""
    if client_message_id and not looked_up:
        existing = selectors.message_by_client_id(conversation=conversation, client_message_id=client_message_id)
        if existing is not None:
            return existing, False
    message = Message(
        conversation=conversation, role=MessageRole.CUSTOMER, content=text,
        client_message_id=client_message_id, author=author if getattr(author, "pk", None) else None,
    )
    now = timezone.now()
    updates: dict[str, Any] = {"last_message_at": now, "updated_at": now}
    if not conversation.title:
        updates["title"] = " ".join(text.split())[:80]
    unread = {"agent_unread": F("agent_unread") + 1} if count_unread else {}
    try:
        # Inside a caller's transaction a savepoint keeps a duplicate client id from aborting it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            [[(message.pk, message.created_at)], returned] = statements_run([
                insert_statement(message, returning=("id", "created_at")),
                update_statement(Conversation.objects.filter(pk=conversation.pk), returning=SUMMARY_FIELDS,
                                 **updates, **unread),
            ])
    except IntegrityError:  # the same client id, posted at the same moment by another connection
        existing = selectors.message_by_client_id(conversation=conversation, client_message_id=client_message_id)
        if existing is None:
            raise
        return existing, False
    message._state.adding, message._state.db = False, Message.objects.db
    for name, value in updates.items():
        setattr(conversation, name, value)
    _conversation_returned(conversation, returned)
    _signal_on_commit(signals.question_asked, conversation=conversation, message=message)
    return message, True


# What the inbox summary of a conversation shows (chat.inbox.conversation_summary) that may change: the writes of an
# answer return them, so the summaries they send are built from the row as the write left it, not read again.
SUMMARY_FIELDS = ("status", "title", "visitor_name", "visitor_email", "handoff_reason", "assigned_agent",
                  "agent_unread", "updated_at", "handoff_at")


def _conversation_returned(conversation: Conversation, returned: list[tuple[Any, ...]],
                           fields: tuple[str, ...] = SUMMARY_FIELDS) -> None:
    """Copy what an UPDATE ... RETURNING `fields` gave back onto `conversation` (nothing when the row is gone)."""
    if not returned:
        return
    for name, value in zip(fields, returned[0]):
        setattr(conversation, Conversation._meta.get_field(name).attname, value)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value or 0)).quantize(Decimal("0.000001"))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def assistant_answer_persist(
    *, conversation: Conversation, reply_to: Message, result: dict[str, Any], latency_first_token_ms: int | None,
    latency_total_ms: int | None, lock_log: ConversationLog | None = None,
) -> Message:
    """Store the answerer's final message (the `completed` event's data) with its accounting, in one transaction:
    an answer is either stored with its conversation's bookkeeping or not at all (a cut connection half-way must not
    leave a stored answer that the customer was told had failed). With `lock_log`, the thread's advisory half of
    that conversation's answer lock is given back in the same round trip, once the answer is stored (what
    `_final_emit` would do first)."""
    return _assistant_answer_store(
        conversation=conversation, reply_to=reply_to, result=result, latency_first_token_ms=latency_first_token_ms,
        latency_total_ms=latency_total_ms, lock_log=lock_log,
    )


def _assistant_answer_store(
    *, conversation: Conversation, reply_to: Message, result: dict[str, Any], latency_first_token_ms: int | None,
    latency_total_ms: int | None, lock_log: ConversationLog | None = None,
) -> Message:
    confidence = result.get("confidence")
    answer = Message(
        conversation=conversation, role=MessageRole.ASSISTANT, reply_to=reply_to,
        content=str(result.get("answer") or ""),
        citations=list(result.get("citations") or []),
        answered=bool(result.get("answered")) if result.get("answered") is not None else None,
        confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
        provider=str(result.get("provider") or "")[:60], model=str(result.get("model") or "")[:120],
        tokens_in=_count(result.get("tokens_in")), tokens_out=_count(result.get("tokens_out")),
        cost=_decimal(result.get("cost")),
        latency_first_token_ms=latency_first_token_ms, latency_total_ms=latency_total_ms,
        timings_ms=dict(result.get("timings_ms") or {}),
        metadata={
            "fallbacks": list(result.get("fallbacks") or []), "reason": str(result.get("reason") or ""),
            "query": str(result.get("query") or "")[:1000], "tokens_estimated": bool(result.get("tokens_estimated")),
            "curated_answer_id": result.get("curated_answer_id"),
        },
    )
    now = timezone.now()
    streak = 0 if answer.answered is not False else F("unanswered_streak") + 1
    unlock = lock_log.advisory_release_statement() if lock_log is not None else None
    # One round trip, all or nothing (one implicit transaction; the advisory unlock, last, runs only if they did).
    # The conversation's row first (its lock, as every other writer of the conversation takes it first), then the
    # answer; PostgreSQL shows the statement as that UPDATE while it waits (pg_stat_activity).
    [returned, [(answer.pk, answer.created_at)], *_unlocked] = statements_run([
        update_statement(Conversation.objects.filter(pk=conversation.pk),
                         returning=("unanswered_streak", *SUMMARY_FIELDS),
                         last_message_at=now, updated_at=now, unanswered_streak=streak),
        insert_statement(answer, returning=("id", "created_at")),
        *([unlock] if unlock else []),
    ])
    if unlock and lock_log is not None:
        lock_log.advisory_released()
    answer._state.adding, answer._state.db = False, Message.objects.db
    conversation.last_message_at = conversation.updated_at = now
    _conversation_returned(conversation, returned, ("unanswered_streak", *SUMMARY_FIELDS))
    _signal_on_commit(signals.answer_completed, conversation=conversation, message=answer)
    return answer


def message_seqs_record(*, conversation: Conversation, seqs: dict[int, int], after_answer: bool = False,
                        with_question: bool = False) -> None:
    """Remember at which seq each message was sent, and raise the conversation's seq floor: one round trip. With
    `after_answer`, inside an answer (chat.deferred), it waits for the answer's end and goes with its other writes
    (the answer's own seq: a retry that comes first finds the logged event instead). With `with_question`, inside
    an answer, it goes with the question's signals (chat.deferred.question_stored), before the answer starts."""
    if not seqs:
        return
    statements = [
        update_statement(Message.objects.filter(pk=message_id, conversation=conversation), seq=seq)
        for message_id, seq in seqs.items()
    ]
    statements.append(update_statement(Conversation.objects.filter(pk=conversation.pk),
                                       last_seq=Greatest("last_seq", max(seqs.values()))))
    if after_answer:
        deferred.statements_run_after(statements)
    elif with_question:
        deferred.statements_run_with_question(statements)
    else:
        statements_run(statements)


def message_feedback_set(
    *, conversation: Conversation, message_id: int, value: int, comment: str = ""
) -> Message:
    if value not in (-1, 0, 1):
        raise ValidationFailed("Feedback is 1, -1 or 0.", details={"fields": {"value": ["One of 1, -1, 0."]}})
    with transaction.atomic():
        message = conversation.messages.select_for_update().filter(pk=message_id).first()
        if message is None:
            raise NotFound("No such message in this conversation.")
        if message.role not in (MessageRole.ASSISTANT, MessageRole.AGENT):
            raise ValidationFailed("Only answers can be rated.", details={"fields": {"message_id": ["Not an answer."]}})
        message.feedback = value
        message.feedback_comment = comment[:2000]
        message.save(update_fields=["feedback", "feedback_comment"])
        _emit_on_commit(conversation, [protocol.conversation_event("feedback", message_id=message.pk, value=value)])
        _signal_on_commit(signals.feedback_given, conversation=conversation, message=message, value=value)
    return message


# --- a customer's question and its answer ----------------------------------------------------------------------
@dataclass
class MessageSubmitResult:
    message: Message
    created: bool
    reply: Message | None  # the existing answer of a retried message
    lock_token: str | None  # set when the caller must answer now (it holds the conversation's answer lock)
    seq_future: Future[int] | None  # seq of the `message` event (new messages)


def _ack(message: Message, *, duplicate: bool) -> dict[str, Any]:
    frame = protocol.local_frame(
        "ack", client_id=message.client_message_id or None, message_id=message.pk, duplicate=duplicate
    )
    if message.seq is not None:
        frame["message_seq"] = message.seq
    return frame


_NOT_LOOKED_UP: Any = object()


def customer_message_submit(
    *, conversation: Conversation, text: str, client_message_id: str = "", author: Any = None, sink: EventSink,
    existing: Message | None = _NOT_LOOKED_UP,
) -> MessageSubmitResult:
    """Store a customer's message (once per client id), tell everyone watching, and say whether the bot answers it
    now. One answer at a time per conversation: a new message while the bot is answering is refused
    (answer_in_progress) and not stored; a retried message whose answer is being written is acknowledged.
    `existing`: the message of that client id, when the caller read it with the conversation
    (selectors.conversation_with_client_message)."""
    log = conversation_log(conversation)
    if existing is _NOT_LOOKED_UP:
        existing = selectors.message_by_client_id(conversation=conversation, client_message_id=client_message_id)
    if existing is not None:
        reply = selectors.reply_for(message=existing)
        lock = None
        if reply is None and conversation.status == ConversationStatus.BOT:
            lock = _answer_lock_take(log)  # None: its answer is being written
            if lock is not None and (reply := selectors.reply_for(message=existing)) is not None:
                log.lock_release(lock)  # answered meanwhile: that answer's final event released the lock
                lock = None
        sink.reply(_ack(existing, duplicate=True))
        if reply is not None and reply.seq is None and reply.role == MessageRole.ASSISTANT:
            _answer_announce_if_unannounced(conversation=conversation, question=existing, answer=reply, sink=sink)
        return MessageSubmitResult(existing, created=False, reply=reply, lock_token=lock, seq_future=None)
    if conversation.status == ConversationStatus.CLOSED:
        raise Conflict("The conversation is closed.", code=ErrorCode.CONVERSATION_CLOSED)
    lock = None
    if conversation.status == ConversationStatus.BOT:
        lock = _answer_lock_take(log)
        if lock is None:
            raise Conflict(
                "The assistant is still answering the previous message.", code=ErrorCode.ANSWER_IN_PROGRESS,
                details={"retry_after": 1},
            )
    try:
        message, created = customer_message_post(
            conversation=conversation, text=text, client_message_id=client_message_id, author=author,
            looked_up=True, count_unread=True,
        )
    except Exception:
        if lock:
            log.lock_release(lock)
        raise
    if not created:  # lost a race with the same client id: that one answers
        if lock:
            log.lock_release(lock)
        sink.reply(_ack(message, duplicate=True))
        return MessageSubmitResult(message, created=False, reply=None, lock_token=None, seq_future=None)
    try:
        seq_future = sink.emit(protocol.conversation_event("message", message=protocol.message_payload(message)))
        sink.reply(_ack(message, duplicate=False), seq_future=seq_future)
        # Recorded before answering, so that a retry of this message (after a reconnect) is acknowledged with its seq:
        # inside an answer, with the question's analytics event, in the credit step's round trip when the bot answers
        # next (chat.deferred.question_stored).
        message.seq = _record_when_known(conversation, {message.pk: seq_future}, with_question=True).get(message.pk)
        from chat import handoff  # after the message's seq: a handoff's `status` event comes after the message

        if handoff.customer_message_received(conversation=conversation, message=message, counted=True) and lock:
            log.lock_release(lock)  # the customer asked for a person in words: the bot stays quiet
            lock = None
    except BaseException:
        # The message is stored but nobody will answer it now (e.g. the database cut our connection): free the
        # answer lock, or the client's retry (same client_id) would be acknowledged and then left waiting for an
        # answer that nobody writes until the lock expires.
        if lock:
            try:
                log.lock_release(lock)
            except Exception:  # it expires by itself
                logger.warning("chat: could not release the answer lock of message %s", message.pk)
        raise
    # With the answer lock held, the bot answers next: the question's writes go with its credit step's round trip.
    deferred.question_stored(answer_follows=lock is not None)
    return MessageSubmitResult(message, created=True, reply=None, lock_token=lock, seq_future=seq_future)


def _answer_lock_take(log: ConversationLog) -> str | None:
    """The conversation's answer lock, or None while an answer is being written. A lock left by a process that died
    mid-answer is taken over (ConversationLog.lock_take_over_if_abandoned) instead of refusing for its whole TTL."""
    ttl = settings.CHAT_ANSWER_TIMEOUT + 30
    return log.lock_acquire(ttl=ttl) or log.lock_take_over_if_abandoned(ttl=ttl)


def _answer_announce_if_unannounced(
    *, conversation: Conversation, question: Message, answer: Message, sink: EventSink
) -> None:
    """A retried message whose answer is stored but has no seq: its `agent_completed` may never have been logged
    (Redis was away, or the process died between storing and announcing), and then the customer would wait for it
    forever. Under the answer lock — which the answering thread gives back only in the same Redis step that logs its
    `agent_completed` — the log tells whether it was: if so, record its seq; if not, announce the answer now."""
    log = conversation_log(conversation)
    lock = _answer_lock_take(log)
    if lock is None:  # the answering thread still holds it: its final event is on the way
        return
    try:
        seq = log.answer_announcement_find(message_id=answer.pk)
        if seq is None:
            future = _final_emit(log, sink, protocol.conversation_event(
                "agent_completed", reply_to=question.pk, message=protocol.message_payload(answer),
            ), lock)
            _record_when_known(conversation, {answer.pk: future})
        else:
            message_seqs_record(conversation=conversation, seqs={answer.pk: seq})
    finally:
        log.lock_release(lock)  # by token: a no-op when the announcement's append released it already


def _record_when_known(conversation: Conversation, futures: dict[int, Future[int] | None], *,
                       after_answer: bool = False, with_question: bool = False) -> dict[int, int]:
    seqs: dict[int, int] = {}
    for message_id, future in futures.items():
        if future is None:
            continue
        try:
            seqs[message_id] = future.result(timeout=SEQ_WAIT_SECONDS)
        except (FutureTimeout, Exception):  # the event log was unreachable; the message itself is stored
            logger.warning("chat: no seq for message %s", message_id)
    message_seqs_record(conversation=conversation, seqs=seqs, after_answer=after_answer, with_question=with_question)
    return seqs


def _engine_failure(exc: BaseException) -> ApplicationError:
    cause = getattr(exc, "code", None) or type(exc).__name__
    return ApplicationError(
        "The assistant could not answer this time. Please try again, or ask for a person.",
        code=ErrorCode.ANSWER_FAILED, details={"cause": str(cause)[:60]}, status_code=502,
    )


def conversation_answer_stream(
    *, conversation: Conversation, question: Message, lock_token: str, sink: EventSink,
    cancelled: Callable[[], bool] = lambda: False, failure: list[ApplicationError] | None = None,
    history: list[tuple[str, str]] | None = None,
) -> Message | None:
    """Answer `question` with the answer engine, streaming its events into the conversation's log, and store the
    answer. Returns the stored answer, or None after an `error` event (answer_failed, or the credit refused): the
    customer always gets one or the other.

    The answer lock (`lock_token`) is held from the customer's message until the answer's `agent_completed` is in
    the log, and released in that same Redis step, so a client may ask again as soon as it sees the answer, and a
    retry of the same message never finds the lock taken by an answer that nobody writes any more: every way out of
    this function gives it back. Once the answer is stored it stands: nothing after that turns it into an error.
    `history`: the turns before `question` when the caller has them already (else they are read)."""
    log = conversation_log(conversation)
    started = time.monotonic()
    # What the credit was charged under (a retry after a refunded failure gets `message:N#2`, tenants.billing).
    credit_reference = [f"message:{question.pk}"]
    answer: Message | None = None
    try:
        answer = _answer_compose_and_store(
            conversation=conversation, question=question, sink=sink, cancelled=cancelled, failure=failure,
            started=started, credit_reference=credit_reference, lock_token=lock_token, history=history,
        )
        if answer is None:
            return None
        # The answer stands from here on. Its receivers (and the question's: analytics) run now, in one round trip,
        # before its final event, as they did on commit.
        deferred.signals_flush()
        sink.typing("bot", False)
        answer_seq = _final_emit(log, sink, protocol.conversation_event(
            "agent_completed", reply_to=question.pk, message=protocol.message_payload(answer),
        ), lock_token)
        try:
            answer.seq = _record_when_known(conversation, {answer.pk: answer_seq}, after_answer=True).get(answer.pk)
        except Exception:  # the seq is bookkeeping; a retry of the message finds the logged event (see above)
            logger.warning("chat: the seq of answer %s was not recorded", answer.pk, exc_info=True)
        try:
            from chat import handoff

            # the unanswered rule, the inbox
            handoff.bot_answer_completed(conversation=conversation, answer=answer,
                                         streak=getattr(conversation, "unanswered_streak", None))
        except Exception:  # the answer stands; a handoff rule must never turn it into an error
            logger.exception("chat: handoff check after message %s failed", question.pk)
        return answer
    finally:
        _answer_lock_release(log, lock_token)  # by token: a no-op once the final event's append released it
        if answer is None:
            _credit_refund(credit_reference[-1])


def _final_emit(log: ConversationLog, sink: EventSink, event: dict[str, Any], lock_token: str) -> Future[int]:
    """The answer's last event (agent_completed or error): the thread's advisory half of the answer lock goes first,
    the Redis key in the same step that logs the event, so whoever sees the event finds the lock free."""
    try:
        log.lock_release_advisory()
    except Exception:  # the connection is gone, and its session's locks with it
        logger.warning("chat: advisory answer lock of %s not released", log.conversation, exc_info=True)
    return sink.emit(event, release_lock=lock_token)


def _answer_lock_release(log: ConversationLog, token: str) -> None:
    try:
        log.lock_release(token)
    except Exception:  # it expires by itself
        logger.warning("chat: could not release the answer lock of %s", log.conversation, exc_info=True)


def _answer_compose_and_store(
    *, conversation: Conversation, question: Message, sink: EventSink, cancelled: Callable[[], bool],
    failure: list[ApplicationError] | None, started: float, credit_reference: list[str], lock_token: str,
    history: list[tuple[str, str]] | None = None,
) -> Message | None:
    """Take the answer's credit, stream the engine's events, store the answer. None after an `error` event, which
    gives the answer lock back as it is logged (the customer may send the message again at once)."""
    from chat import answering  # the answer engine; imported late: it loads models and indexes

    reply_to = question.pk
    bot_typing = False
    first_token_ms: int | None = None
    try:
        # Every answer costs a credit, taken before the work starts and given back if no answer comes.
        try:
            charged = billing.credits_consume(workspace=_current_workspace(), reference=credit_reference[0],
                                              along=deferred.carried_take())  # the question's writes, if waiting
            credit_reference.append(charged.reference)
        except ApplicationError as refused:  # quota_exceeded / plan_limit: a clear error event instead of an answer
            if failure is not None:
                failure.append(refused)
            _final_emit(conversation_log(conversation), sink, protocol.conversation_event(
                "error", reply_to=reply_to, code=refused.code, message=refused.message, details=refused.details,
            ), lock_token)
            return None
        sink.emit(protocol.conversation_event("agent_started", reply_to=reply_to))
        sink.typing("bot", True)
        bot_typing = True
        if history is None:
            history = selectors.conversation_history(conversation=conversation, before_message_id=question.pk)
        completed: dict[str, Any] | None = None
        stream = answering.answer_stream(
            question=question.content, history=history, assistant=selectors.assistant_settings_current()
        )
        try:
            for event in stream:
                if cancelled():
                    return None
                kind, data = event.type, dict(event.data or {})
                if kind == "token":
                    if first_token_ms is None:
                        first_token_ms = int((time.monotonic() - started) * 1000)
                    sink.emit(protocol.conversation_event("token", reply_to=reply_to, text=str(data.get("text", ""))))
                elif kind == "thinking":
                    sink.emit(protocol.conversation_event("agent_thinking", reply_to=reply_to))
                elif kind in ("tool_executing", "tool_completed"):
                    sink.emit(protocol.conversation_event(kind, reply_to=reply_to, **data))
                elif kind == "reset":
                    first_token_ms = None
                    sink.emit(protocol.conversation_event("reset", reply_to=reply_to, **data))
                elif kind == "completed":
                    completed = data
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if completed is None:
            raise RuntimeError("the answer engine ended without a completed event")
        return assistant_answer_persist(
            conversation=conversation, reply_to=question, result=completed,
            latency_first_token_ms=first_token_ms, latency_total_ms=int((time.monotonic() - started) * 1000),
            lock_log=conversation_log(conversation),
        )
    except Exception as exc:
        logger.exception("chat: answering message %s failed", question.pk)
        error = _engine_failure(exc)
        if failure is not None:
            failure.append(error)
        if bot_typing:
            sink.typing("bot", False)
        _final_emit(conversation_log(conversation), sink, protocol.conversation_event(
            "error", reply_to=reply_to, code=error.code, message=error.message, details=error.details,
        ), lock_token)
        return None


def _current_workspace() -> Any:
    workspace = getattr(connection, "tenant", None)
    if workspace is None or getattr(connection, "schema_name", "public") == "public":
        raise ApplicationError("Answers belong to a workspace; no workspace is selected.", code=ErrorCode.WRONG_SCHEMA)
    return workspace


def _credit_refund(reference: str) -> None:
    try:
        billing.credits_refund(workspace=_current_workspace(), reference=reference)
    except Exception:  # the refund is bookkeeping; it must never turn an error event into a crash
        logger.exception("chat: could not refund the credit of %s", reference)


@dataclass
class MessageAnswerResult:
    message: Message
    answer: Message | None
    created: bool
    error: ApplicationError | None = None


def conversation_message_answer(
    *, conversation: Conversation, text: str, client_message_id: str = "", author: Any = None
) -> MessageAnswerResult:
    """The non-streaming path (REST): post the message and wait for the whole answer. Watchers of the conversation
    still see it stream, since the events go through the same log."""
    with deferred.after_answer():  # what is not needed before the first token goes after the answer
        return _conversation_message_answer(conversation=conversation, text=text,
                                            client_message_id=client_message_id, author=author)


def _conversation_message_answer(
    *, conversation: Conversation, text: str, client_message_id: str, author: Any
) -> MessageAnswerResult:
    sink = SyncSink(conversation_log(conversation))
    submitted = customer_message_submit(
        conversation=conversation, text=text, client_message_id=client_message_id, author=author, sink=sink
    )
    sink.flush()
    if submitted.lock_token is None:
        if not submitted.created and submitted.reply is None and conversation.status == ConversationStatus.BOT:
            raise Conflict(
                "The answer to this message is still being written.", code=ErrorCode.ANSWER_IN_PROGRESS,
                details={"message_id": submitted.message.pk, "retry_after": 1},
            )
        return MessageAnswerResult(submitted.message, submitted.reply, created=submitted.created)
    failure: list[ApplicationError] = []
    try:
        answer = conversation_answer_stream(
            conversation=conversation, question=submitted.message, lock_token=submitted.lock_token, sink=sink,
            failure=failure,
        )
    finally:
        sink.flush()
    submitted.message.refresh_from_db()
    if answer is None:
        error = failure[0] if failure else _engine_failure(RuntimeError("failed"))
        return MessageAnswerResult(submitted.message, None, created=submitted.created, error=error)
    return MessageAnswerResult(submitted.message, answer, created=submitted.created)
