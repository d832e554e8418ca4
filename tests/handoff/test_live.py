"""The handoff on the real ASGI server: the race of two agents for one conversation (real HTTP, two sessions, at
the same moment), the inbox socket (live, staff only, per workspace), notes that never reach a customer socket,
typing both ways, and isolation between workspaces over HTTP and WebSocket."""
from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from chat import services
from chat.models import Conversation, ConversationStatus
from tests.chat.test_conversations_api import browser_login
from tests.chat.test_protocol import ChatSocket
from tests.config.test_websocket import session_cookie
from tests.factories import WorkspaceWithOwner, member, workspace_with_owner
from tests.handoff.helpers import in_workspace, log_events
from tests.live import LiveServer

API = "/api/v1/conversations/"


class Agent:
    """A person logged in to the dashboard of one workspace (a real login), calling the API as the inbox does."""

    def __init__(self, server: LiveServer, host: str, user: Any) -> None:
        self.server, self.host, self.user = server, host, user
        self.browser = browser_login(server, host, user.email)

    @property
    def cookie(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.browser.cookies.items())

    def call(self, method: str, path: str, body: Any = None, host: str | None = None) -> requests.Response:
        host = host or self.host
        headers = {"Host": f"{host}:{self.server.port}", "Referer": f"http://{host}:{self.server.port}/",
                   "X-CSRFToken": self.browser.cookies["csrftoken"], "Content-Type": "application/json"}
        return self.browser.request(method, f"http://127.0.0.1:{self.server.port}{path}", headers=headers,
                                    data=json.dumps(body if body is not None else {}) if method != "GET" else None,
                                    timeout=60, allow_redirects=False)

    def inbox_socket(self, host: str | None = None):
        return self.server.ws_connect(host or self.host, "/ws/inbox/", additional_headers={"Cookie": self.cookie})


