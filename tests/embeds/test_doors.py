"""Every door of the widget over the real server: the loader, config (CORS per embed), the frame (CSP
frame-ancestors), visitor sessions (tokens, HMAC identity), the visitor's conversations, and the widget socket —
allowed origins, forged Origin / Referer, unknown, rotated and deactivated keys, and visitors who try to read
someone else's conversations."""
from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

from embeds import services
from embeds.security import identity_hash, visitor_credential_issue
from tests.embeds.conftest import RETURNS, Door, embed_make, in_workspace, knowledge_add, workspace_on_plan

SHOP = "https://shop.example"
ALLOWED = [SHOP, "https://*.shop.example"]
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def doors(django_db_blocker, widget_server, celery_worker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Doors Co", plan="pro")
        knowledge_add(ws.workspace, [("Returns and refunds", RETURNS)])
        embed = embed_make(ws.workspace, ALLOWED, theme={
            "greeting": "<script>alert('greeting')</script> Hi", "title": "</title><script>alert('t')</script>",
            "placeholder": "\"><img src=x onerror=alert('p')>",
        })
        identified = embed_make(ws.workspace, ALLOWED, name="Identified")
        identified, secret = in_workspace(ws.workspace, services.embed_identity_secret_rotate, embed=identified)
        door = Door(widget_server, ws.host)
    return {"ws": ws, "embed": embed, "identified": identified, "secret": secret, "door": door}


def fresh_embed(doors: dict[str, Any], **kwargs: Any):
    return embed_make(doors["ws"].workspace, ALLOWED, **kwargs)


def error_code(response) -> str:
    return response.json()["error"]["code"]


def frames_until(socket, predicate, timeout: float = 90) -> list[dict[str, Any]]:
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        frames.append(frame)
        if predicate(frame):
            return frames
    raise AssertionError(f"no matching frame in {frames}")


def close_code(socket, timeout: float = 30) -> tuple[int | None, list[dict[str, Any]]]:
    frames = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames.append(json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic()))))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), frames
    raise AssertionError("the server kept the socket open")


