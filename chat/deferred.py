"""What an answer tells others after it, not before its first token (issue #16).

A customer's question and the bot's answer used to send their signals (analytics events, webhooks), inbox summaries
and seq bookkeeping as each happened: a dozen PostgreSQL round trips and an inbox push before the first token.
Inside `after_answer()` (the socket's answer job, the REST answer) they are collected instead:

* the question's signals and inbox summary go as soon as the question is stored (`question_stored`: a process that
  dies mid-answer must not take the question's event, webhook and inbox line with it); its seq goes with its
  receivers' writes (`statements_run_with_question`, committed durably), and when the bot answers next they ride on
  the answer's credit step, its first round trip (`question_stored(answer_follows=True)`, `carried_take`);
* the answer's signals, each once its transaction committed (as `transaction.on_commit` would), in the order they
  were sent, go out together once the answer is stored (`signals_flush`, before its final event is logged: where the answer's
  receivers ran before) or when the block ends (an error event, a refusal: an asked question is recorded exactly
  once either way); the receivers' writes that accept it (analytics events: `config.db.statements_defer`) go to
  PostgreSQL together, in one round trip;
* chat's deferrable bookkeeping (the answer's seq) and inbox summaries wait for the block's end; summaries are sent
  once per conversation and kind of event (the question's "message" and the answer's "message" are one summary,
  read once, after both).

Outside the block (dashboard actions, agents, REST writes other than answers) nothing changes: everything is sent on
commit, as before.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from config.db import Statement, statements_batch, statements_collected, statements_defer, statements_run

logger = logging.getLogger(__name__)

_state = threading.local()


@dataclass
class _Pending:
    signals: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    inbox: dict[tuple[int, str], Callable[[], None]] = field(default_factory=dict)
    question: list[Statement] = field(default_factory=list)  # the question's seq: with its signals, durable
    question_sent: bool = False
    carried: list[Statement] = field(default_factory=list)  # the question's writes, waiting for the credit step
    ran: bool = False

    def signals_send(self, *, durable: list[Statement] | None = None, carry: bool = False) -> None:
        """The signals collected so far, their receivers' deferrable writes and ours in one round trip (`durable`:
        statements of ours whose commit waits for the WAL flush, as a plain statement's does). `carry`: the writes
        are kept in `carried` for the answer's credit step to send (`carried_take`) instead."""
        signals, self.signals = self.signals, []
        statements, self.statements = self.statements, []
        carried, self.carried = self.carried, []
        try:
            with statements_collected() if carry else statements_batch() as collected:
                for statement in carried:
                    statements_defer(statement)
                for statement in durable or ():
                    statements_defer(statement)
                for statement in statements:
                    statements_defer(statement, durable=False)
                for signal, kwargs in signals:
                    try:
                        signal.send(sender=kwargs.pop("_sender"), **kwargs)
                    except Exception:
                        logger.exception("chat: a receiver of %s failed", signal)
            if carry:
                self.carried = list(collected or [])
        except Exception:  # the answer stands; its events and bookkeeping are what may be lost, never doubled
            logger.exception("chat: the writes after an answer failed")

    def run(self) -> None:
        self.ran = True
        # A question whose block ended before question_stored() (an error on the way) still has its seq recorded.
        durable, self.question = self.question, []
        self.signals_send(durable=durable)
        for send in self.inbox.values():
            try:
                send()
            except Exception:
                logger.warning("chat: could not push an inbox summary", exc_info=True)


def _pending() -> _Pending | None:
    return getattr(_state, "pending", None)


@contextmanager
def after_answer() -> Iterator[None]:
    """Collect the signals, inbox summaries and deferred writes of an answer until the block ends (nested blocks
    join the outer one)."""
    if _pending() is not None:
        yield
        return
    pending = _state.pending = _Pending()
    try:
        yield
    finally:
        _state.pending = None
        pending.run()


