"""Conversations over REST (/api/v1/conversations/) and the dashboard pages, on the real ASGI server: the
non-streaming message endpoint, idempotency, feedback, handoff requests, permissions, errors and isolation."""
from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import requests

from accounts.services import api_key_create
from chat.models import Message, MessageRole
from tests.chat.test_protocol import (
    MANUAL, QUESTION, ChatSocket, conversation_new, in_workspace, knowledge_seed, session_cookie,
)
from tests.factories import PASSWORD, WorkspaceWithOwner, member, workspace_with_owner
from tests.live import LiveServer

API = "/api/v1/conversations/"


@pytest.fixture(scope="module")
def shop(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Router Shop")
        knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))
        return workspace


@pytest.fixture(scope="module")
def keys(shop, django_db_blocker) -> dict[str, str]:
    with django_db_blocker.unblock():
        return {scope: api_key_create(workspace=shop.workspace, name=f"{scope}-key", scopes=[scope])[1]
                for scope in ("read", "chat", "write")}


class Api:
    """JSON calls to one workspace host with one credential."""

    def __init__(self, server: LiveServer, host: str, key: str | None = None, cookie: str | None = None,
                 csrf: str | None = None) -> None:
        self.server, self.host = server, host
        self.headers: dict[str, str] = {}
        if key:
            self.headers["Authorization"] = f"Api-Key {key}"
        if cookie:
            self.headers["Cookie"] = cookie
        if csrf:
            self.headers.update({"X-CSRFToken": csrf, "Referer": f"http://{host}:{server.port}/"})

    def call(self, method: str, path: str, body: Any = None, raw: str | None = None) -> requests.Response:
        headers = dict(self.headers)
        data = None
        if body is not None or raw is not None:
            headers["Content-Type"] = "application/json"
            data = raw if raw is not None else json.dumps(body)
        return self.server.request(method, self.host, path, headers=headers, data=data, timeout=90)

    def get(self, path: str) -> requests.Response:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, raw: str | None = None) -> requests.Response:
        return self.call("POST", path, body if body is not None or raw is not None else {}, raw)


