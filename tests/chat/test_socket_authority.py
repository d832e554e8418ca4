"""A socket's authority is re-checked, not decided once at connect (docs/websocket-protocol.md, "Authority is
re-checked"): over the real ASGI server, a member demoted or removed through the real services, or a workspace
suspended, loses its open conversation and inbox sockets (4403) within a bounded wait, and a reply after a change
that no broadcast announced is refused before it is stored."""
from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from websockets.exceptions import ConnectionClosed

from accounts.models import Membership
from accounts.services import membership_remove, membership_role_change
from chat.models import Conversation, Message
from tenants.models import WorkspaceStatus
from tenants.services import workspace_status_set
from tests.chat.test_protocol import ChatSocket, conversation_new, in_workspace, session_cookie
from tests.factories import member, workspace_with_owner


def frames_until_closed(socket: Any, timeout: float = 20) -> tuple[int | None, list[dict[str, Any]]]:
    """Everything the server sends until it closes the socket, and the close code."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            frames.append(json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic()))))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), frames
    raise AssertionError(f"the server kept the socket open; it sent {frames}")


def agent_sockets(server: Any, host: str, user: Any, conversation: Conversation) -> tuple[Any, Any]:
    """The inbox and a conversation pane (as=agent) of one logged-in agent, both welcomed."""
    cookie = {"Cookie": session_cookie(user)}
    inbox = server.ws_connect(host, "/ws/inbox/", additional_headers=cookie)
    assert json.loads(inbox.recv(timeout=30))["type"] == "welcome"
    pane = server.ws_connect(host, f"/ws/chat/{conversation.public_id}/?as=agent", additional_headers=cookie)
    welcome = json.loads(pane.recv(timeout=30))
    assert welcome["type"] == "welcome" and welcome["you"]["can_post"] is True
    pane.send(json.dumps({"type": "resume", "last_seq": 0}))
    while json.loads(pane.recv(timeout=30))["type"] != "resumed":
        pass
    return inbox, pane


def assert_revoked(socket: Any) -> None:
    code, frames = frames_until_closed(socket)
    assert code == 4403, (code, frames)
    assert frames and frames[-1]["type"] == "error" and frames[-1]["code"] == "access_revoked", frames


def agent_messages(workspace: Any, conversation: Conversation) -> list[str]:
    return in_workspace(workspace, lambda: list(
        Message.objects.filter(conversation_id=conversation.pk, role="agent").values_list("content", flat=True)))


def test_a_demoted_agent_loses_the_inbox_and_the_conversation_at_once(live_server):
    shop = workspace_with_owner(name="Demoted Co")
    agent = member(shop.workspace, "agent")
    conversation = conversation_new(shop.workspace, channel="dashboard")
    inbox, pane = agent_sockets(live_server, shop.host, agent, conversation)
    membership = Membership.objects.get(workspace=shop.workspace, user=agent)
    membership_role_change(membership=membership, role="viewer", actor=shop.owner, actor_role="owner")
    assert_revoked(pane)
    assert_revoked(inbox)
    # Back as what they are now: a viewer may watch, and a reply is refused before anything is stored.
    again = live_server.ws_connect(shop.host, f"/ws/chat/{conversation.public_id}/?as=agent",
                                   additional_headers={"Cookie": session_cookie(agent)})
    welcome = json.loads(again.recv(timeout=30))
    assert welcome["you"] == {"kind": "member", "role": "viewer", "can_post": False}
    again.send(json.dumps({"type": "message", "client_id": "after-demotion", "text": "still here?"}))
    reply = json.loads(again.recv(timeout=30))
    assert reply["type"] == "error" and reply["code"] == "permission_denied"
    again.close()
    inbox_again = live_server.ws_connect(shop.host, "/ws/inbox/", additional_headers={"Cookie": session_cookie(agent)})
    assert frames_until_closed(inbox_again)[0] == 4403
    assert agent_messages(shop.workspace, conversation) == []


def test_a_removed_member_loses_every_socket_and_hears_no_more_notes(live_server):
    shop = workspace_with_owner(name="Removed Co")
    agent = member(shop.workspace, "agent")
    conversation = conversation_new(shop.workspace, channel="dashboard")
    inbox, pane = agent_sockets(live_server, shop.host, agent, conversation)
    membership_remove(membership=Membership.objects.get(workspace=shop.workspace, user=agent), actor=shop.owner,
                      actor_role="owner")
    assert_revoked(pane)
    code, frames = frames_until_closed(inbox)
    assert code == 4403 and frames[-1]["code"] == "access_revoked"
    socket = live_server.ws_connect(shop.host, f"/ws/chat/{conversation.public_id}/",
                                    additional_headers={"Cookie": session_cookie(agent)})
    assert frames_until_closed(socket)[0] == 4403


def test_a_change_no_broadcast_announced_is_caught_before_the_next_reply(live_server):
    """The revocation broadcast is pub/sub (lost while Redis is away): every state-changing frame re-reads the
    socket's authority once it is older than CHAT_WS_AUTHORITY_TTL, so a role changed behind the services' back
    (no signal, no broadcast) still stops the next reply."""
    shop = workspace_with_owner(name="Silent Change Co")
    agent = member(shop.workspace, "agent")
    conversation = conversation_new(shop.workspace, channel="dashboard")
    inbox, pane = agent_sockets(live_server, shop.host, agent, conversation)
    Membership.objects.filter(workspace=shop.workspace, user=agent).update(role="viewer")  # no service, no signal
    time.sleep(settings.CHAT_WS_AUTHORITY_TTL + 0.5)  # let the connect-time check grow stale
    pane.send(json.dumps({"type": "message", "client_id": "silent-1", "text": "I should not be able to say this"}))
    code, frames = frames_until_closed(pane)
    assert code == 4403 and frames[-1]["code"] == "access_revoked" and frames[-1]["client_id"] == "silent-1"
    assert agent_messages(shop.workspace, conversation) == []
    inbox.send(json.dumps({"type": "ping"}))
    code, frames = frames_until_closed(inbox)
    assert code == 4403 and not any(f["type"] == "pong" for f in frames)


def test_suspending_a_workspace_closes_its_sockets(live_server):
    shop = workspace_with_owner(name="Suspended Co")
    conversation = conversation_new(shop.workspace)
    tab = ChatSocket(live_server, shop.host, conversation.public_id, session_cookie(shop.owner))
    inbox = live_server.ws_connect(shop.host, "/ws/inbox/", additional_headers={"Cookie": session_cookie(shop.owner)})
    assert json.loads(inbox.recv(timeout=30))["type"] == "welcome"
    workspace_status_set(workspace=shop.workspace, status=WorkspaceStatus.SUSPENDED)
    try:
        assert_revoked(tab.ws)
        assert_revoked(inbox)
        again = live_server.ws_connect(shop.host, f"/ws/chat/{conversation.public_id}/",
                                       additional_headers={"Cookie": session_cookie(shop.owner)})
        assert frames_until_closed(again)[0] == 4403
    finally:
        workspace_status_set(workspace=shop.workspace, status=WorkspaceStatus.ACTIVE)