def recv_json(socket: Any, timeout: float = 15) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def inbox_until(socket: Any, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = recv_json(socket, timeout=max(0.1, deadline - time.monotonic()))
        frames.append(frame)
        if done(frame):
            return frames
        assert time.monotonic() < deadline, f"frames kept coming for {timeout} s, none the awaited: {frames[-5:]}"


def close_code(socket: Any, timeout: float = 10) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


@pytest.fixture(scope="module")
def shop(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Live Handoff")


@pytest.fixture(scope="module")
def people(shop, django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        users = {name: member(shop.workspace, role) for name, role in
                 (("alice", "agent"), ("bob", "agent"), ("viewer", "viewer"))}
        users["alice"].full_name, users["bob"].full_name = "Alice Live", "Bob Live"
        for name in ("alice", "bob"):
            users[name].save(update_fields=["full_name"])
    return users


@pytest.fixture(scope="module")
def agents(live_server, shop, people, django_db_blocker) -> dict[str, Agent]:
    with django_db_blocker.unblock():
        return {name: Agent(live_server, shop.host, people[name]) for name in ("alice", "bob", "viewer")}


def waiting_conversation(workspace: Any) -> Conversation:
    def make() -> Conversation:
        conversation = services.conversation_start(channel="widget", visitor_id=f"v-{secrets.token_hex(3)}",
                                                   title="Where is my parcel?")
        return services.conversation_request_human(conversation=conversation)
    return in_workspace(workspace, make)


# --- the race ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attempt", range(5))
def test_two_agents_join_at_the_same_moment_exactly_one_wins(shop, agents, people, attempt):
    conversation = waiting_conversation(shop.workspace)
    path = f"{API}{conversation.public_id}/join/"
    start = threading.Barrier(2)
    results: dict[str, requests.Response] = {}

    def join(name: str) -> None:
        start.wait(timeout=30)
        results[name] = agents[name].call("POST", path)

    threads = [threading.Thread(target=join, args=(name,)) for name in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    statuses = sorted(response.status_code for response in results.values())
    assert statuses == [200, 409], {name: (r.status_code, r.text[:300]) for name, r in results.items()}
    winner = next(name for name, r in results.items() if r.status_code == 200)
    loser = next(name for name, r in results.items() if r.status_code == 409)
    error = results[loser].json()["error"]
    assert error["code"] == "conversation_taken"
    assert error["details"]["agent"] == {"id": people[winner].pk, "name": people[winner].full_name}
    assert people[winner].full_name in error["message"]
    stored = in_workspace(shop.workspace, lambda: Conversation.objects.get(pk=conversation.pk))
    assert stored.status == ConversationStatus.AGENT and stored.assigned_agent_id == people[winner].pk
    # One "joined" line in the conversation, not two.
    messages = agents[winner].call("GET", f"{API}{conversation.public_id}/messages/").json()
    assert [m["content"] for m in messages if m["role"] == "system"] == [f"{people[winner].full_name} joined the conversation"]


# --- the inbox socket, notes, typing ----------------------------------------------------------------------------------
def test_inbox_is_live_and_notes_never_reach_the_customer_stream(shop, agents, people, live_server):
    alice = agents["alice"]
    inbox = alice.inbox_socket()
    try:
        assert recv_json(inbox)["type"] == "welcome"
        listing = alice.call("GET", f"{API}inbox/?tab=waiting").json()
        assert listing["agents_online"] >= 1  # Alice's open inbox counts
        # A dashboard conversation: the owner's socket plays the customer (in a widget conversation only the visitor
        # may, docs/websocket-protocol.md).
        conversation = in_workspace(shop.workspace, services.conversation_start, channel="dashboard",
                                    visitor_id="v-live", title="Broken router")
        cid = str(conversation.public_id)
        with ChatSocket(live_server, shop.host, cid, session_cookie(shop.owner)) as customer:
            # The customer asks for a person in words: the inbox hears of it live.
            customer.ask("I need to speak to a real person")
            waiting = inbox_until(inbox, lambda f: f.get("event") == "waiting" and f["conversation"]["id"] == cid)
            assert waiting[-1]["conversation"]["handoff_reason"] == "keyword"
            status = customer.until(lambda f: f["type"] == "status")
            assert status[-1]["status"] == "waiting"
            # Someone has the inbox open: "a person will join" rather than "leave your email".
            assert status[-1]["next"]["available"] is True and status[-1]["next"]["ask_email"] is False
            counts = alice.call("GET", f"{API}inbox/?tab=waiting").json()
            assert cid in [c["id"] for c in counts["results"]] and counts["counts"]["waiting"]["count"] >= 1

            assert alice.call("POST", f"{API}{cid}/join/").status_code == 200
            joined = customer.until(lambda f: f["type"] == "agent_joined")
            assert joined[-1]["agent"]["name"] == "Alice Live"
            inbox_until(inbox, lambda f: f.get("event") == "assigned" and f["conversation"]["id"] == cid)

            # Typing both ways: the agent's pane socket speaks as the agent.
            pane = live_server.ws_connect(shop.host, f"/ws/chat/{cid}/?as=agent",
                                          additional_headers={"Cookie": alice.cookie})
            try:
                assert recv_json(pane)["type"] == "welcome"
                pane.send(json.dumps({"type": "resume", "last_seq": 0}))
                inbox_until(pane, lambda f: f["type"] == "resumed")
                pane.send(json.dumps({"type": "typing", "state": True}))
                typing = customer.until(lambda f: f["type"] == "typing")
                assert typing[-1] == {"type": "typing", "role": "agent", "state": True}
                customer.send({"type": "typing", "state": True})
                frame = inbox_until(pane, lambda f: f["type"] == "typing")[-1]
                assert frame["role"] == "customer"
                # A note: to the staff's inbox, never to the conversation's stream.
                note = alice.call("POST", f"{API}{cid}/notes/", {"text": "Internal: refund approved by Carol"})
                assert note.status_code == 201 and note.json()["role"] == "note"
                heard = inbox_until(inbox, lambda f: f.get("event") == "note")
                assert heard[-1]["note"]["content"] == "Internal: refund approved by Carol"
                # The agent replies over the pane socket (as the agent), and over REST.
                pane.send(json.dumps({"type": "message", "client_id": "pane-1", "text": "Hello from Alice"}))
                reply = customer.until(lambda f: f["type"] == "message" and f["message"]["role"] == "agent")
                assert reply[-1]["message"]["content"] == "Hello from Alice"
                assert reply[-1]["message"]["author_name"] == "Alice Live"
                posted = alice.call("POST", f"{API}{cid}/agent-messages/", {"text": "Your refund is approved."})
                assert posted.status_code == 201
                second = customer.until(lambda f: f["type"] == "message" and f["message"]["role"] == "agent")
                everything = joined + typing + reply + second
                assert "Carol" not in json.dumps(everything)
            finally:
                pane.close()
            # A fresh customer socket replaying the whole stream: no note in it either.
            with ChatSocket(live_server, shop.host, cid, session_cookie(shop.owner)) as replay:
                assert replay.replayed and "Carol" not in json.dumps(replay.replayed)
            # Hand back: the status goes to the customer, and the inbox.
            assert alice.call("POST", f"{API}{cid}/hand-back/").json()["status"] == "bot"
            back = customer.until(lambda f: f["type"] == "status")
            assert back[-1]["status"] == "bot"
    finally:
        inbox.close()


def test_only_agents_open_the_inbox(shop, agents, live_server):
    viewer = agents["viewer"]
    assert close_code(viewer.inbox_socket()) == 4403
    response = viewer.call("GET", f"{API}inbox/")
    assert response.status_code == 403 and response.json()["error"]["details"]["permission"] == "conversations.handle"
    anonymous = live_server.ws_connect(shop.host, "/ws/inbox/")
    assert close_code(anonymous) == 4403


def test_bad_input_is_4xx_never_500(shop, agents):
    alice = agents["alice"]
    conversation = waiting_conversation(shop.workspace)
    cid = conversation.public_id
    assert alice.call("POST", f"{API}{cid}/agent-messages/", {"text": "before joining"}).json()["error"]["code"] == "not_assigned"
    assert alice.call("POST", f"{API}{cid}/assign/", {"agent_id": "x"}).status_code == 400
    assert alice.call("POST", f"{API}{cid}/assign/", {"agent_id": 999999999}).status_code == 400
    assert alice.call("POST", f"{API}{cid}/notes/", {"text": "   "}).status_code == 400
    assert alice.call("POST", f"{API}{cid}/close/", {"send_transcript": True}).status_code == 400  # no email
    assert alice.call("GET", f"{API}inbox/?tab=nope").status_code == 400
    assert alice.call("POST", f"{API}00000000-0000-0000-0000-000000000000/join/").status_code == 404
    assert alice.call("POST", f"{API}{cid}/join/").status_code == 200
    assert alice.call("POST", f"{API}{cid}/agent-messages/", {"text": ""}).status_code == 400
    assert alice.call("POST", f"{API}{cid}/close/").json()["status"] == "closed"
    assert alice.call("POST", f"{API}{cid}/join/").json()["error"]["code"] == "conversation_closed"


# --- isolation ------------------------------------------------------------------------------------------------------
def test_an_agent_of_one_workspace_never_sees_another_workspaces_inbox(shop, agents, people, live_server, django_db_blocker):
    with django_db_blocker.unblock():
        other = workspace_with_owner(name="Other Handoff")
        other_agent_user = member(other.workspace, "agent")
    other_agent = Agent(live_server, other.host, other_agent_user)
    alice = agents["alice"]
    mine = alice.inbox_socket()
    theirs = other_agent.inbox_socket()
    try:
        assert recv_json(mine)["type"] == "welcome" and recv_json(theirs)["type"] == "welcome"
        # Alice's session on the other workspace's host: not a member there, over WebSocket and HTTP.
        assert close_code(alice.inbox_socket(host=other.host)) == 4403
        assert alice.call("GET", f"{API}inbox/", host=other.host).status_code in (401, 403)  # sessions are per host
        secret = in_workspace(other.workspace, services.conversation_start, channel="widget", visitor_id="v-b",
                              title="Secret Zebra order")
        sid = str(secret.public_id)
        # Events of the other workspace: its inbox hears them, Alice's never does.
        in_workspace(other.workspace, services.conversation_request_human, conversation=secret)
        assert other_agent.call("POST", f"{API}{sid}/join/").status_code == 200
        assert other_agent.call("POST", f"{API}{sid}/notes/", {"text": "Zebra note"}).status_code == 201
        assert other_agent.call("POST", f"{API}{sid}/agent-messages/", {"text": "Zebra reply"}).status_code == 201
        heard = inbox_until(theirs, lambda f: f.get("event") == "message" and f["conversation"]["id"] == sid)
        assert any(f.get("event") == "waiting" for f in heard)
        quiet_deadline = time.monotonic() + 60
        with pytest.raises(TimeoutError):
            while True:  # anything Alice's inbox gets must be her own workspace's; there is none in 3 s
                frame = recv_json(mine, timeout=3)
                assert sid not in json.dumps(frame) and "Zebra" not in json.dumps(frame), frame
                assert time.monotonic() < quiet_deadline, f"Alice's inbox never went quiet: {frame}"
        # Over HTTP, on her own host: the other workspace's conversation does not exist.
        for path in (f"{API}{sid}/join/", f"{API}{sid}/notes/", f"{API}{sid}/hand-back/", f"{API}{sid}/close/"):
            response = alice.call("POST", path, {"text": "x"})
            assert response.status_code == 404 and "Zebra" not in response.text, (path, response.text[:200])
        for tab in ("waiting", "mine", "open", "closed"):
            listing = alice.call("GET", f"{API}inbox/?tab={tab}")
            assert listing.status_code == 200 and sid not in listing.text and "Zebra" not in listing.text
        # Nor over her conversation socket.
        refused = live_server.ws_connect(shop.host, f"/ws/chat/{sid}/", additional_headers={"Cookie": alice.cookie})
        assert close_code(refused) == 4404  # no welcome: unknown here
    finally:
        mine.close()
        theirs.close()


def test_office_hours_over_the_api(shop, agents, live_server, django_db_blocker):
    with django_db_blocker.unblock():
        owner = Agent(live_server, shop.host, shop.owner)
    closed_all_week = {"enabled": True, "timezone": "Europe/Berlin", "weekly_hours": {}}
    saved = owner.call("PUT", f"{API}office-hours/", closed_all_week)
    assert saved.status_code == 200 and saved.json()["open_now"] is False
    try:
        # An agent may read them but not change them.
        assert agents["alice"].call("GET", f"{API}office-hours/").json()["timezone"] == "Europe/Berlin"
        assert agents["alice"].call("PUT", f"{API}office-hours/", closed_all_week).status_code == 403
        for bad in ({"enabled": True, "timezone": "Nowhere/Atlantis", "weekly_hours": {}},
                    {"enabled": True, "timezone": "UTC", "weekly_hours": {"someday": [["09:00", "17:00"]]}},
                    {"enabled": True, "timezone": "UTC", "weekly_hours": {"mon": [["17:00", "09:00"]]}},
                    {"enabled": True, "timezone": "UTC", "weekly_hours": {"mon": [["9", "x"]]}}):
            assert owner.call("PUT", f"{API}office-hours/", bad).status_code == 400, bad
        # Outside office hours, even with Alice's inbox open, the customer is asked for an email.
        inbox = agents["alice"].inbox_socket()
        try:
            assert recv_json(inbox)["type"] == "welcome"
            conversation = waiting_conversation(shop.workspace)
            status = log_events(shop.workspace.schema_name, conversation)[-1]
            assert status["type"] == "status" and status["next"]["office_hours_open"] is False
            assert status["next"]["ask_email"] is True
        finally:
            inbox.close()
    finally:
        owner.call("PUT", f"{API}office-hours/", {"enabled": False, "timezone": "UTC", "weekly_hours": {}})
