"""Redis restarted (and emptied) while customers chat: a private redis-server, used by a private ASGI server for
everything (cache, channel layer, the chat event log and its pub/sub), is killed and started again on the same port.

What must hold: /readyz says "redis" within seconds while it is down (no probe hangs); a customer who asks during
the outage gets a clear error frame or a closed socket with the "unavailable" code (never silence); once Redis is
back the same socket and new sockets ask and get complete answers without any restart of the server; every question
that was acknowledged is in PostgreSQL; seqs never go back although Redis forgot its counters.
"""
from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from django.db import connection
from websockets.exceptions import ConnectionClosed

from chat.models import AssistantSettings, Conversation, Message, MessageRole
from tests.chat.fakes import FakeVendor, Reply
from tests.chat.test_protocol import (
    MANUAL, QUESTION, SLOW_ANSWER, ChatSocket, conversation_new, in_workspace, knowledge_seed, session_cookie,
)
from tests.factories import WorkspaceWithOwner, workspace_with_owner
from tests.conftest import LOG_DIR
from tests.faults.conftest import private_env, private_redis_server, wait_until
from tests.live import start_live_server

OUTAGE_REPLY_SECONDS = 20  # a question asked while Redis is down is refused within this
RECOVERY_SECONDS = 30  # after Redis is back, a complete answer arrives within this
HUNG_AFTER_SECONDS = 15  # liveness only: a probe or page with no answer by then is hung (speed is not tested here)
WARRANTY_QUESTION = "What does the warranty of the Acme Router X200 cover, and for how many years?"


@pytest.fixture(scope="module")
def chat_stack(django_db_setup, django_db_blocker) -> Iterator[SimpleNamespace]:
    """A Redis and an ASGI server of this module's own (no worker: chat needs none), so restarting this Redis never
    touches the broker of the ingestion suites' worker."""
    with private_redis_server() as redis_server, django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="faults-chat-asgi",
                                   extra_env=private_env(redis_server))
        try:
            yield SimpleNamespace(redis=redis_server, server=server)
        finally:
            server.process.stop()


@pytest.fixture
def chat_redis_restored(chat_stack) -> Iterator[None]:
    yield
    if not chat_stack.redis.is_up():
        chat_stack.redis.stop()
        chat_stack.redis.start()


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor("openai", [Reply(text=SLOW_ANSWER, delay=0.1, usage=(120, 60))])
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def streaming(django_db_blocker, knowledge, vendor) -> WorkspaceWithOwner:
    """The same knowledge, answered by a vendor that streams a piece every 100 ms (about 4 s an answer)."""
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Faults Streaming")
        knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))

        def configure() -> None:
            AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [{
                "kind": "openai", "base_url": vendor.base_url, "model": "fake-llm", "api_key": "test-key",
                "first_token_timeout": 20, "inter_token_timeout": 10,
            }]})

        in_workspace(workspace.workspace, configure)
        return workspace


def messages_of(workspace: Any, conversation: Conversation) -> list[Message]:
    return in_workspace(workspace, lambda: list(Message.objects.filter(conversation=conversation).order_by("id")))


def answered_or_hung(what: str, call: Any) -> Any:
    """The response of `call` (a request sent with timeout=HUNG_AFTER_SECONDS); a timeout fails as "hung"."""
    try:
        return call()
    except requests.Timeout:
        raise AssertionError(f"{what} hung: no answer within {HUNG_AFTER_SECONDS} s") from None


