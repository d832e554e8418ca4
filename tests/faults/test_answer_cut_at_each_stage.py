"""PostgreSQL (and, separately, Redis) cut at each stage of an answer run, then the customer retries the same
`client_id` — the property behind "a retried message after a database cut waits in silence" (issue #14).

The server is paused at an exact stage without touching its code: this test holds a PostgreSQL lock that the stage's
next statement needs, waits until pg_stat_activity shows the private ASGI server's backend waiting on it, cuts (all
the server's PostgreSQL connections, or the private Redis), and lets go. The stages:

- `before_ack`: the customer's message INSERT (nothing acknowledged yet);
- `after_ack`: the answer's credit step (the message is stored and acknowledged, the answer lock is taken);
- `mid_stream`: retrieval (`agent_started` and `tool_executing` are out);
- `persist`: storing the answer (its row is inserted, the conversation's bookkeeping waits);
- `on_commit`: the receivers of the stored answer (analytics), before `agent_completed` is logged.

What must hold after each: within 10 s the customer has the answer or a clear `error` frame (never silence); a retry
of the same `client_id` is answered; every message is stored once and each question answered once; the log's seqs
have no gap and no duplicate, with one `agent_completed` per answer; an answer that stands is not refunded.
"""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from analytics.models import Event
from chat.models import Conversation, Message, MessageRole
from documents.models import Chunk
from tenants.models import LedgerEntry, LedgerKind, Subscription
from tests.chat.test_protocol import ChatSocket, conversation_new, in_workspace, session_cookie
from tests.conftest import LOG_DIR
from tests.faults.conftest import (
    ASGI_APPLICATION_NAME, Blockers, backends_terminate, named_database_url, private_env, quoted, server_waits_on,
)
from tests.faults.test_redis_restart_chat import WARRANTY_QUESTION, outcome_of
from tests.live import LiveServer, start_live_server

DOOMED_APPLICATION_NAME = "ccgpt-faults-doomed-asgi"

OUTCOME_SECONDS = 10  # the customer hears something (answer or error) within this
RECOVERY_SECONDS = 30  # after Redis is back, a reconnecting client's retry is answered within this (hub reconnect)
STAGES = ["before_ack", "after_ack", "mid_stream", "persist", "on_commit"]


@contextmanager
def paused_at(stage: str, *, workspace: Any, conversation: Conversation, settings_dict: dict[str, Any]) -> Iterator[
        Callable[[], None]]:
    """Hold the locks that pause the server at `stage`; yields `wait()`, which returns once it is paused there.
    Everything is let go when the block ends."""
    schema = workspace.schema_name
    blockers = Blockers(settings_dict)
    chunk_lock = f"LOCK TABLE {quoted(schema, Chunk)} IN ACCESS EXCLUSIVE MODE"

    def wait() -> None:
        if stage == "before_ack":
            server_waits_on(f'%INSERT INTO "{Message._meta.db_table}"%')
        elif stage == "after_ack":
            server_waits_on(f"%{Subscription._meta.db_table}%FOR UPDATE%")
        elif stage == "mid_stream":
            server_waits_on(f"%{Chunk._meta.db_table}%")
        else:
            # Retrieval first (so that the customer's message and its bookkeeping are done), then the later lock.
            server_waits_on(f"%{Chunk._meta.db_table}%")
            if stage == "persist":
                blockers.hold(f"SELECT 1 FROM {quoted(schema, Conversation)} WHERE id = %s FOR UPDATE",
                              (conversation.pk,))
                blockers.let_go(first)
                server_waits_on(f'%UPDATE "{Conversation._meta.db_table}"%')
            else:
                blockers.hold(f"LOCK TABLE {quoted(schema, Event)} IN EXCLUSIVE MODE")
                blockers.let_go(first)
                server_waits_on(f'%INSERT INTO "{Event._meta.db_table}"%')

    try:
        if stage == "before_ack":
            first = blockers.hold(f"LOCK TABLE {quoted(schema, Message)} IN EXCLUSIVE MODE")
        elif stage == "after_ack":
            first = blockers.hold(f"SELECT 1 FROM public.{Subscription._meta.db_table} WHERE workspace_id = %s "
                                  "FOR UPDATE", (workspace.pk,))
        else:
            first = blockers.hold(chunk_lock)
        yield wait
    finally:
        blockers.close()