def error_of(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


@pytest.fixture
def chat_api(live_server, shop, keys) -> Api:
    return Api(live_server, shop.host, key=keys["chat"])


def browser_login(server: LiveServer, host: str, email: str) -> requests.Session:
    """A browser-like session logged in through the workspace's login form."""
    browser = requests.Session()
    headers = {"Host": f"{host}:{server.port}"}
    base = f"http://127.0.0.1:{server.port}"
    assert browser.get(f"{base}/login/", headers=headers, timeout=30).status_code == 200
    response = browser.post(
        f"{base}/login/", headers={**headers, "Referer": f"http://{host}:{server.port}/login/"}, timeout=30,
        data={"email": email, "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:300]
    return browser


# --- conversations ---------------------------------------------------------------------------------------------
def test_create_list_filter_and_read_conversations(chat_api):
    title = f"Order {secrets.token_hex(3)}"
    created = chat_api.post(API, {"title": title, "visitor_name": "Ada", "visitor_email": "ada@example.test",
                                  "metadata": {"order": 42}})
    assert created.status_code == 201, created.text
    conversation = created.json()
    assert conversation["channel"] == "api" and conversation["status"] == "bot" and conversation["title"] == title
    assert conversation["message_count"] == 0 and conversation["last_seq"] == 0

    listed = chat_api.get(f"{API}?q={title}")
    assert listed.status_code == 200
    page = listed.json()
    assert page["count"] == 1 and [c["id"] for c in page["results"]] == [conversation["id"]]
    assert chat_api.get(f"{API}?status=waiting&q={title}").json()["count"] == 0
    assert chat_api.get(f"{API}?channel=api&q={title}").json()["count"] == 1
    assert chat_api.get(f"{API}?limit=1").json()["results"].__len__() == 1

    detail = chat_api.get(f"{API}{conversation['id']}/")
    assert detail.status_code == 200
    assert detail.json()["messages"] == [] and detail.json()["metadata"] == {"order": 42}


def test_bad_conversation_input_is_refused_in_the_error_shape(chat_api):
    error = error_of(chat_api.post(API, {"channel": "carrier-pigeon"}), 400, "invalid")
    assert "channel" in error["details"]["fields"]
    error_of(chat_api.post(API, {"visitor_email": "not-an-email"}), 400, "invalid")
    error_of(chat_api.post(API, raw="{not json"), 400, "malformed_request")
    error_of(chat_api.get(f"{API}?status=lost"), 400, "invalid")


# --- messages ----------------------------------------------------------------------------------------------------
def test_posting_a_message_returns_the_whole_answer_and_is_idempotent(chat_api):
    conversation = chat_api.post(API, {}).json()
    path = f"{API}{conversation['id']}/messages/"
    first = chat_api.post(path, {"text": QUESTION, "client_id": "order-42-q1"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["duplicate"] is False
    question, answer = body["message"], body["answer"]
    assert question["role"] == "customer" and question["content"] == QUESTION and question["client_id"] == "order-42-q1"
    assert answer["role"] == "assistant" and answer["reply_to"] == question["id"]
    assert "reset button" in answer["content"] and answer["answered"] is True and answer["citations"]
    assert answer["citations"][0]["title"] == "Acme Router X200 manual"
    assert answer["provider"] and answer["latency_total_ms"] is not None and "retrieval" in answer["timings_ms"]
    assert isinstance(answer["cost"], (int, float)) and question["seq"] == 1

    again = chat_api.post(path, {"text": "a retry with the same id", "client_id": "order-42-q1"})
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["message"]["id"] == question["id"] and again.json()["answer"]["id"] == answer["id"]

    listed = chat_api.get(path).json()
    assert [(m["role"], m["id"]) for m in listed] == [("customer", question["id"]), ("assistant", answer["id"])]
    detail = chat_api.get(f"{API}{conversation['id']}/").json()
    assert [m["id"] for m in detail["messages"]] == [question["id"], answer["id"]]
    found = chat_api.get(f"{API}?q=order-42-q1").json()  # no match: search is over text, not ids
    assert conversation["id"] not in [c["id"] for c in found["results"]]
    found = chat_api.get(f"{API}?q=recessed reset button&limit=200").json()  # a match in the answer's text
    match = next(c for c in found["results"] if c["id"] == conversation["id"])
    assert match["message_count"] == 2
    assert detail["last_seq"] == answer["seq"] and detail["title"] == QUESTION


def test_a_socket_watching_sees_the_rest_answer_stream(live_server, chat_api, shop):
    conversation = chat_api.post(API, {}).json()
    with ChatSocket(live_server, shop.host, conversation["id"], session_cookie(shop.owner)) as watcher:
        posted = chat_api.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION}).json()
        frames = watcher.until(lambda f: f["type"] == "agent_completed")
    assert [f["state"] for f in frames if f["type"] == "typing"] == [True, False]  # the bot's typing, from REST too
    frames = [f for f in frames if f["type"] != "typing"]
    kinds = [f["type"] for f in frames]
    assert kinds[:5] == ["message", "agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert "token" in kinds and kinds[-1] == "agent_completed"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["message"] == {**frames[-1]["message"], "id": posted["answer"]["id"],
                                     "content": posted["answer"]["content"]}
    assert "".join(f["text"] for f in frames if f["type"] == "token") == posted["answer"]["content"]


@pytest.mark.parametrize("body,status,code", [
    ({"text": ""}, 400, "empty_message"),
    ({"text": " \n\t "}, 400, "empty_message"),
    ({"text": "x" * 4001}, 400, "message_too_long"),
    ({"text": "x" * 100_000}, 400, "message_too_long"),
    ({"text": "hi", "client_id": "has spaces"}, 400, "invalid"),
    ({"client_id": "no-text"}, 400, "invalid"),
    ({"text": ["a", "list"]}, 400, "invalid"),
])
def test_bad_messages_are_refused(chat_api, body, status, code):
    conversation = chat_api.post(API, {}).json()
    error_of(chat_api.post(f"{API}{conversation['id']}/messages/", body), status, code)
    assert chat_api.get(f"{API}{conversation['id']}/messages/").json() == []  # nothing stored


def test_html_in_a_message_is_stored_and_returned_as_text(chat_api, shop, live_server):
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    conversation = chat_api.post(API, {}).json()
    posted = chat_api.post(f"{API}{conversation['id']}/messages/", {"text": payload})
    assert posted.status_code == 201 and posted.json()["message"]["content"] == payload
    page = live_server.request("GET", shop.host, "/conversations/", headers={"Cookie": session_cookie(shop.owner)})
    assert page.status_code == 200 and "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text


def test_an_answer_engine_failure_is_a_502_with_the_stored_message(live_server, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        broken = workspace_with_owner(name="Broken API Knowledge")
        _key, raw = api_key_create(workspace=broken.workspace, name="k", scopes=["chat"])
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{broken.workspace.schema_name}".documents_chunk RENAME TO documents_chunk_gone')
    api = Api(live_server, broken.host, key=raw)
    conversation = api.post(API, {}).json()
    error = error_of(api.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION, "client_id": "q1"}),
                     502, "answer_failed")
    messages = api.get(f"{API}{conversation['id']}/messages/").json()
    assert [m["id"] for m in messages] == [error["details"]["message_id"]]
    # The retry tries to answer again (and fails again, clearly); the question is still stored once.
    error_of(api.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION, "client_id": "q1"}), 502,
             "answer_failed")
    assert len(api.get(f"{API}{conversation['id']}/messages/").json()) == 1


