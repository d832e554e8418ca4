"""The conversation WebSocket (/ws/chat/<id>/) over the real ASGI server, the real Redis event log and the real
answer engine: the event sequence of a question, several tabs, resume after a drop, bad input, limits, isolation.

Answers come from the built-in answerer over documents ingested through the real pipeline, or from a fake LLM vendor
(a real HTTP server on loopback, tests/chat/fakes.py) that streams slowly, so that a socket can really be dropped in
the middle of an answer.
"""
from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from chat import services
from chat.models import AssistantSettings, Conversation, ConversationStatus, Message, MessageRole
from tests.chat.fakes import FakeVendor, Reply
from tests.conftest import LOG_DIR
from tests.factories import WorkspaceWithOwner, member, workspace_with_owner
from tests.live import LiveServer, start_live_server

MANUAL = """# Acme Router X200 manual

## Resetting the admin password

To reset the admin password of the Acme Router X200, hold the recessed reset button on the back panel for ten
seconds until the power light blinks amber. The router restarts with the factory password printed on the label under
the device. Log in at http://192.168.8.1 and choose a new admin password right away.

## Warranty

Every Acme Router X200 comes with a three-year warranty covering hardware faults. Keep your receipt: the warranty
claim form asks for the purchase date and the serial number printed on the label.

## Firmware updates

The X200 checks for firmware updates every night at 3 a.m. To update by hand, open Settings, then System, then
Firmware, and press Check now. Never unplug the router while the firmware update runs.
"""
QUESTION = "How do I reset the admin password of the X200 router?"
SLOW_ANSWER = (
    "Hold the recessed reset button on the back panel for ten seconds until the power light blinks amber [1]. "
    "The router restarts with the factory password from the label under the device; log in at the router's "
    "address and choose a new admin password right away [1]."
)
SEQUENCED = {"message", "agent_started", "agent_thinking", "tool_executing", "tool_completed", "token", "reset",
             "agent_completed", "error", "status", "feedback"}


# --- helpers -----------------------------------------------------------------------------------------------------
def session_cookie(user: Any) -> str:
    """A logged-in session for `user`, stored the way django.contrib.auth.login stores one."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def in_workspace(workspace: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    connection.set_tenant(workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_schema_to_public()


def conversation_new(workspace: Any, **kwargs: Any) -> Conversation:
    return in_workspace(workspace, services.conversation_start, **kwargs)


def knowledge_seed(workspace: Any, *documents: tuple[str, str]) -> None:
    """Documents through the real ingestion pipeline (run here, synchronously, instead of by a worker)."""
    from documents import services as document_services
    from tests.factories import document_ingest_now

    def seed() -> None:
        for title, text in documents:
            document = document_services.document_create_text(title=title, text=text, markdown=True)
            document.refresh_from_db()
            result = document_ingest_now(document)
            assert result == "indexed", result

    in_workspace(workspace, seed)


def closed_with(socket: ClientConnection, timeout: float = 15) -> int | None:
    """Read until the server closes the socket; its close code."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            socket.recv(timeout=max(0.1, deadline - time.monotonic()))
        raise AssertionError("the server did not close the socket")
    return closed.value.rcvd.code if closed.value.rcvd else None