def retried_until_answered(server, workspace, conversation, cookie: str, client_id: str, timeout: float,
                           tab: ChatSocket | None = None) -> dict[str, Any]:
    """What the widget does: send the message again with the same client_id (on a new socket if the old one was
    closed) until it is answered. Every attempt must hear something within OUTCOME_SECONDS."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while True:
        assert time.monotonic() < deadline, f"not answered within {timeout} s: {problems}"
        try:
            if tab is None:
                tab = ChatSocket(server, workspace.host, conversation.public_id, cookie)
                # The answer may have been logged while the client was away: the resume replays it.
                question = in_workspace(workspace.workspace, lambda: Message.objects.filter(
                    conversation=conversation, client_message_id=client_id).first())
                replayed = [f for f in tab.replayed if f["type"] == "agent_completed" and question is not None
                            and f.get("reply_to") == question.pk]
                if replayed:
                    return replayed[-1]
            tab.ask(WARRANTY_QUESTION, client_id=client_id)
            ended = outcome_of(tab, OUTCOME_SECONDS)
        except (ConnectionClosed, OSError) as exc:  # Redis still coming back: the socket could not open
            ended = {"type": "closed", "error": repr(exc)}
        if ended["type"] == "agent_completed":
            return ended
        problems.append(json.dumps(ended))
        if ended["type"] == "closed":
            tab = None
        else:
            assert ended["code"] in ("service_unavailable", "answer_failed"), ended
        time.sleep(0.5)


def assert_consistent(workspace: Any, conversation: Conversation, server, cookie: str, *, log_kept: bool) -> None:
    """Every message stored once, each question answered once, a log without gaps or doubles, no refund for an
    answer that stands."""
    stored = in_workspace(workspace.workspace, lambda: list(Message.objects.filter(conversation=conversation)))
    questions = [m for m in stored if m.role == MessageRole.CUSTOMER]
    answers = [m for m in stored if m.role == MessageRole.ASSISTANT]
    assert len(questions) == len({q.client_message_id for q in questions}) == 1, [q.client_message_id for q in questions]
    assert [a.reply_to_id for a in answers] == [questions[0].pk], "the question must be answered exactly once"
    with ChatSocket(server, workspace.host, conversation.public_id, cookie) as reader:
        events = [f for f in reader.replayed if "seq" in f]  # after a Redis restart: history_truncated first
        assert log_kept or [f["code"] for f in reader.replayed if "seq" not in f] in ([], ["history_truncated"])
        seqs = [f["seq"] for f in events]
        completed = [f["message"]["id"] for f in events if f["type"] == "agent_completed"]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), seqs
    if log_kept:  # a Redis restart empties the log; seqs still never repeat (above)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"a gap in the log: {seqs}"
        assert completed == [answers[0].pk], f"agent_completed per answer: {completed}"
    else:
        assert completed.count(answers[0].pk) <= 1, completed
    # Each attempt is charged under its own reference (message:N, message:N#2, ...) and a failed one is refunded.
    base = f"message:{questions[0].pk}"
    entries = [e for e in LedgerEntry.objects.filter(workspace_id=workspace.workspace.pk, reference__startswith=base)
               if e.reference == base or e.reference.startswith(f"{base}#")]
    net = -sum(e.amount for e in entries if e.kind in (LedgerKind.USAGE, LedgerKind.REFUND))
    assert net == 1, f"the answer that stands costs exactly one credit: {[(e.kind, e.reference) for e in entries]}"


@pytest.mark.parametrize("stage", STAGES)
def test_postgres_cut_at_each_stage_then_the_retry_is_answered(private_stack, knowledge, stage):
    from django.db import connection

    stack, workspace = private_stack, knowledge
    cookie = session_cookie(workspace.owner)
    conversation = conversation_new(workspace.workspace)
    client_id = f"c-pg-{stage}"
    with ChatSocket(stack.server, workspace.host, conversation.public_id, cookie) as tab:
        with paused_at(stage, workspace=workspace.workspace, conversation=conversation,
                       settings_dict=connection.settings_dict) as wait:
            tab.ask(WARRANTY_QUESTION, client_id=client_id)
            wait()
            assert backends_terminate(ASGI_APPLICATION_NAME) >= 1
        ended = outcome_of(tab, OUTCOME_SECONDS)
        assert ended["type"] in ("agent_completed", "error"), ended
        if ended["type"] == "error":
            assert ended["code"] in ("service_unavailable", "answer_failed"), ended
            ended = retried_until_answered(stack.server, workspace, conversation, cookie, client_id,
                                           3 * OUTCOME_SECONDS, tab=tab)
        assert ended["message"]["answered"] is True
        # A late retry of the answered message (a client that missed the answer) changes nothing.
        tab.ask(WARRANTY_QUESTION, client_id=client_id)
        ack = tab.until(lambda f: f["type"] == "ack" and f.get("client_id") == client_id, timeout=OUTCOME_SECONDS)
        assert ack[-1]["duplicate"] is True
        tab.still_usable()
    assert_consistent(workspace, conversation, stack.server, cookie, log_kept=True)


@pytest.mark.parametrize("stage", STAGES)
def test_redis_cut_at_each_stage_then_the_retry_is_answered(private_stack, knowledge, redis_restored, stage):
    from django.db import connection

    stack, workspace = private_stack, knowledge
    cookie = session_cookie(workspace.owner)
    conversation = conversation_new(workspace.workspace)
    client_id = f"c-redis-{stage}"
    tab = ChatSocket(stack.server, workspace.host, conversation.public_id, cookie)
    try:
        with paused_at(stage, workspace=workspace.workspace, conversation=conversation,
                       settings_dict=connection.settings_dict) as wait:
            tab.ask(WARRANTY_QUESTION, client_id=client_id)
            wait()
            stack.redis.stop(signal.SIGKILL)
        ended = outcome_of(tab, OUTCOME_SECONDS)
        assert ended["type"] in ("error", "closed"), ended  # Redis is down: the answer cannot have been logged
        if ended["type"] == "error":
            assert ended["code"] in ("service_unavailable", "answer_failed"), ended
    finally:
        tab.close()
        stack.redis.start()
    ended = retried_until_answered(stack.server, workspace, conversation, cookie, client_id, RECOVERY_SECONDS)
    assert ended["message"]["answered"] is True
    assert_consistent(workspace, conversation, stack.server, cookie, log_kept=False)


@pytest.fixture
def doomed_server(private_redis, django_db_blocker) -> Iterator[LiveServer]:
    """A second ASGI server on the same private Redis and database, for a test to kill."""
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="faults-doomed-asgi", extra_env=private_env(
            private_redis, DATABASE_URL=named_database_url(connection.settings_dict, DOOMED_APPLICATION_NAME)))
    yield server
    server.process.stop()


def test_a_server_that_dies_mid_answer_leaves_no_lock_behind(private_stack, doomed_server, knowledge):
    """The process answering a question is killed (a deploy, an OOM kill): its Redis lock key would stay for the
    lock's whole TTL. The customer's retry, on another server, is answered at once."""
    from django.db import connection

    stack, workspace = private_stack, knowledge
    cookie = session_cookie(workspace.owner)
    conversation = conversation_new(workspace.workspace)
    client_id = "c-doomed"
    blockers = Blockers(connection.settings_dict)
    try:
        blockers.hold(f"LOCK TABLE {quoted(workspace.workspace.schema_name, Chunk)} IN ACCESS EXCLUSIVE MODE")
        with ChatSocket(doomed_server, workspace.host, conversation.public_id, cookie) as tab:
            tab.ask(WARRANTY_QUESTION, client_id=client_id)
            server_waits_on(f"%{Chunk._meta.db_table}%", application_name=DOOMED_APPLICATION_NAME)
            doomed_server.process.proc.kill()
            doomed_server.process.proc.wait(timeout=15)
    except ConnectionClosed:
        pass
    finally:
        blockers.close()
    assert stack.redis.client(stack.redis.test_db).keys("*:lock"), "the dead server's lock key should be left over"
    ended = retried_until_answered(stack.server, workspace, conversation, cookie, client_id, OUTCOME_SECONDS)
    assert ended["message"]["answered"] is True
    assert_consistent(workspace, conversation, stack.server, cookie, log_kept=True)