def signals_flush() -> None:
    """Send the signals collected so far now (the answer is stored: its receivers run before its final event is
    logged, as they did on commit); inbox summaries and deferred bookkeeping still wait for the block's end."""
    pending = _pending()
    if pending is not None and (pending.signals or pending.carried):
        statements, pending.statements = pending.statements, []
        pending.signals_send()
        pending.statements = statements


def question_stored(*, answer_follows: bool = False) -> None:
    """The customer's question is committed: its signals (analytics event, webhook), its receivers' writes and its
    inbox summary go now, in one round trip, not after the answer. Held until the answer's end they were lost with a
    process that died mid-answer (the question stayed, its event and webhook never came), agents saw the message
    only once the bot had finished, and an erasure during the answer could be followed by the question's event
    written for a conversation that no longer exists."""
    pending = _pending()
    if pending is None or pending.ran:
        return
    pending.question_sent = True
    durable, pending.question = pending.question, []
    if pending.signals or durable:
        statements, pending.statements = pending.statements, []
        # `answer_follows`: the receivers run now, their writes and the seq go with the answer's credit step (its
        # first round trip, a moment later), or with whatever round trip of this block comes first without it.
        pending.signals_send(durable=durable, carry=answer_follows)
        pending.statements = statements
    inbox, pending.inbox = pending.inbox, {}
    for send in inbox.values():
        try:
            send()
        except Exception:
            logger.warning("chat: could not push an inbox summary", exc_info=True)


def carried_take() -> list[Statement]:
    """The question's writes that wait for the answer's credit step (`question_stored(answer_follows=True)`); the
    taker sends them in its round trip (tenants.billing.credits_consume `along`)."""
    pending = _pending()
    if pending is None:
        return []
    carried, pending.carried = pending.carried, []
    return carried


def signal_send_on_commit(signal: Any, *, sender: Any, **kwargs: Any) -> None:
    """`signal` once the current transaction commits; inside `after_answer()`, at `signals_flush()` or the block's
    end, whichever comes first."""
    pending = _pending()

    def send() -> None:
        try:
            signal.send(sender=sender, **kwargs)
        except Exception:
            logger.exception("chat: a receiver of %s failed", signal)

    if pending is None:
        transaction.on_commit(send)
        return

    def later() -> None:
        if pending.ran:  # committed after the answer's block ended (an outer transaction): send it now
            send()
        else:
            pending.signals.append((signal, {"_sender": sender, **kwargs}))

    transaction.on_commit(later)


def inbox_send_on_commit(key: tuple[int, str], send: Callable[[], None]) -> None:
    """An inbox summary once the current transaction commits; inside `after_answer()`, once per `key` at its end."""
    pending = _pending()
    if pending is None:
        transaction.on_commit(send)
        return

    def later() -> None:
        if pending.ran:
            send()
        else:  # the latest summary of that kind wins (one made at its write shows the row as that write left it)
            pending.inbox[key] = send

    transaction.on_commit(later)


def statements_run_with_question(statements: list[Statement]) -> None:
    """The question's own bookkeeping (its seq): sent with its signals' writes when `question_stored()` comes (one
    round trip with its analytics event, committed durably; with the credit step's when the bot answers next);
    outside `after_answer()`, or once the question went, now.
    A failure is logged, not raised, as the answer's bookkeeping: the message is stored and acknowledged already,
    and a retry of it is acknowledged without its seq, as after the refusal this failure used to cause."""
    pending = _pending()
    if pending is not None and not pending.ran and not pending.question_sent:
        pending.question.extend(statements)
        return
    statements_run(statements)


def statements_run_after(statements: list[Statement]) -> None:
    """Bookkeeping writes that may wait for the end of the answer (one round trip with the others); outside
    `after_answer()`, run now (one round trip)."""
    pending = _pending()
    if pending is not None and not pending.ran:
        pending.statements.extend(statements)
        return
    statements_run(statements)