def outcome_of(tab: ChatSocket, timeout: float) -> dict[str, Any]:
    """Read until the answer ends (agent_completed), an error frame arrives, or the server closes the socket.
    Silence until `timeout` fails the test."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"silence: neither an answer nor an error within {timeout} s")
            frame = json.loads(tab.ws.recv(timeout=left))
            if frame["type"] == "error" and frame.get("code") == "history_truncated":
                continue  # the log was lost with Redis: said once, about a resume, not about the question
            if frame["type"] in ("agent_completed", "error"):
                return frame
    except ConnectionClosed as closed:
        return {"type": "closed", "code": closed.rcvd.code if closed.rcvd else None}
    except TimeoutError:
        raise AssertionError(f"silence: neither an answer nor an error within {timeout} s") from None


def answered_within(stack, workspace: WorkspaceWithOwner, conversation: Conversation, *, client_id: str,
                    text: str, timeout: float) -> list[dict[str, Any]]:
    """What a reconnecting client does: open a socket, resume, send its unacknowledged message again (same
    client_id), until an answer completes. Returns the frames of the successful attempt."""
    deadline = time.monotonic() + timeout
    last_problem = ""
    while time.monotonic() < deadline:
        try:
            with ChatSocket(stack.server, workspace.host, conversation.public_id,
                            session_cookie(workspace.owner)) as tab:
                tab.ask(text, client_id=client_id)
                frames = tab.until(lambda f: f["type"] in ("agent_completed", "error"),
                                   timeout=max(1.0, deadline - time.monotonic()))
                if frames[-1]["type"] == "agent_completed":
                    return frames
                last_problem = json.dumps(frames[-1])
        except (ConnectionClosed, OSError, TimeoutError, AssertionError) as exc:
            last_problem = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"no complete answer within {timeout} s after Redis came back: {last_problem}")


def test_chat_recovers_by_itself_after_redis_restarts(chat_stack, knowledge, chat_redis_restored):
    stack, workspace = chat_stack, knowledge
    conversation = conversation_new(workspace.workspace)
    cookie = session_cookie(workspace.owner)
    with ChatSocket(stack.server, workspace.host, conversation.public_id, cookie) as tab:
        before = tab.answer(QUESTION)
        assert before[-1]["type"] == "agent_completed", before[-1]
        seq_before = before[-1]["seq"]

        stack.redis.stop(signal.SIGKILL)

        # Readiness says so, in the error shape: no probe hangs on a dead Redis.
        ready = answered_or_hung("/readyz", lambda: stack.server.request("GET", "localhost", "/readyz",
                                                                         timeout=HUNG_AFTER_SECONDS))
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert {"redis", "broker"} <= set(body["failed"]) and "postgres" not in body["failed"], body
        assert body["error"]["code"] == "service_unavailable"
        # Pages that need no Redis keep working meanwhile (and none hangs).
        detail = answered_or_hung("the conversation page", lambda: stack.server.request(
            "GET", workspace.host, f"/api/v1/conversations/{conversation.public_id}/", headers={"Cookie": cookie},
            timeout=HUNG_AFTER_SECONDS))
        assert detail.status_code in (200, 503), detail.text
        if detail.status_code == 503:
            assert detail.json()["error"]["code"] == "service_unavailable"

        # A customer asking now is told so, on the socket they asked on, which stays open: never silence.
        outage_client_id = f"c-outage-{secrets.token_hex(4)}"
        tab.ask(WARRANTY_QUESTION, client_id=outage_client_id)
        during = outcome_of(tab, OUTAGE_REPLY_SECONDS)
        assert during["type"] == "error" and during["code"] == "service_unavailable", during
        assert during["client_id"] == outage_client_id and "seq" not in during
        tab.still_usable()  # a ping is still answered while Redis is down

        # A new socket can't open the conversation's stream: it is closed with "unavailable" (reconnect later). A
        # hung opening fails as a TimeoutError (the client's open and receive timeouts), not as this close.
        with pytest.raises(ConnectionClosed) as refused:
            ChatSocket(stack.server, workspace.host, conversation.public_id, cookie)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1011

        stack.redis.start()  # empty: counters, logs, locks and the pub/sub subscriptions are gone
        ready_again = lambda: stack.server.request("GET", "localhost", "/readyz", timeout=10).status_code == 200  # noqa: E731
        wait_until(ready_again, timeout=RECOVERY_SECONDS, every=0.5, message="/readyz never came back to 200")

        # The same socket, without reconnecting: the client sends the refused message again (same client_id).
        deadline = time.monotonic() + RECOVERY_SECONDS
        while True:
            tab.ask(WARRANTY_QUESTION, client_id=outage_client_id)
            frames = tab.until(lambda f: f["type"] in ("agent_completed", "error"), timeout=RECOVERY_SECONDS)
            if frames[-1]["type"] == "agent_completed":
                break
            assert frames[-1]["code"] == "service_unavailable", frames[-1]
            assert time.monotonic() < deadline, f"still refused {RECOVERY_SECONDS} s after Redis came back"
            time.sleep(0.5)
    final = frames[-1]
    assert "warranty" in final["message"]["content"].lower() and final["message"]["answered"] is True
    events = [f for f in frames if "seq" in f]
    # Seqs never go back although Redis forgot its counters, and the socket missed nothing.
    assert [e["seq"] for e in events] == list(range(seq_before + 1, seq_before + 1 + len(events))), events

    # A client that reconnects after the restart resumes from what it saw and gets what it missed.
    with ChatSocket(stack.server, workspace.host, conversation.public_id, cookie, resume=False) as again:
        replayed = again.resume(seq_before)
        assert [f["seq"] for f in replayed] == [e["seq"] for e in events]
    # And a brand-new conversation works as before.
    fresh = conversation_new(workspace.workspace)
    with ChatSocket(stack.server, workspace.host, fresh.public_id, cookie) as tab:
        assert tab.answer(QUESTION)[-1]["type"] == "agent_completed"

    stored = messages_of(workspace.workspace, conversation)
    questions = [m for m in stored if m.role == MessageRole.CUSTOMER]
    answers = [m for m in stored if m.role == MessageRole.ASSISTANT]
    assert [q.content for q in questions] == [QUESTION, WARRANTY_QUESTION]
    assert questions[1].client_message_id == outage_client_id
    assert [a.reply_to_id for a in answers] == [q.pk for q in questions], "each question answered exactly once"
    assert answers[1].content == final["message"]["content"]


def test_an_answer_streaming_when_redis_dies_ends_in_an_answer_or_a_clear_error(chat_stack, streaming,
                                                                                 chat_redis_restored):
    stack, workspace = chat_stack, streaming
    conversation = conversation_new(workspace.workspace)
    cookie = session_cookie(workspace.owner)
    with ChatSocket(stack.server, workspace.host, conversation.public_id, cookie) as tab:
        client_id = tab.ask(QUESTION)
        tab.until(lambda f: f["type"] == "token", timeout=30)  # the answer is streaming
        stack.redis.stop(signal.SIGKILL)
        ended = outcome_of(tab, OUTAGE_REPLY_SECONDS)
    assert ended["type"] in ("agent_completed", "error", "closed"), ended
    if ended["type"] == "error":
        assert ended["code"] in ("service_unavailable", "answer_failed"), ended
    elif ended["type"] == "closed":
        assert ended["code"] == 1011, ended

    stack.redis.start()
    # The question was acknowledged before the outage: it is in PostgreSQL. The client sends it again (same
    # client_id) and gets the stored answer, or an answer now.
    questions = [m for m in messages_of(workspace.workspace, conversation) if m.role == MessageRole.CUSTOMER]
    assert [q.client_message_id for q in questions] == [client_id]
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        answers = [m for m in messages_of(workspace.workspace, conversation) if m.role == MessageRole.ASSISTANT]
        if answers or time.monotonic() > deadline:
            break
        try:
            frames = answered_within(stack, workspace, conversation, client_id=client_id, text=QUESTION,
                                     timeout=max(1.0, deadline - time.monotonic()))
            assert frames[-1]["type"] == "agent_completed"
        except AssertionError:
            pass
    answers = [m for m in messages_of(workspace.workspace, conversation) if m.role == MessageRole.ASSISTANT]
    assert len(answers) == 1, [a.content for a in answers]
    assert answers[0].reply_to_id == questions[0].pk and "reset button" in answers[0].content
    # The transcript over REST has both, whatever Redis forgot.
    detail = stack.server.request("GET", workspace.host, f"/api/v1/conversations/{conversation.public_id}/",
                                  headers={"Cookie": cookie}, timeout=15)
    assert detail.status_code == 200, detail.text
    contents = [m["content"] for m in detail.json()["messages"]]
    assert contents == [QUESTION, answers[0].content]