class ChatSocket:
    """A conversation socket as a client uses it: welcome, resume, then frames."""

    def __init__(self, server: LiveServer, host: str, conversation_id: Any, cookie: str | None, resume: bool = True,
                 **headers: str) -> None:
        extra = {"Cookie": cookie} if cookie else {}
        self.ws = server.ws_connect(host, f"/ws/chat/{conversation_id}/", additional_headers={**extra, **headers})
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome
        self.replayed: list[dict[str, Any]] = []
        if resume:
            self.replayed = self.resume(0)

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    def recv(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def resume(self, last_seq: int) -> list[dict[str, Any]]:
        """Resume from `last_seq`: the replayed frames (up to and without the `resumed` frame)."""
        self.send({"type": "resume", "last_seq": last_seq})
        frames = self.until(lambda f: f["type"] == "resumed")
        self.resumed = frames[-1]
        return frames[:-1]

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(timeout=max(0.1, deadline - time.monotonic()))
            frames.append(frame)
            if done(frame):
                return frames
            assert time.monotonic() < deadline, f"frames kept coming for {timeout} s, none the awaited: {frames[-5:]}"

    def ask(self, text: str, client_id: str | None = None) -> str:
        client_id = client_id or f"c-{secrets.token_hex(6)}"
        self.send({"type": "message", "client_id": client_id, "text": text})
        return client_id

    def answer(self, text: str = QUESTION, timeout: float = 90) -> list[dict[str, Any]]:
        """Ask and read everything up to the answer's end (agent_completed, or the conversation's error)."""
        self.ask(text)
        return self.until(lambda f: f["type"] == "agent_completed" or (f["type"] == "error" and "seq" in f), timeout)

    def expect_error(self, frame: dict[str, Any] | str | bytes, code: str) -> dict[str, Any]:
        self.send(frame)
        error = self.recv()
        assert error["type"] == "error" and error["code"] == code, error
        assert "seq" not in error  # about this socket's frame, not an event of the conversation
        return error

    def still_usable(self) -> None:
        nonce = secrets.token_hex(4)
        self.send({"type": "ping", "nonce": nonce})
        frames = self.until(lambda f: f["type"] == "pong", timeout=15)
        assert frames[-1]["nonce"] == nonce

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> ChatSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def sequenced(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "seq" in f]


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def answer_text(events: list[dict[str, Any]]) -> str:
    """The streamed text of the (last) answer: tokens after the last reset."""
    text = ""
    for event in events:
        if event["type"] == "reset":
            text = ""
        elif event["type"] == "token":
            text += event["text"]
    return text


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knowledge(django_db_blocker) -> WorkspaceWithOwner:
    """A workspace whose knowledge base covers QUESTION; answers come from the built-in answerer."""
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Router Support")
        knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))
        return workspace


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor("openai", [Reply(text=SLOW_ANSWER, delay=0.04, usage=(120, 60))])
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def streaming(django_db_blocker, vendor: FakeVendor) -> WorkspaceWithOwner:
    """The same knowledge, answered by an LLM vendor that streams a piece every 40 ms (about 2 s an answer)."""
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Router Support Streaming")
        knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))

        def configure() -> None:
            AssistantSettings.objects.update_or_create(id=1, defaults={"providers": [{
                "kind": "openai", "base_url": vendor.base_url, "model": "fake-llm", "api_key": "test-key",
                "first_token_timeout": 20, "inter_token_timeout": 10,
            }]})

        in_workspace(workspace.workspace, configure)
        return workspace


@pytest.fixture
def owner_cookie_of() -> Callable[[WorkspaceWithOwner], str]:
    return lambda workspace: session_cookie(workspace.owner)