# --- the loader --------------------------------------------------------------------------------------------------
def test_loader_is_small_cached_long_and_the_same_everywhere(doors):
    door: Door = doors["door"]
    response = door.server.request("GET", door.host, "/widget/v1/loader.js", headers={"Accept-Encoding": "gzip"},
                                   stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert response.headers["Content-Encoding"] == "gzip"
    wire = response.raw.read(decode_content=False)
    assert len(wire) <= 5 * 1024, f"the loader's budget is 5 KB gzipped; it is {len(wire)} bytes"
    plain = door.server.request("GET", door.host, "/widget/v1/loader.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and gzip.decompress(wire) == plain.content
    cache = response.headers["Cache-Control"]
    assert "public" in cache and int(cache.split("max-age=")[1].split(",")[0]) >= 86400
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    etag = response.headers["ETag"]
    again = door.server.request("GET", door.host, "/widget/v1/loader.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    # No per-embed or per-workspace data inside: no keys, no origins, no names.
    assert doors["embed"].public_key not in plain.text and "shop.example" not in plain.text
    assert "innerHTML" not in plain.text and "eval(" not in plain.text


# --- config --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", [SHOP, "https://eu.shop.example", "https://SHOP.example"])
def test_config_answers_allowed_origins_with_cors_for_that_origin_only(doors, origin):
    response = doors["door"].config(doors["embed"].public_key, origin)
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers["Vary"]
    assert "private" in response.headers["Cache-Control"]
    body = response.json()
    assert body["key"] == doors["embed"].public_key and body["colors"]["primary"].startswith("#")
    assert "allowed_origins" not in body and "identity" not in json.dumps(body)


@pytest.mark.parametrize("origin, code", [
    (EVIL, "origin_not_allowed"),
    ("http://shop.example", "origin_not_allowed"),  # another scheme
    ("https://shop.example:8443", "origin_not_allowed"),  # another port
    ("https://shop.example.evil.example", "origin_not_allowed"),
    ("https://evilshop.example", "origin_not_allowed"),
    ("null", "origin_required"),  # sandboxed pages, file:// pages
    (None, "origin_required"),
])
def test_config_refuses_other_origins_without_cors_headers(doors, origin, code):
    response = doors["door"].config(doors["embed"].public_key, origin)
    assert response.status_code == 403 and error_code(response) == code
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_forged_referer_does_not_replace_the_origin(doors):
    response = doors["door"].config(doors["embed"].public_key, EVIL, Referer=f"{SHOP}/page")
    assert response.status_code == 403 and "Access-Control-Allow-Origin" not in response.headers
    response = doors["door"].config(doors["embed"].public_key, None, Referer=f"{SHOP}/page")
    assert response.status_code == 403 and error_code(response) == "origin_required"


@pytest.mark.parametrize("key", ["pk_doesnotexist000000000", "<img src=x onerror=alert(1)>", "x" * 300, "pk_%00"])
def test_unknown_keys_are_404(doors, key):
    response = doors["door"].config(key, SHOP)
    assert response.status_code == 404 and error_code(response) == "embed_not_found"
    assert "<img" not in response.text


def test_rotated_and_deactivated_keys_are_refused_everywhere(doors):
    door: Door = doors["door"]
    embed = fresh_embed(doors)
    old = embed.public_key
    session = door.token(old, SHOP)
    conversation = door.conversation_new(session["token"])
    rotated = in_workspace(doors["ws"].workspace, services.embed_public_key_rotate, embed=embed)
    assert door.config(old, SHOP).status_code == 404
    assert door.frame(old, SHOP).status_code == 404
    assert door.session(old, SHOP).status_code == 404
    # A token minted under the old key is dead too: HTTP and the socket.
    listed = door.visitor_call("GET", "/widget/v1/conversations/", session["token"])
    assert listed.status_code == 401 and error_code(listed) == "visitor_token_invalid"
    code, frames = close_code(door.socket(conversation, session["token"]))
    assert code == 4403 and frames[0]["code"] == "visitor_token_invalid"
    assert door.config(rotated.public_key, SHOP).status_code == 200

    off = in_workspace(doors["ws"].workspace, services.embed_deactivate, embed=rotated)
    for response in (door.config(off.public_key, SHOP), door.frame(off.public_key, SHOP),
                     door.session(off.public_key, SHOP)):
        assert response.status_code == 403
    assert error_code(door.config(off.public_key, SHOP)) == "embed_inactive"


def test_a_key_of_another_workspace_is_unknown_here(doors, django_db_blocker):
    with django_db_blocker.unblock():
        other = workspace_on_plan("Doors Other", plan="pro")
        their_door = Door(doors["door"].server, other.host)
    theirs = embed_make(other.workspace, ALLOWED)
    assert doors["door"].config(theirs.public_key, SHOP).status_code == 404
    # and their visitor tokens mean nothing on our host
    token = their_door.token(theirs.public_key, SHOP)["token"]
    response = doors["door"].visitor_call("GET", "/widget/v1/conversations/", token)
    assert response.status_code == 401


# --- the frame -----------------------------------------------------------------------------------------------------
def test_frame_may_only_be_framed_by_the_origin_it_was_admitted_for(doors):
    response = doors["door"].frame(doors["embed"].public_key, "https://eu.shop.example",
                                   Referer="https://eu.shop.example/checkout")
    assert response.status_code == 200, response.text
    csp = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert csp["frame-ancestors"] == "https://eu.shop.example"  # not *, not the whole list: the page's own origin
    assert csp["script-src"] == "'self'" and "unsafe" not in csp["script-src"]
    assert csp["default-src"] == "'none'" and csp["base-uri"] == "'none'"
    assert "X-Frame-Options" not in response.headers


@pytest.mark.parametrize("origin, headers, code", [
    (EVIL, {}, "origin_not_allowed"),
    (None, {}, "origin_required"),
    ("https://*.shop.example", {}, "origin_required"),
    (SHOP, {"Referer": f"{EVIL}/attack"}, "origin_not_allowed"),  # the page is not the one it claims to be
    (SHOP, {"Sec-Fetch-Dest": "document"}, "frame_only"),  # opened as a page of its own
])
def test_frame_refusals_are_never_framable(doors, origin, headers, code):
    response = doors["door"].frame(doors["embed"].public_key, origin, **headers)
    assert response.status_code == 403
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert code in response.text
    assert doors["ws"].workspace.name not in response.text


def test_frame_renders_settings_as_text(doors):
    response = doors["door"].frame(doors["embed"].public_key, SHOP)
    html = response.text
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;greeting&#x27;)&lt;/script&gt; Hi" in html
    assert "&lt;/title&gt;&lt;script&gt;" in html
    # The config for the script is JSON inside a data block, with < > & escaped.
    block = html.split('id="ccw-config" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and json.loads(block)["greeting"] == "<script>alert('greeting')</script> Hi"


# --- visitor sessions ------------------------------------------------------------------------------------------
def test_sessions_are_for_the_frame_only(doors):
    door: Door = doors["door"]
    key = doors["embed"].public_key
    assert door.session(key, SHOP).status_code == 200
    # A page of the shop (or anywhere) calling directly: its Origin is not the workspace host.
    for origin in (SHOP, EVIL, None):
        response = door.session(key, SHOP, origin=origin)
        assert response.status_code == 403 and error_code(response) == "frame_only"
    forged = door.session(key, EVIL)  # the frame claiming a page origin that isn't allowed
    assert forged.status_code == 403 and error_code(forged) == "origin_not_allowed"
    # A token is no use to another site's page either: the browser says where the call comes from.
    token = door.token(key, SHOP)["token"]
    for headers in ({"Origin": SHOP, "Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        response = door.visitor_call("GET", "/widget/v1/conversations/", token, headers=headers)
        assert response.status_code == 403 and error_code(response) == "frame_only"
    assert door.visitor_call("GET", "/widget/v1/conversations/", token).status_code == 200


def test_visitor_ids_are_issued_not_chosen(doors):
    door: Door = doors["door"]
    key = doors["embed"].public_key
    first = door.token(key, SHOP)
    again = door.token(key, SHOP, visitor=first["visitor"])
    assert again["visitor"] == first["visitor"]  # the same visitor comes back
    conversation = door.conversation_new(first["token"])
    # A made-up or tampered credential gets a new visitor, who sees nothing of the first one's.
    for claimed in ("v_someone", first["visitor"][:-2] + "xx", visitor_credential_issue(schema="ws_other", visitor_id="v_x")):
        stranger = door.token(key, SHOP, visitor=claimed)
        assert stranger["visitor"] != first["visitor"]
        listed = door.visitor_call("GET", "/widget/v1/conversations/", stranger["token"]).json()["conversations"]
        assert conversation not in {c["id"] for c in listed}
        messages = door.visitor_call("GET", f"/widget/v1/conversations/{conversation}/messages/", stranger["token"])
        assert messages.status_code == 404


def test_tampered_and_expired_tokens_are_refused(doors):
    door: Door = doors["door"]
    token = door.token(doors["embed"].public_key, SHOP)["token"]
    for bad in (token[:-3] + "abc", "", "garbage", token + "x"):
        response = door.visitor_call("GET", "/widget/v1/conversations/", bad)
        assert response.status_code == 401
    from embeds.selectors import visitor_admit
    from config.errors import NotAuthenticated

    with override_settings(WIDGET_TOKEN_TTL=0):
        time.sleep(1.1)
        with pytest.raises(NotAuthenticated) as expired:
            in_workspace(doors["ws"].workspace, visitor_admit, token=token)
    assert expired.value.code == "visitor_token_expired"


def test_identity_verification(doors):
    door: Door = doors["door"]
    key, secret = doors["identified"].public_key, doors["secret"]
    now = int(time.time())  # signed with the id (docs/widget.md; expiry: tests/embeds/test_identity_expiry.py)
    alice = {"user_id": "user-alice", "user_ts": now, "user_hash": identity_hash(secret, "user-alice", now)}
    laptop = door.token(key, SHOP, **alice)
    assert laptop["verified"] is True
    conversation = door.conversation_new(laptop["token"])
    # Alice on another device (another visitor id) sees it; an anonymous visitor does not.
    phone = door.token(key, SHOP, **alice)
    assert phone["visitor"] != laptop["visitor"]
    on_phone = door.visitor_call("GET", "/widget/v1/conversations/", phone["token"]).json()
    assert on_phone["verified"] and conversation in {c["id"] for c in on_phone["conversations"]}
    assert door.visitor_call("GET", f"/widget/v1/conversations/{conversation}/messages/", phone["token"]).status_code == 200
    anonymous = door.token(key, SHOP, visitor=laptop["visitor"])  # same browser, not identified
    assert door.visitor_call("GET", f"/widget/v1/conversations/{conversation}/messages/",
                             anonymous["token"]).status_code == 404
    # Nobody can claim Alice: a hash of another id, a wrong secret, a bare id, a hash with another case of id.
    for claim in ({"user_id": "user-alice", "user_hash": identity_hash(secret, "user-bob", now)},
                  {"user_id": "user-alice", "user_hash": identity_hash("ccis_wrong", "user-alice", now)},
                  {"user_id": "user-alice", "user_hash": ""},
                  {"user_id": "User-Alice", "user_hash": identity_hash(secret, "user-alice", now)},
                  {"user_id": "user-alice", "user_hash": "0" * 64}):
        response = door.session(key, SHOP, user_ts=now, **claim)
        assert response.status_code == 403 and error_code(response) == "identity_invalid", claim
    bob = door.token(key, SHOP, user_id="user-bob", user_ts=now, user_hash=identity_hash(secret, "user-bob", now))
    assert conversation not in {c["id"] for c in door.visitor_call(
        "GET", "/widget/v1/conversations/", bob["token"]).json()["conversations"]}
    code, _frames = close_code(door.socket(conversation, bob["token"]))
    assert code == 4404
    # An embed without identity verification refuses identities rather than trusting them.
    plain = door.session(doors["embed"].public_key, SHOP, **alice)
    assert plain.status_code == 403 and error_code(plain) == "identity_not_configured"


# --- the widget socket -----------------------------------------------------------------------------------------
def test_socket_answers_a_visitor_and_keeps_the_business_accounting_private(doors):
    door: Door = doors["door"]
    session = door.token(doors["embed"].public_key, SHOP)
    conversation = door.conversation_new(session["token"], email="visitor@example.test")
    with door.socket(conversation, session["token"]) as socket:
        welcome = json.loads(socket.recv(timeout=30))
        assert welcome["type"] == "welcome" and welcome["you"]["kind"] == "visitor"
        socket.send(json.dumps({"type": "resume", "last_seq": 0}))
        socket.send(json.dumps({"type": "message", "client_id": "q1", "text": "How many days do I have to return a product?"}))
        frames = frames_until(socket, lambda f: f["type"] == "agent_completed")
        answer = frames[-1]["message"]
        assert answer["role"] == "assistant" and answer["content"] and answer["citations"]
        assert set(answer["citations"][0]) <= {"title", "section", "page", "snippet", "url", "quoted"}  # url: a web page
        for private in ("provider", "model", "cost", "tokens_in", "tokens_out", "timings_ms", "latency_total_ms"):
            assert private not in answer
        socket.send(json.dumps({"type": "feedback", "message_id": answer["id"], "value": 1}))
        frames_until(socket, lambda f: f["type"] == "feedback" and f["value"] == 1)
        socket.send(json.dumps({"type": "request_human"}))
        frames_until(socket, lambda f: f["type"] == "status" and f["status"] == "waiting")
    transcript = door.visitor_call("GET", f"/widget/v1/conversations/{conversation}/messages/", session["token"]).json()
    assert [m["role"] for m in transcript["messages"]] == ["customer", "assistant"]
    assert transcript["messages"][1]["feedback"] == 1 and "cost" not in transcript["messages"][1]
    from chat.models import Conversation

    stored = in_workspace(doors["ws"].workspace, lambda: Conversation.objects.get(public_id=conversation))
    assert stored.channel == "widget" and stored.embed_id == doors["embed"].pk and stored.origin == SHOP
    assert stored.visitor_email == "visitor@example.test" and stored.status == "waiting"


@pytest.mark.parametrize("origin", [SHOP, EVIL, None])
def test_socket_must_come_from_the_frame_itself(doors, origin):
    """The frame's socket is same-origin with the workspace host; a host page (or any other page) opening it
    directly with a token — or a client sending no Origin — gets nothing."""
    door: Door = doors["door"]
    session = door.token(doors["embed"].public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    code, frames = close_code(door.socket(conversation, session["token"], origin=origin))
    assert code == 4403 and not any(f.get("type") == "welcome" for f in frames)


def test_socket_refuses_other_visitors_and_changed_settings(doors, widget_server):
    door: Door = doors["door"]
    embed = fresh_embed(doors)
    mine = door.token(embed.public_key, SHOP)
    conversation = door.conversation_new(mine["token"])
    other = door.token(embed.public_key, SHOP)
    assert close_code(door.socket(conversation, other["token"]))[0] == 4404
    assert close_code(door.socket("not-a-uuid", mine["token"]))[0] == 4404
    assert close_code(door.socket(conversation, "forged-token"))[0] == 4403
    # A conversation of another embed (same visitor credential) is not this token's.
    second = fresh_embed(doors)
    elsewhere = door.token(second.public_key, SHOP, visitor=mine["visitor"])
    assert close_code(door.socket(conversation, elsewhere["token"]))[0] == 4404
    # A dashboard conversation is never reachable from the widget.
    from chat.services import conversation_start

    dashboard = in_workspace(doors["ws"].workspace, conversation_start, channel="dashboard")
    assert close_code(door.socket(str(dashboard.public_id), mine["token"]))[0] == 4404
    # Taking the origin off the list cuts existing tokens at once.
    with door.socket(conversation, mine["token"]) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "welcome"
    in_workspace(doors["ws"].workspace, services.embed_update, embed=embed, allowed_origins=["https://other.example"])
    code, frames = close_code(door.socket(conversation, mine["token"]))
    assert code == 4403 and frames[0]["code"] == "origin_not_allowed"


def test_a_dashboard_session_means_nothing_on_the_widget_socket(doors, widget_server):
    from tests.chat.test_protocol import session_cookie

    door: Door = doors["door"]
    session = door.token(doors["embed"].public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    socket = widget_server.ws_connect(door.host, f"/widget/v1/ws/{conversation}/", additional_headers={
        "Origin": door.own_origin, "Cookie": session_cookie(doors["ws"].owner)})
    assert close_code(socket)[0] == 4403


def test_malformed_and_oversized_frames_get_errors_not_crashes(doors):
    door: Door = doors["door"]
    session = door.token(doors["embed"].public_key, SHOP)
    conversation = door.conversation_new(session["token"])
    with door.socket(conversation, session["token"]) as socket:
        json.loads(socket.recv(timeout=30))
        socket.send(json.dumps({"type": "resume", "last_seq": 0}))
        frames_until(socket, lambda f: f["type"] == "resumed")
        socket.send("{not json")
        assert frames_until(socket, lambda f: f["type"] == "error")[-1]["code"] == "malformed_frame"
        socket.send(json.dumps({"type": "message", "client_id": "big", "text": "x" * 20000}))
        assert frames_until(socket, lambda f: f["type"] == "error")[-1]["code"] == "frame_too_large"
        socket.send(b"\x00\x01")
        assert frames_until(socket, lambda f: f["type"] == "error")[-1]["code"] == "binary_not_supported"
        socket.send(json.dumps({"type": "subscribe_all"}))
        assert frames_until(socket, lambda f: f["type"] == "error")[-1]["code"] == "unknown_type"
