"""Rate limits of the widget against a server with tight limits (tests/embeds/conftest.py TIGHT_LIMITS, counted per
hour): HTTP per IP, per embed and per workspace (429 + Retry-After in the error shape), visitor sessions per IP,
and on the socket: questions per IP, per embed and per workspace (`error {code: "rate_limited", retry_after}`), the
socket staying usable. Each test plays its own IPs (X-Forwarded-For, trusted from 127.0.0.1 by that server) in a
workspace of its own; a server that trusts no proxy counts a rotating X-Forwarded-For as one client."""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.embeds.conftest import Door, embed_make, workspace_on_plan

SHOP = "https://shop.example"


@pytest.fixture
def limited(django_db_blocker, limited_server) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Limits Co", plan="pro")
        door = Door(limited_server, ws.host)
    return {"ws": ws, "door": door, "embed": embed_make(ws.workspace, [SHOP])}


def ip() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def assert_rate_limited(response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    body = response.json()["error"]
    assert body["code"] == "rate_limited" and body["details"]["retry_after"] == retry_after and retry_after >= 1
    return retry_after


def test_http_per_ip(limited):
    door, key = limited["door"], limited["embed"].public_key
    one = ip()
    for _ in range(30):
        assert door.config(key, SHOP, X_Forwarded_For=one).status_code == 200
    assert_rate_limited(door.config(key, SHOP, X_Forwarded_For=one))
    # the frame is the same budget; another visitor is not affected
    assert door.frame(key, SHOP, **{"X-Forwarded-For": one}).status_code == 429
    assert door.config(key, SHOP, X_Forwarded_For=ip()).status_code == 200


def test_http_per_embed(limited, django_db_blocker):
    door, key = limited["door"], limited["embed"].public_key
    for _ in range(40):
        assert door.config(key, SHOP, X_Forwarded_For=ip()).status_code == 200
    assert_rate_limited(door.config(key, SHOP, X_Forwarded_For=ip()))
    other = embed_make(limited["ws"].workspace, [SHOP], name="Second")
    assert door.config(other.public_key, SHOP, X_Forwarded_For=ip()).status_code == 200


def test_http_per_workspace(limited):
    door, ws = limited["door"], limited["ws"].workspace
    embeds = [limited["embed"], embed_make(ws, [SHOP], name="B")]
    for index in range(60):
        assert door.config(embeds[index % 2].public_key, SHOP, X_Forwarded_For=ip()).status_code == 200
    third = embed_make(ws, [SHOP], name="C")
    assert_rate_limited(door.config(third.public_key, SHOP, X_Forwarded_For=ip()))


def test_visitor_sessions_per_ip(limited):
    door, key = limited["door"], limited["embed"].public_key
    one = ip()
    for _ in range(8):
        assert door.session(key, SHOP, ip=one).status_code == 200
    assert_rate_limited(door.session(key, SHOP, ip=one))
    assert door.session(key, SHOP, ip=ip()).status_code == 200


def ask(socket, client_id: str, text: str = "Hello, can you help me?", timeout: float = 90) -> dict[str, Any]:
    """Send a question; the first frame that settles it: its answer or the error about it."""
    socket.send(json.dumps({"type": "message", "client_id": client_id, "text": text}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == "agent_completed" or (frame["type"] == "error" and frame.get("client_id") == client_id):
            return frame
    raise AssertionError("no answer")


def opened(door: Door, key: str, address: str):
    session = door.token(key, SHOP, ip=address)
    conversation = door.conversation_new(session["token"])
    socket = door.socket(conversation, session["token"], X_Forwarded_For=address)
    assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    socket.send(json.dumps({"type": "resume", "last_seq": 0}))
    assert json.loads(socket.recv(timeout=30))["type"] == "resumed"
    return socket


def test_socket_questions_per_ip(limited):
    door, key = limited["door"], limited["embed"].public_key
    one = ip()
    with opened(door, key, one) as socket:
        assert ask(socket, "a")["type"] == "agent_completed"
        assert ask(socket, "b")["type"] == "agent_completed"
        refused = ask(socket, "c")
        assert refused["type"] == "error" and refused["code"] == "rate_limited" and refused["retry_after"] >= 1
        socket.send(json.dumps({"type": "ping", "nonce": "still-here"}))  # the socket stays usable
        deadline = time.monotonic() + 30
        while (frame := json.loads(socket.recv(timeout=30)))["type"] != "pong":
            assert time.monotonic() < deadline, f"no pong within 30 s, frames kept coming: {frame}"
        assert frame["nonce"] == "still-here"
    # Another visitor (IP) of the same embed may still ask.
    with opened(door, key, ip()) as socket:
        assert ask(socket, "d")["type"] == "agent_completed"


def test_socket_questions_per_embed_and_per_workspace(limited):
    door, ws = limited["door"], limited["ws"].workspace
    first = limited["embed"]
    for n in range(3):  # three visitors, one question each: the embed's budget
        with opened(door, first.public_key, ip()) as socket:
            assert ask(socket, f"e{n}")["type"] == "agent_completed"
    with opened(door, first.public_key, ip()) as socket:
        assert ask(socket, "e3")["code"] == "rate_limited"
    second = embed_make(ws, [SHOP], name="Other embed")
    with opened(door, second.public_key, ip()) as socket:  # the 4th of the workspace, first of this embed
        assert ask(socket, "f0")["type"] == "agent_completed"
    with opened(door, second.public_key, ip()) as socket:  # the workspace's budget is spent
        refused = ask(socket, "f1")
        assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1


def test_socket_connections_per_ip(limited):
    door, key = limited["door"], limited["embed"].public_key
    one = ip()
    session = door.token(key, SHOP, ip=one)
    conversation = door.conversation_new(session["token"])
    for _ in range(20):
        with door.socket(conversation, session["token"], X_Forwarded_For=one) as socket:
            assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    socket = door.socket(conversation, session["token"], X_Forwarded_For=one)
    frame = json.loads(socket.recv(timeout=30))
    assert frame["type"] == "error" and frame["code"] == "rate_limited" and frame["retry_after"] >= 1
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=30)
    assert closed.value.rcvd.code == 4429


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_per_ip_limits(django_db_blocker,
                                                                               untrusted_limited_server):
    """A script rotating X-Forwarded-For at a server that trusts no proxy (the default) is one client: its visitor
    sessions and its socket connections stop at the per-IP budgets (TIGHT_LIMITS: 8 sessions, 20 sockets)."""
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Spoof Co", plan="pro")
        door = Door(untrusted_limited_server, ws.host)
        key = embed_make(ws.workspace, [SHOP]).public_key
    session = door.token(key, SHOP, ip=ip())
    conversation = door.conversation_new(session["token"])
    for _ in range(7):
        assert door.session(key, SHOP, ip=ip()).status_code == 200
    assert_rate_limited(door.session(key, SHOP, ip=ip()))

    for _ in range(20):
        with door.socket(conversation, session["token"], X_Forwarded_For=ip()) as socket:
            assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    with door.socket(conversation, session["token"], X_Forwarded_For=ip()) as socket:
        frame = json.loads(socket.recv(timeout=30))
    assert frame["type"] == "error" and frame["code"] == "rate_limited"