# --- the event sequence ------------------------------------------------------------------------------------------
def test_a_question_streams_the_whole_event_sequence(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as tab:
        assert tab.welcome["conversation"]["id"] == str(conversation.public_id)
        assert tab.welcome["you"]["can_post"] is True
        assert tab.replayed == [] and tab.resumed["last_seq"] == 0
        client_id = tab.ask(QUESTION)
        frames = tab.until(lambda f: f["type"] == "agent_completed")

    # The bot's typing indicator (no seq) brackets its answer: on after agent_started, off before agent_completed.
    kinds = [f["type"] for f in frames]
    typing = [i for i, f in enumerate(frames) if f["type"] == "typing"]
    assert [frames[i] for i in typing] == [{"type": "typing", "role": "bot", "state": True},
                                          {"type": "typing", "role": "bot", "state": False}]
    assert kinds.index("agent_started") < typing[0] and typing[1] == len(frames) - 2
    frames = [f for f in frames if f["type"] != "typing"]
    kinds = [f["type"] for f in frames]
    # The order of the protocol: the message, its ack, then the agent's events, tokens, and the final message.
    assert kinds[:2] == ["message", "ack"]
    assert kinds[2:6] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert set(kinds[6:-1]) == {"token"} and len(kinds[6:-1]) >= 1
    assert kinds[-1] == "agent_completed"

    message, ack = frames[0], frames[1]
    assert message["message"]["content"] == QUESTION and message["message"]["client_id"] == client_id
    assert ack == {"type": "ack", "client_id": client_id, "message_id": message["message"]["id"], "duplicate": False,
                   "message_seq": message["seq"]}
    events = sequenced(frames)
    assert_contiguous(events)
    assert events[0]["seq"] == 1
    question_id = message["message"]["id"]
    assert all(e["reply_to"] == question_id for e in events[1:])
    tool_executing, tool_completed = frames[4], frames[5]
    assert tool_executing["tool"] == "retrieval" and tool_executing["query"]
    assert tool_completed["tool"] == "retrieval" and tool_completed["sources"]
    assert tool_completed["sources"][0]["title"] == "Acme Router X200 manual"

    final = frames[-1]["message"]
    assert final["role"] == "assistant" and final["reply_to"] == question_id
    assert answer_text(frames) == final["content"]
    assert "reset button" in final["content"]
    assert final["answered"] is True and final["citations"]
    assert final["provider"] and final["latency_total_ms"] is not None and final["latency_first_token_ms"] is not None
    assert set(final["timings_ms"]) >= {"retrieval", "total"}

    # Stored in PostgreSQL at completion, with the seqs at which each message was sent.
    def stored() -> tuple[list[Message], Conversation]:
        return list(Message.objects.filter(conversation=conversation).order_by("id")), \
            Conversation.objects.get(pk=conversation.pk)

    # The seq of the final event is written right after it went out.
    assert wait_for(lambda: in_workspace(knowledge.workspace, stored)[0][-1].seq is not None)
    messages, row = in_workspace(knowledge.workspace, stored)
    assert [m.role for m in messages] == [MessageRole.CUSTOMER, MessageRole.ASSISTANT]
    assert messages[0].seq == message["seq"] and messages[1].seq == frames[-1]["seq"]
    assert messages[1].content == final["content"] and messages[1].reply_to_id == question_id
    assert messages[1].citations == final["citations"] and messages[1].answered is True
    assert row.last_seq == frames[-1]["seq"]
    assert row.title  # the first question names the conversation


def test_an_out_of_scope_question_is_declined_with_an_offer_of_a_person(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as tab:
        frames = tab.answer("What is the boiling point of mercury on Mars?")
    final = frames[-1]
    assert final["type"] == "agent_completed"
    assert final["message"]["answered"] is False and final["message"]["citations"] == []
    assert answer_text(frames) == final["message"]["content"]


def test_a_follow_up_question_is_answered_in_the_same_stream(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as tab:
        first = tab.answer(QUESTION)
        second = tab.answer("And how long is the warranty?")
    assert_contiguous(sequenced(first + second))
    assert second[-1]["type"] == "agent_completed" and second[-1]["reply_to"] == second[0]["message"]["id"]
    # The earlier turns reach the answerer: it searches the follow-up together with the question before it.
    query = next(f["query"] for f in second if f["type"] == "tool_executing")
    assert "warranty" in query and "password" in query, query


# --- several tabs ------------------------------------------------------------------------------------------------
def test_two_tabs_see_the_same_stream(live_server, streaming, vendor):
    conversation = conversation_new(streaming.workspace)
    cookie = session_cookie(streaming.owner)
    with ChatSocket(live_server, streaming.host, conversation.public_id, cookie) as asker, \
            ChatSocket(live_server, streaming.host, conversation.public_id, cookie) as watcher:
        asker.ask(QUESTION)
        asked = asker.until(lambda f: f["type"] == "agent_completed")
        watched = watcher.until(lambda f: f["type"] == "agent_completed")

    assert sequenced(asked) == sequenced(watched)  # the same events, seqs and bodies, in the same order
    assert [f["type"] for f in asked if "seq" not in f] == ["ack", "typing", "typing"]  # the ack is the asker's alone
    assert [f for f in watched if "seq" not in f] == [{"type": "typing", "role": "bot", "state": True},
                                                      {"type": "typing", "role": "bot", "state": False}]
    watched = sequenced(watched)
    assert_contiguous(watched)
    tokens = [e for e in watched if e["type"] == "token"]
    assert len(tokens) > 5  # a slow vendor: one event per piece, not one lump
    assert answer_text(watched) == watched[-1]["message"]["content"] == SLOW_ANSWER
    assert watched[-1]["message"]["provider"].startswith("openai") and watched[-1]["message"]["tokens_out"] == 60


def test_a_tab_opened_mid_answer_resumes_from_zero_and_then_follows_live(live_server, streaming):
    conversation = conversation_new(streaming.workspace)
    cookie = session_cookie(streaming.owner)
    with ChatSocket(live_server, streaming.host, conversation.public_id, cookie) as asker:
        asker.ask(QUESTION)
        asker.until(lambda f: f["type"] == "token")
        with ChatSocket(live_server, streaming.host, conversation.public_id, cookie) as late:
            live = late.until(lambda f: f["type"] == "agent_completed")
            everything = sequenced(late.replayed + live)
        asked = asker.until(lambda f: f["type"] == "agent_completed")
    assert late.replayed, "the events before it joined were replayed"
    assert_contiguous(everything)
    assert everything[0]["seq"] == 1 and everything[-1]["seq"] == asked[-1]["seq"]
    assert answer_text(everything) == SLOW_ANSWER


# --- resume after a drop -----------------------------------------------------------------------------------------
def _answer_stored(workspace: Any, conversation: Conversation) -> bool:
    return in_workspace(workspace, lambda: Message.objects.filter(
        conversation=conversation, role=MessageRole.ASSISTANT).exists())


def test_dropping_the_socket_mid_answer_and_resuming_yields_every_token_once_in_order(live_server, streaming):
    conversation = conversation_new(streaming.workspace)
    cookie = session_cookie(streaming.owner)
    first = ChatSocket(live_server, streaming.host, conversation.public_id, cookie)
    first.ask(QUESTION)
    before = first.until(lambda f: f["type"] == "token")
    before += first.until(lambda f: f["type"] == "token")  # two tokens in: the answer is under way
    first.ws.close()  # the network goes away mid-answer
    assert not _answer_stored(streaming.workspace, conversation), "the answer was over before the drop"

    # The answer goes on without the socket; wait until it is complete, so that part of it is only in the log.
    deadline = time.monotonic() + 60
    while not _answer_stored(streaming.workspace, conversation) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = sequenced(before)
    with ChatSocket(live_server, streaming.host, conversation.public_id, cookie, resume=False) as second:
        assert second.welcome["last_seq"] > seen[-1]["seq"]
        replayed = second.resume(seen[-1]["seq"])
    assert second.resumed["replayed"] == len(replayed) > 0
    events = seen + replayed
    assert_contiguous(events)
    assert len({e["seq"] for e in events}) == len(events)  # nothing twice
    assert events[-1]["type"] == "agent_completed"
    assert answer_text(events) == events[-1]["message"]["content"] == SLOW_ANSWER


def test_reconnecting_while_the_answer_still_streams_continues_live_without_gaps(live_server, streaming):
    conversation = conversation_new(streaming.workspace)
    cookie = session_cookie(streaming.owner)
    first = ChatSocket(live_server, streaming.host, conversation.public_id, cookie)
    first.ask(QUESTION)
    before = first.until(lambda f: f["type"] == "token")
    first.ws.close()
    with ChatSocket(live_server, streaming.host, conversation.public_id, cookie, resume=False) as second:
        seen = sequenced(before)
        replayed = second.resume(seen[-1]["seq"])
        rest = replayed if replayed and replayed[-1]["type"] == "agent_completed" else \
            replayed + second.until(lambda f: f["type"] == "agent_completed")
    events = seen + sequenced(rest)
    assert_contiguous(events)
    assert answer_text(events) == SLOW_ANSWER


def test_a_message_resent_after_a_reconnect_is_stored_and_answered_once(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    cookie = session_cookie(knowledge.owner)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as tab:
        client_id = tab.ask(QUESTION)
        frames = tab.until(lambda f: f["type"] == "agent_completed")
    with ChatSocket(live_server, knowledge.host, conversation.public_id, cookie, resume=False) as again:
        again.resume(frames[-1]["seq"])
        again.ask("a retry carries the first text's id", client_id=client_id)
        ack = again.recv()
        assert ack["type"] == "ack" and ack["duplicate"] is True and ack["client_id"] == client_id
        assert ack["message_id"] == frames[0]["message"]["id"] and ack["message_seq"] == frames[0]["seq"]
        nonce = secrets.token_hex(3)
        again.send({"type": "ping", "nonce": nonce})
        assert again.recv() == {"type": "pong", "last_seq": frames[-1]["seq"], "nonce": nonce}  # no second answer
    roles = in_workspace(knowledge.workspace, lambda: list(
        Message.objects.filter(conversation=conversation).values_list("role", flat=True)))
    assert roles == [MessageRole.CUSTOMER, MessageRole.ASSISTANT]


# --- bad input -----------------------------------------------------------------------------------------------------
@pytest.fixture
def tab(live_server, knowledge) -> Iterator[ChatSocket]:
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as socket:
        yield socket


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u00a0\n"])
def test_empty_and_whitespace_messages_are_refused(tab, text):
    error = tab.expect_error({"type": "message", "client_id": "empty-1", "text": text}, "empty_message")
    assert error["client_id"] == "empty-1" and error["message"]
    tab.still_usable()


def test_a_100_kb_message_is_refused_and_the_socket_stays_usable(tab):
    error = tab.expect_error({"type": "message", "client_id": "big-1", "text": "x" * 100_000}, "frame_too_large")
    assert error["details"]["max_bytes"] == settings.CHAT_WS_MAX_FRAME_BYTES
    tab.still_usable()


def test_a_message_over_the_character_cap_is_refused(tab):
    text = "x" * (settings.CHAT_MESSAGE_MAX_CHARS + 1)
    error = tab.expect_error({"type": "message", "client_id": "long-1", "text": text}, "message_too_long")
    assert error["details"] == {"max_chars": settings.CHAT_MESSAGE_MAX_CHARS, "chars": len(text)}
    assert error["client_id"] == "long-1"
    tab.still_usable()


@pytest.mark.parametrize("frame", ["{not json", "[1, 2]", '"message"', "null", '{"text": "no type"}', '{"type": 7}'])
def test_malformed_frames_are_refused(tab, frame):
    tab.expect_error(frame, "malformed_frame")
    tab.still_usable()


def test_unknown_types_are_refused(tab):
    error = tab.expect_error({"type": "launch_missiles"}, "unknown_type")
    assert "message" in error["details"]["known"]
    tab.still_usable()


def test_binary_frames_are_refused(tab):
    tab.expect_error(b"\x00\x01\x02binary", "binary_not_supported")
    tab.still_usable()


@pytest.mark.parametrize("frame,code", [
    ({"type": "message", "text": "no id"}, "invalid"),
    ({"type": "message", "client_id": "has spaces", "text": "hi"}, "invalid"),
    ({"type": "message", "client_id": "x" * 65, "text": "hi"}, "invalid"),
    ({"type": "message", "client_id": "ok", "text": ["not", "text"]}, "invalid"),
    ({"type": "resume", "last_seq": "7"}, "invalid"),
    ({"type": "resume", "last_seq": True}, "invalid"),
    ({"type": "feedback", "message_id": 1, "value": 5}, "invalid"),
    ({"type": "typing", "state": "yes"}, "invalid"),
])
def test_invalid_fields_are_refused(tab, frame, code):
    tab.expect_error(frame, code)
    tab.still_usable()


def test_resume_with_a_negative_or_future_seq_is_refused(tab):
    tab.expect_error({"type": "resume", "last_seq": -1}, "invalid_seq")
    error = tab.expect_error({"type": "resume", "last_seq": 10_000_000}, "invalid_seq")
    assert error["details"]["last_seq"] == 0
    tab.still_usable()
    assert tab.resume(0) == []


def test_html_and_script_in_a_question_are_stored_and_echoed_as_text(live_server, knowledge, host_client):
    payload = '<script>alert("x")</script><img src=x onerror="alert(1)"> & <b>bold</b>'
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as tab:
        frames = tab.answer(payload)
    assert frames[0]["type"] == "message" and frames[0]["message"]["content"] == payload
    stored = in_workspace(knowledge.workspace, lambda: Message.objects.get(
        conversation=conversation, role=MessageRole.CUSTOMER).content)
    assert stored == payload
    page = live_server.request("GET", knowledge.host, f"/conversations/{conversation.public_id}/",
                               headers={"Cookie": session_cookie(knowledge.owner)})
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
    assert "<script>alert(" not in page.text and "<img src=x" not in page.text


def test_a_flood_of_frames_is_rate_limited_and_the_socket_recovers(tab):
    for index in range(settings.CHAT_WS_FRAME_BURST * 3):
        tab.send({"type": "ping", "nonce": index})
    frames = _drain(tab, 3)
    limited = [f for f in frames if f["type"] == "error"]
    assert limited and all(f["code"] == "rate_limited" for f in limited)
    assert limited[0]["retry_after"] >= 1 and limited[0]["details"]["retry_after"] == limited[0]["retry_after"]
    pongs = [f for f in frames if f["type"] == "pong"]
    # The burst (less the resume frame sent on connect, plus what refilled meanwhile) got through; the rest not.
    assert settings.CHAT_WS_FRAME_BURST - 1 <= len(pongs) < settings.CHAT_WS_FRAME_BURST * 2
    time.sleep(limited[-1]["retry_after"])
    tab.still_usable()


def _drain(tab: ChatSocket, quiet: float) -> list[dict[str, Any]]:
    """Every frame until none arrives for `quiet` seconds (frames that never stop fail after a deadline)."""
    frames = []
    deadline = time.monotonic() + 120
    while True:
        try:
            frames.append(tab.recv(timeout=quiet))
        except TimeoutError:
            return frames
        assert time.monotonic() < deadline, f"never {quiet} s quiet in 120 s: {frames[-5:]}"


def test_a_flood_of_questions_is_rate_limited_per_connection(tab):
    client_ids = [tab.ask(f"{QUESTION} ({n})") for n in range(settings.CHAT_WS_MESSAGE_BURST + 3)]
    frames = _drain(tab, 5)
    outcome = {}
    for frame in frames:
        if frame["type"] in ("ack", "error") and frame.get("client_id"):
            outcome.setdefault(frame["client_id"], frame["type"] if frame["type"] == "ack" else frame["code"])
    assert set(outcome) == set(client_ids)  # every message got an answer of its own: ack or a clear error
    assert outcome[client_ids[0]] == "ack"
    assert list(outcome.values()).count("rate_limited") >= 3
    assert set(outcome.values()) <= {"ack", "rate_limited", "answer_in_progress"}
    tab.still_usable()


def test_a_client_that_ignores_rate_limits_is_disconnected(tab):
    for index in range(settings.CHAT_WS_FRAME_BURST * 20):
        try:
            tab.send({"type": "ping", "nonce": index})
        except ConnectionClosed:
            break
    assert closed_with(tab.ws) == 4429


# --- permissions and authentication ------------------------------------------------------------------------------
def test_a_viewer_can_watch_but_not_post(live_server, knowledge):
    viewer = member(knowledge.workspace, "viewer")
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, session_cookie(viewer)) as tab:
        assert tab.welcome["you"] == {"kind": "member", "role": "viewer", "can_post": False}
        error = tab.expect_error({"type": "message", "client_id": "v-1", "text": "hello"}, "permission_denied")
        assert error["client_id"] == "v-1"
        tab.expect_error({"type": "request_human"}, "permission_denied")
        tab.still_usable()


def test_sockets_without_a_member_session_are_refused(live_server, knowledge, other_tenant):
    conversation = conversation_new(knowledge.workspace)
    path = f"/ws/chat/{conversation.public_id}/"
    for cookie in (None, f"{settings.SESSION_COOKIE_NAME}=not-a-session", session_cookie(other_tenant.owner)):
        socket = live_server.ws_connect(knowledge.host, path, additional_headers={"Cookie": cookie} if cookie else {})
        assert closed_with(socket) == 4403, cookie
    # A logged-in member, but the page opening the socket is another site's.
    socket = live_server.ws_connect(knowledge.host, path, additional_headers={
        "Cookie": session_cookie(knowledge.owner), "Origin": "http://evil.example"})
    assert closed_with(socket) == 4403


@pytest.mark.parametrize("conversation_id", ["not-a-uuid", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000"])
def test_unknown_conversations_are_not_found(live_server, knowledge, conversation_id):
    socket = live_server.ws_connect(knowledge.host, f"/ws/chat/{conversation_id}/",
                                    additional_headers={"Cookie": session_cookie(knowledge.owner)})
    assert closed_with(socket) == 4404


# --- isolation -----------------------------------------------------------------------------------------------------
def test_a_socket_on_workspace_a_can_never_open_a_conversation_of_b(live_server, knowledge, other_tenant):
    b_conversation = conversation_new(other_tenant.workspace)
    path = f"/ws/chat/{b_conversation.public_id}/"
    # A's owner on A's host, with B's conversation id (known or guessed): as if it did not exist.
    socket = live_server.ws_connect(knowledge.host, path, additional_headers={"Cookie": session_cookie(knowledge.owner)})
    assert closed_with(socket) == 4404
    # A's owner on B's host: not a member there.
    socket = live_server.ws_connect(other_tenant.host, path,
                                    additional_headers={"Cookie": session_cookie(knowledge.owner)})
    assert closed_with(socket) == 4403
    # The guard is not vacuous: B's owner does open it.
    with ChatSocket(live_server, other_tenant.host, b_conversation.public_id, session_cookie(other_tenant.owner)) as tab:
        assert tab.welcome["conversation"]["id"] == str(b_conversation.public_id)


def test_the_same_conversation_id_in_two_workspaces_never_shares_events(live_server, knowledge, other_tenant):
    """Ids are unique per schema only; the event log, its seqs and channel carry the schema, so even a collision
    (forced here) keeps the streams apart."""
    b_conversation = conversation_new(other_tenant.workspace)
    a_conversation = in_workspace(knowledge.workspace, lambda: Conversation.objects.create(
        public_id=b_conversation.public_id, channel="dashboard"))
    with ChatSocket(live_server, knowledge.host, a_conversation.public_id, session_cookie(knowledge.owner)) as a_tab, \
            ChatSocket(live_server, other_tenant.host, b_conversation.public_id,
                       session_cookie(other_tenant.owner)) as b_tab:
        b_frames = b_tab.answer("Is there anything about routers?")
        assert b_frames[0]["seq"] == 1
        b_tab.send({"type": "typing", "state": True})
        with pytest.raises(TimeoutError):
            a_tab.recv(timeout=2)  # nothing of B's conversation: no events, no typing
        a_frames = a_tab.answer(QUESTION)
        assert a_frames[0]["seq"] == 1  # A's own counter, untouched by B's events
        assert a_frames[0]["message"]["content"] == QUESTION
        with pytest.raises(TimeoutError):
            b_tab.recv(timeout=1)


# --- the rest of the protocol ------------------------------------------------------------------------------------
def test_typing_reaches_the_other_tabs_but_not_the_sender(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    cookie = session_cookie(knowledge.owner)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as typist, \
            ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as other:
        typist.send({"type": "typing", "state": True})
        assert other.recv() == {"type": "typing", "role": "customer", "state": True}
        typist.send({"type": "typing", "state": False})
        assert other.recv() == {"type": "typing", "role": "customer", "state": False}
        typist.still_usable()  # its next frame is the pong: its own typing never came back


def test_feedback_is_stored_and_every_tab_sees_it(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    cookie = session_cookie(knowledge.owner)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as tab, \
            ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as other:
        frames = tab.answer(QUESTION)
        other.until(lambda f: f["type"] == "agent_completed")
        answer_id = frames[-1]["message"]["id"]
        tab.send({"type": "feedback", "message_id": answer_id, "value": -1, "comment": "<b>too short</b>"})
        event = tab.recv()
        assert event["type"] == "feedback" and event["message_id"] == answer_id and event["value"] == -1
        assert other.recv() == event
        tab.expect_error({"type": "feedback", "message_id": frames[0]["message"]["id"], "value": 1}, "invalid")
        tab.expect_error({"type": "feedback", "message_id": 999_999, "value": 1}, "not_found")
    stored = in_workspace(knowledge.workspace, lambda: Message.objects.get(pk=answer_id))
    assert (stored.feedback, stored.feedback_comment) == (-1, "<b>too short</b>")


def test_asking_for_a_person_sets_waiting_and_the_bot_stops_answering(live_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    cookie = session_cookie(knowledge.owner)
    with ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as tab, \
            ChatSocket(live_server, knowledge.host, conversation.public_id, cookie) as other:
        tab.send({"type": "request_human"})
        event = tab.recv()
        assert event["type"] == "status" and event["status"] == "waiting" and event["reason"] == "asked"
        assert other.recv() == event
        client_id = tab.ask("Hello? Is someone there?")
        message, ack = tab.recv(), tab.recv()
        assert message["type"] == "message" and ack["type"] == "ack" and ack["client_id"] == client_id
        tab.still_usable()  # no agent_started: a person answers now
        tab.send({"type": "request_human"})  # asking again changes nothing and says nothing
        tab.still_usable()
    row = in_workspace(knowledge.workspace, lambda: Conversation.objects.get(pk=conversation.pk))
    assert (row.status, row.handoff_reason) == (ConversationStatus.WAITING, "asked")
    # The message's seq is written once the log has issued it (services._record_when_known), not before the reply.
    deadline = time.monotonic() + 10
    while (seq := in_workspace(knowledge.workspace,
                               lambda: Message.objects.get(client_message_id=client_id).seq)) is None:
        assert time.monotonic() < deadline, "the message's seq was never recorded"
        time.sleep(0.1)
    assert seq == message["seq"]


def test_a_second_question_while_the_bot_answers_is_refused_not_lost(live_server, streaming):
    conversation = conversation_new(streaming.workspace)
    with ChatSocket(live_server, streaming.host, conversation.public_id, session_cookie(streaming.owner)) as tab:
        tab.ask(QUESTION)
        tab.until(lambda f: f["type"] == "token")
        second = tab.ask("And the warranty?")
        frames = tab.until(lambda f: f["type"] == "error" and f.get("client_id") == second)
        assert frames[-1]["code"] == "answer_in_progress" and frames[-1]["details"]["retry_after"] == 1
        tab.until(lambda f: f["type"] == "agent_completed")
        tab.ask("And the warranty?", client_id=second)  # the client retries once the answer is done
        assert tab.until(lambda f: f["type"] == "ack")[-1]["duplicate"] is False


def test_an_answer_engine_failure_is_a_clear_error_event(live_server, django_db_blocker):
    """A workspace whose knowledge tables are broken: the engine raises; the customer gets an error event."""
    with django_db_blocker.unblock():
        broken = workspace_with_owner(name="Broken Knowledge")
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{broken.workspace.schema_name}".documents_chunk RENAME TO documents_chunk_gone')
    conversation = conversation_new(broken.workspace)
    with ChatSocket(live_server, broken.host, conversation.public_id, session_cookie(broken.owner)) as tab:
        frames = tab.answer(QUESTION)
        error = frames[-1]
        assert error["type"] == "error" and error["code"] == "answer_failed" and error["message"]
        assert error["reply_to"] == frames[0]["message"]["id"] and error["seq"] == sequenced(frames)[-2]["seq"] + 1
        assert "agent_completed" not in [f["type"] for f in frames]
        tab.still_usable()
        # Retrying the same message tries again (and fails again, clearly).
        tab.ask(QUESTION, client_id=frames[0]["message"]["client_id"])
        again = tab.until(lambda f: f["type"] == "error" and "seq" in f)
        assert again[0]["type"] == "ack" and again[0]["duplicate"] is True
        assert again[-1]["code"] == "answer_failed"


# --- timeouts (a server of their own, with short limits) ---------------------------------------------------------
@pytest.fixture(scope="module")
def impatient_server(django_db_blocker) -> Iterator[LiveServer]:
    from django.db import connection as db

    with django_db_blocker.unblock():
        server = start_live_server(db.settings_dict, LOG_DIR, name="asgi-chat-impatient", extra_env={
            "CHAT_WS_IDLE_TIMEOUT": "4", "CHAT_ANSWER_TIMEOUT": "2"})
    yield server
    server.process.stop()


@pytest.mark.slow
def test_an_idle_socket_is_closed(impatient_server, knowledge):
    conversation = conversation_new(knowledge.workspace)
    with ChatSocket(impatient_server, knowledge.host, conversation.public_id, session_cookie(knowledge.owner)) as tab:
        for _ in range(6):  # pings keep it open past the idle timeout
            time.sleep(1)
            tab.still_usable()
        assert closed_with(tab.ws) == 4408  # then silence closes it


@pytest.mark.slow
def test_a_stalled_vendor_ends_in_an_answer_timeout_event(impatient_server, django_db_blocker):
    stalled = FakeVendor("openai", [Reply(mode="stall_first")])
    try:
        with django_db_blocker.unblock():
            workspace = workspace_with_owner(name="Stalled Vendor")
            knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))
            in_workspace(workspace.workspace, lambda: AssistantSettings.objects.update_or_create(id=1, defaults={
                "providers": [{"kind": "openai", "base_url": stalled.base_url, "model": "m", "api_key": "k",
                               "first_token_timeout": 60}]}))
        conversation = conversation_new(workspace.workspace)
        with ChatSocket(impatient_server, workspace.host, conversation.public_id,
                        session_cookie(workspace.owner)) as tab:
            frames = tab.answer(QUESTION)
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "answer_timeout" and "seq" in frames[-1]
        assert "agent_completed" not in [f["type"] for f in frames]
    finally:
        stalled.close()