# --- feedback and handoff ----------------------------------------------------------------------------------------
def test_feedback_on_an_answer(chat_api, shop):
    conversation = chat_api.post(API, {}).json()
    posted = chat_api.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION}).json()
    path = f"{API}{conversation['id']}/messages/{posted['answer']['id']}/feedback/"
    rated = chat_api.post(path, {"value": 1, "comment": "clear"})
    assert rated.status_code == 200 and rated.json()["feedback"] == 1 and rated.json()["feedback_comment"] == "clear"
    assert chat_api.post(path, {"value": 0}).json()["feedback"] == 0
    error_of(chat_api.post(path, {"value": 5}), 400, "invalid")
    error_of(chat_api.post(f"{API}{conversation['id']}/messages/{posted['message']['id']}/feedback/", {"value": 1}),
             400, "invalid")
    error_of(chat_api.post(f"{API}{conversation['id']}/messages/999999/feedback/", {"value": 1}), 404, "not_found")


def test_requesting_a_person_sets_waiting_and_the_bot_stays_quiet(chat_api):
    conversation = chat_api.post(API, {}).json()
    waiting = chat_api.post(f"{API}{conversation['id']}/request-human/")
    assert waiting.status_code == 200 and waiting.json()["status"] == "waiting"
    assert waiting.json()["handoff_reason"] == "asked"
    assert chat_api.post(f"{API}{conversation['id']}/request-human/").json()["status"] == "waiting"  # idempotent
    posted = chat_api.post(f"{API}{conversation['id']}/messages/", {"text": "Hello, a person please"})
    assert posted.status_code == 201 and posted.json()["answer"] is None
    assert chat_api.get(f"{API}?status=waiting").json()["count"] >= 1


# --- permissions and isolation -----------------------------------------------------------------------------------
def test_unknown_conversations_are_404(chat_api):
    for path in (f"{API}00000000-0000-0000-0000-000000000000/", f"{API}{'1' * 8}-1111-1111-1111-111111111111/messages/"):
        error_of(chat_api.get(path), 404, "not_found")
    assert chat_api.get(f"{API}not-a-uuid/").status_code == 404


def test_api_key_scopes(live_server, shop, keys):
    read = Api(live_server, shop.host, key=keys["read"])
    assert read.get(API).status_code == 200
    error = error_of(read.post(API, {}), 403, "permission_denied")
    assert error["details"]["permission"] == "conversations.reply"
    write_only = Api(live_server, shop.host, key=keys["write"])
    error_of(write_only.get(API), 403, "permission_denied")
    error_of(Api(live_server, shop.host).get(API), 401, "not_authenticated")
    error_of(Api(live_server, shop.host, key="ccgpt_not_a_key").get(API), 401, "invalid_api_key")


