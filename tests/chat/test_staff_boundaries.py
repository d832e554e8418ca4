"""Staff and API keys never speak as a widget visitor, and internal notes stay with the people who handle
conversations (docs/websocket-protocol.md, docs/handoff.md), over the real ASGI server."""
from __future__ import annotations

import json
from typing import Any

import pytest

from accounts.services import api_key_create
from chat import handoff, services
from chat.models import Message
from tests.chat.test_protocol import in_workspace, session_cookie
from tests.factories import WorkspaceWithOwner, member, workspace_with_owner
from tests.handoff.test_live import Agent

API = "/api/v1/conversations/"


@pytest.fixture(scope="module")
def shop(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Staff Boundaries Co")


def widget_conversation(shop: WorkspaceWithOwner) -> Any:
    return in_workspace(shop.workspace, services.conversation_start, channel="widget", visitor_id="v-boundary")


def customer_messages(shop: WorkspaceWithOwner, conversation: Any) -> list[str]:
    return in_workspace(shop.workspace, lambda: list(Message.objects.filter(
        conversation_id=conversation.pk, role="customer").values_list("content", flat=True)))


def test_a_member_on_a_widget_conversation_socket_does_not_post_as_the_visitor(live_server, shop):
    conversation = widget_conversation(shop)
    socket = live_server.ws_connect(shop.host, f"/ws/chat/{conversation.public_id}/",
                                    additional_headers={"Cookie": session_cookie(shop.owner)})
    try:
        welcome = json.loads(socket.recv(timeout=30))
        assert welcome["you"] == {"kind": "member", "role": "owner", "can_post": False}
        socket.send(json.dumps({"type": "message", "client_id": "as-visitor", "text": "I am the customer now"}))
        refused = json.loads(socket.recv(timeout=30))
        assert refused["type"] == "error" and refused["code"] == "permission_denied"
        assert refused["client_id"] == "as-visitor"
    finally:
        socket.close()
    assert customer_messages(shop, conversation) == []


def test_rest_never_posts_into_a_widget_conversation_as_the_customer(live_server, shop, django_db_blocker):
    conversation = widget_conversation(shop)
    _key, raw = api_key_create(workspace=shop.workspace, name="chat", scopes=["chat"])
    path = f"{API}{conversation.public_id}/messages/"
    by_key = live_server.request("POST", shop.host, path, json={"text": "Hello from a script"},
                                 headers={"Authorization": f"Api-Key {raw}"})
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "customer_only", by_key.text
    with django_db_blocker.unblock():
        owner = Agent(live_server, shop.host, shop.owner)
    by_owner = owner.call("POST", path, {"text": "Hello from the owner"})
    assert by_owner.status_code == 403 and by_owner.json()["error"]["code"] == "customer_only", by_owner.text
    assert customer_messages(shop, conversation) == []
    # A conversation of the API channel is the integrator's own: posting there still works.
    api_conversation = in_workspace(shop.workspace, services.conversation_start, channel="api")
    mine = live_server.request("POST", shop.host, f"{API}{api_conversation.public_id}/messages/",
                               json={"text": "Hello"}, headers={"Authorization": f"Api-Key {raw}"})
    assert mine.status_code == 201, mine.text


def test_internal_notes_are_for_people_who_handle_conversations(live_server, shop, django_db_blocker):
    conversation = widget_conversation(shop)
    with django_db_blocker.unblock():
        agent_user = member(shop.workspace, "agent")
        viewer_user = member(shop.workspace, "viewer")
    in_workspace(shop.workspace, handoff.internal_note_add, conversation=conversation, author=agent_user,
                 text="Internal: customer is a reseller")
    _key, raw = api_key_create(workspace=shop.workspace, name="chat-notes", scopes=["chat", "read"])
    with django_db_blocker.unblock():
        agent, viewer = Agent(live_server, shop.host, agent_user), Agent(live_server, shop.host, viewer_user)
    for path in (f"{API}{conversation.public_id}/messages/", f"{API}{conversation.public_id}/"):
        by_key = live_server.request("GET", shop.host, path, headers={"Authorization": f"Api-Key {raw}"})
        by_viewer = viewer.call("GET", path)
        by_agent = agent.call("GET", path)
        for response in (by_key, by_viewer, by_agent):
            assert response.status_code == 200, response.text
        assert "reseller" not in by_key.text and "reseller" not in by_viewer.text, path
        assert "reseller" in by_agent.text, path
