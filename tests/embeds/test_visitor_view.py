"""What a widget visitor's socket carries, over the real server (docs/widget.md, "What a visitor sees"): the same
conversation log feeds a staff socket and a visitor socket; the visitor's is cut on the server — retrieval sources
only when the embed shows them and then only title/section/page/url/snippet (never document or chunk ids, file
names, scores), no plan or credit balance in errors — live, on replay and in the transcript. And a visitor's
socket closes as soon as its embed is switched off or its page's origin is taken off the list."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from embeds import services
from tenants import billing
from tests.chat.test_protocol import ChatSocket, knowledge_seed, session_cookie
from tests.chat.test_socket_authority import frames_until_closed
from tests.embeds.conftest import RETURNS, Door, embed_make, in_workspace, workspace_on_plan

SHOP = "https://shop.example"
QUESTION = "How many days do I have to return a product?"
INTERNAL_SOURCE_FIELDS = {"document_id", "chunk_id", "score", "filename", "dashboard_url"}
VISITOR_SOURCE_FIELDS = {"title", "section", "page", "url", "snippet", "quoted"}  # never dashboard_url


@pytest.fixture(scope="module")
def shop(django_db_blocker, widget_server) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Visitor View Co", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS))
        return {"ws": ws, "door": Door(widget_server, ws.host)}


def until(socket: Any, done: Any, timeout: float = 90) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        frames.append(frame)
        if done(frame):
            return frames


def visitor_socket(door: Door, conversation: str, token: str) -> Any:
    socket = door.socket(conversation, token)
    assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    return socket


def of_type(frames: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [frame for frame in frames if frame["type"] == kind]
    assert found, f"no {kind} in {[f['type'] for f in frames]}"
    return found[-1]


@pytest.mark.parametrize("show_sources", [False, True], ids=["sources-off", "sources-on"])
def test_a_visitor_gets_no_internal_retrieval_data_live_on_replay_or_in_the_transcript(shop, widget_server,
                                                                                       show_sources):
    door: Door = shop["door"]
    ws = shop["ws"]
    embed = embed_make(ws.workspace, [SHOP], name=f"Sources {show_sources}", behaviour={"show_sources": show_sources})
    session = door.token(embed.public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    staff = ChatSocket(widget_server, ws.host, conversation, session_cookie(ws.owner))
    visitor = visitor_socket(door, conversation, session["token"])
    visitor.send(json.dumps({"type": "resume", "last_seq": 0}))
    visitor.send(json.dumps({"type": "message", "client_id": "q1", "text": QUESTION}))
    live = until(visitor, lambda f: f["type"] == "agent_completed")

    # Staff see everything the engine found (the same log, unredacted).
    staff_frames = staff.until(lambda f: f["type"] == "agent_completed")
    staff_sources = of_type(staff_frames, "tool_completed")["sources"]
    assert staff_sources and INTERNAL_SOURCE_FIELDS <= set(staff_sources[0])
    assert of_type(staff_frames, "agent_completed")["message"]["citations"][0]["document_id"]
    staff.close()

    replay_socket = visitor_socket(door, conversation, session["token"])
    replay_socket.send(json.dumps({"type": "resume", "last_seq": 0}))
    replayed = until(replay_socket, lambda f: f["type"] == "resumed")
    replay_socket.close()
    visitor.close()
    transcript = door.visitor_call("GET", f"/widget/v1/conversations/{conversation}/messages/", session["token"])
    answer = transcript.json()["messages"][-1]
    assert answer["role"] == "assistant"
    assert not any(name in transcript.content.decode() for name in ('"dashboard_url"', '"chunk_id"', '/knowledge/'))

    for frames in (live, replayed):
        sources = of_type(frames, "tool_completed")["sources"]
        citations = of_type(frames, "agent_completed")["message"]["citations"]
        if show_sources:
            assert sources and citations
            assert all(set(s) <= VISITOR_SOURCE_FIELDS and s.get("title") for s in sources + citations)
        else:
            assert sources == [] and citations == []
        assert not any(name in json.dumps(frames) for name in ('"document_id"', '"chunk_id"', '"score"',
                                                               '"filename"', '"confidence"', '"dashboard_url"',
                                                               '/knowledge/'))
    if show_sources:
        assert answer["citations"] and all(set(c) <= VISITOR_SOURCE_FIELDS for c in answer["citations"])
    else:
        assert answer["citations"] == []


def test_a_visitor_never_sees_the_plan_or_the_credit_balance(widget_server, django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Broke Visitor Co", plan="free")  # no overage: the credits simply run out
        door = Door(widget_server, ws.host)
    embed = embed_make(ws.workspace, [SHOP])
    balance = billing.credit_balance(workspace=ws.workspace)
    billing.credits_consume(workspace=ws.workspace, amount=balance, reason="test drain", reference="test:drain")
    session = door.token(embed.public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    staff = ChatSocket(widget_server, ws.host, conversation, session_cookie(ws.owner))
    visitor = visitor_socket(door, conversation, session["token"])
    visitor.send(json.dumps({"type": "resume", "last_seq": 0}))
    visitor.send(json.dumps({"type": "message", "client_id": "q1", "text": QUESTION}))
    refused = of_type(until(visitor, lambda f: f["type"] == "error" and "seq" in f), "error")
    staff_refused = of_type(staff.until(lambda f: f["type"] == "error"), "error")
    staff.close()
    assert staff_refused["code"] == "quota_exceeded" and staff_refused["details"]["plan"] == "free"
    assert "balance" in staff_refused["details"]
    replay_socket = visitor_socket(door, conversation, session["token"])
    replay_socket.send(json.dumps({"type": "resume", "last_seq": 0}))
    replayed = of_type(until(replay_socket, lambda f: f["type"] == "resumed"), "error")
    replay_socket.close()
    visitor.close()
    for error in (refused, replayed):
        assert error["code"] == "quota_exceeded"  # the stable code stays: the widget can say "try later"
        assert error["details"] == {}
        assert "billing period" not in error["message"] and "plan" not in error["message"].lower()


def test_switching_the_embed_off_closes_its_open_visitor_sockets(shop):
    door: Door = shop["door"]
    ws = shop["ws"]
    embed = embed_make(ws.workspace, [SHOP], name="Switched off")
    session = door.token(embed.public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    socket = visitor_socket(door, conversation, session["token"])
    in_workspace(ws.workspace, services.embed_deactivate, embed=embed)
    code, frames = frames_until_closed(socket)
    assert code == 4403 and frames[-1]["code"] == "embed_inactive", frames
    # and nothing more gets in: not the socket, not the visitor's HTTP doors
    code, frames = frames_until_closed(door.socket(conversation, session["token"]))
    assert code == 4403 and frames[0]["code"] == "embed_inactive"
    listed = door.visitor_call("GET", "/widget/v1/conversations/", session["token"])
    assert listed.status_code == 403 and listed.json()["error"]["code"] == "embed_inactive"


def test_taking_the_origin_off_the_list_closes_its_open_visitor_sockets(shop):
    door: Door = shop["door"]
    ws = shop["ws"]
    embed = embed_make(ws.workspace, [SHOP], name="Origin removed")
    session = door.token(embed.public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    socket = visitor_socket(door, conversation, session["token"])
    other = visitor_socket(door, conversation, session["token"])
    in_workspace(ws.workspace, services.embed_update, embed=embed, allowed_origins=["https://other.example"])
    for open_socket in (socket, other):
        code, frames = frames_until_closed(open_socket)
        assert code == 4403 and frames[-1]["code"] == "origin_not_allowed", frames