@pytest.mark.parametrize("role,can_reply", [("owner", True), ("admin", True), ("agent", True), ("viewer", False)])
def test_roles_over_a_dashboard_session(live_server, shop, role, can_reply):
    user = shop.owner if role == "owner" else member(shop.workspace, role)
    browser = browser_login(live_server, shop.host, user.email)
    api = Api(live_server, shop.host, cookie="; ".join(f"{k}={v}" for k, v in browser.cookies.items()),
              csrf=browser.cookies["csrftoken"])
    assert api.get(API).status_code == 200
    created = api.post(API, {"channel": "dashboard"})
    if can_reply:
        assert created.status_code == 201
        assert created.json()["channel"] == "dashboard"
    else:
        error_of(created, 403, "permission_denied")


def test_workspace_a_never_reaches_a_conversation_of_b(live_server, shop, keys, other_tenant):
    b_conversation = conversation_new(other_tenant.workspace)
    in_workspace(other_tenant.workspace, lambda: Message.objects.create(
        conversation=b_conversation, role=MessageRole.CUSTOMER, content="B's secret question"))
    a_api = Api(live_server, shop.host, key=keys["chat"])
    for method, path in (("GET", f"{API}{b_conversation.public_id}/"),
                         ("GET", f"{API}{b_conversation.public_id}/messages/"),
                         ("POST", f"{API}{b_conversation.public_id}/messages/"),
                         ("POST", f"{API}{b_conversation.public_id}/request-human/")):
        response = a_api.call(method, path, {"text": "hi"} if method == "POST" else None)
        error_of(response, 404, "not_found")
        assert "secret" not in response.text
    assert str(b_conversation.public_id) not in a_api.get(f"{API}?limit=200").text
    # A's key on B's host is not a key there.
    error_of(Api(live_server, other_tenant.host, key=keys["chat"]).get(API), 401, "invalid_api_key")


# --- dashboard pages ---------------------------------------------------------------------------------------------
def test_try_it_page_starts_a_conversation_and_connects_to_its_socket(live_server, shop):
    browser = browser_login(live_server, shop.host, shop.owner.email)
    base = f"http://127.0.0.1:{live_server.port}"
    headers = {"Host": f"{shop.host}:{live_server.port}", "Referer": f"http://{shop.host}:{live_server.port}/"}
    listing = browser.get(f"{base}/conversations/", headers=headers, timeout=30)
    assert listing.status_code == 200 and 'data-testid="try-it"' in listing.text
    started = browser.post(f"{base}/conversations/try/", headers=headers, timeout=30, allow_redirects=False,
                           data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]})
    assert started.status_code == 302 and started.headers["Location"].startswith("/conversations/try/")
    conversation_id = started.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    page = browser.get(f"{base}{started.headers['Location']}", headers=headers, timeout=30)
    assert page.status_code == 200
    assert f'data-socket-path="/ws/chat/{conversation_id}/"' in page.text and "js/chat.js" in page.text
    # The page's own socket, with the browser's session and the page's origin.
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    with ChatSocket(live_server, shop.host, conversation_id, cookie,
                    Origin=f"http://{shop.host}:{live_server.port}") as socket:
        assert socket.welcome["conversation"]["channel"] == "dashboard"
        frames = socket.answer(QUESTION)
        assert frames[-1]["type"] == "agent_completed"
    transcript = browser.get(f"{base}/conversations/{conversation_id}/", headers=headers, timeout=30)
    assert transcript.status_code == 200 and QUESTION in transcript.text and "reset button" in transcript.text
    assert browser.get(f"{base}/static/js/chat.js", headers=headers, timeout=30).status_code == 200


def test_viewers_read_transcripts_but_cannot_try(live_server, shop):
    viewer = member(shop.workspace, "viewer")
    conversation = conversation_new(shop.workspace)
    cookie = session_cookie(viewer)
    assert live_server.request("GET", shop.host, "/conversations/", headers={"Cookie": cookie}).status_code == 200
    page = live_server.request("GET", shop.host, f"/conversations/{conversation.public_id}/", headers={"Cookie": cookie})
    assert page.status_code == 200 and "data-chat-form" not in page.text and 'data-can-post="0"' in page.text
    assert live_server.request("GET", shop.host, f"/conversations/try/{conversation.public_id}/",
                               headers={"Cookie": cookie}).status_code == 403
    assert live_server.request("GET", shop.host, "/conversations/00000000-0000-0000-0000-000000000000/",
                               headers={"Cookie": cookie}).status_code == 404
