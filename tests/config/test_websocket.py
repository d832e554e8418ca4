"""The workspace WebSocket over the real ASGI server (uvicorn) and the real Redis channel layer.

Events are sent the way the rest of the code sends them: `group_send` on the workspace's group from another process
(this one). Idle and load tests guard the two redis-py 8 traps described in config/channels_layer.py.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from config.channels_layer import workspace_group
from tests.conftest import LOG_DIR
from tests.factories import PASSWORD, WorkspaceWithOwner, workspace_with_owner
from tests.live import LiveServer, start_live_server

EVENTS_PATH = "/ws/workspace/events/"
# Longer than redis-py 8's default socket timeout (5 s), which equals the layer's BZPOPMIN timeout.
IDLE_SECONDS = 11
REDIS_TIMEOUT_ERROR = "Timeout reading from"


# --- helpers -----------------------------------------------------------------------------------------------------
def session_cookie(user: Any) -> str:
    """A logged-in session for `user`, made the way django.contrib.auth.login stores one."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def http_login_cookie(server: LiveServer, host: str, email: str) -> str:
    """Log in through the workspace host's real login form and return the session cookie."""
    import requests

    browser = requests.Session()
    headers = {"Host": f"{host}:{server.port}"}
    base = f"http://127.0.0.1:{server.port}"
    assert browser.get(f"{base}/login/", headers=headers, timeout=30).status_code == 200
    csrf = browser.cookies["csrftoken"]
    response = browser.post(
        f"{base}/login/", headers={**headers, "Referer": f"http://{host}:{server.port}/login/"}, timeout=30,
        data={"email": email, "password": PASSWORD, "csrfmiddlewaretoken": csrf}, allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:500]
    return f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME]}"


def connect(server: LiveServer, host: str, cookie: str | None = None, **headers: str) -> ClientConnection:
    extra = {"Cookie": cookie} if cookie else {}
    return server.ws_connect(host, EVENTS_PATH, additional_headers={**extra, **headers})


def broadcast(schema_name: str, payload: dict[str, Any]) -> None:
    async_to_sync(get_channel_layer().group_send)(
        workspace_group(schema_name, "events"), {"type": "workspace.event", "payload": payload}
    )


def next_frame(socket: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def close_code(socket: ClientConnection, timeout: float = 10) -> int | None:
    """The code the server closed the socket with (the socket must not deliver any frame first)."""
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=timeout)
    return closed.value.rcvd.code if closed.value.rcvd else None


def refused_with(server: LiveServer, host: str, cookie: str | None = None, **headers: str) -> int | None:
    socket = connect(server, host, cookie, **headers)
    try:
        return close_code(socket)
    finally:
        socket.close()


class LogWindow:
    """The part of a process log written since the window was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def text(self) -> str:
        with open(self.path, "rb") as log:
            log.seek(self.start)
            return log.read().decode("utf-8", errors="replace")


def open_many(server: LiveServer, host: str, cookie: str, count: int) -> tuple[list[ClientConnection], list[Exception]]:
    """`count` sockets opened at the same time (one thread each), so the server handles them concurrently; the
    sockets that opened, and the errors of those that did not."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(connect, server, host, cookie) for _ in range(count)]
        sockets, errors = [], []
        for future in futures:
            try:
                sockets.append(future.result())
            except Exception as error:  # collected so that every opened socket can be closed
                errors.append(error)
    return sockets, errors


def close_all(sockets: list[ClientConnection]) -> None:
    """Close every socket at the same moment (one thread each, released together)."""
    if not sockets:
        return
    start = threading.Barrier(len(sockets))

    def close(socket: ClientConnection) -> None:
        start.wait(timeout=30)
        socket.close()

    with ThreadPoolExecutor(max_workers=len(sockets)) as pool:
        list(pool.map(close, sockets))


def group_size(schema_name: str) -> int:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        return client.zcard(f"{prefix}:group:{workspace_group(schema_name, 'events')}")
    finally:
        client.close()


def wait_for(condition: Any, timeout: float = 30, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


@pytest.fixture
def owner_cookie(tenant: WorkspaceWithOwner) -> str:
    return session_cookie(tenant.owner)


@pytest.fixture
def fresh_workspace(django_db_blocker) -> WorkspaceWithOwner:
    """A workspace of its own, for tests that count the members of its group."""
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Socket Workspace")


# --- a member's socket ---------------------------------------------------------------------------------------------
def test_member_logged_in_over_http_receives_workspace_events(live_server, tenant):
    cookie = http_login_cookie(live_server, tenant.host, tenant.owner.email)
    with connect(live_server, tenant.host, cookie) as socket:
        payload = {"type": "document.status", "document_id": 7, "status": "indexed", "nonce": secrets.token_hex(4)}
        broadcast(tenant.workspace.schema_name, payload)
        assert next_frame(socket) == payload


@pytest.mark.parametrize("role", ["admin", "agent", "viewer"])
def test_every_role_receives_events(live_server, tenant, role_users, role):
    with connect(live_server, tenant.host, session_cookie(role_users[role])) as socket:
        payload = {"type": "hello", "role": role, "nonce": secrets.token_hex(4)}
        broadcast(tenant.workspace.schema_name, payload)
        assert next_frame(socket) == payload


def test_ping_is_answered_with_pong(live_server, tenant, owner_cookie):
    with connect(live_server, tenant.host, owner_cookie) as socket:
        socket.send(json.dumps({"type": "ping"}))
        assert next_frame(socket) == {"type": "pong"}


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"type": "launch_missiles"}', '"ping"', "{}", b"\x00\x01"])
def test_malformed_frame_gets_an_error_event_and_the_socket_stays_open(live_server, tenant, owner_cookie, frame):
    with connect(live_server, tenant.host, owner_cookie) as socket:
        socket.send(frame)
        error = next_frame(socket)
        assert error["type"] == "error"
        assert error["code"] == "malformed_request"
        assert error["message"]
        socket.send(json.dumps({"type": "ping"}))
        assert next_frame(socket) == {"type": "pong"}
        payload = {"type": "still.here", "nonce": secrets.token_hex(4)}
        broadcast(tenant.workspace.schema_name, payload)
        assert next_frame(socket) == payload


# --- refusals ------------------------------------------------------------------------------------------------------
def test_anonymous_socket_is_refused(live_server, tenant):
    assert refused_with(live_server, tenant.host) == 4403


def test_garbage_session_cookie_is_refused(live_server, tenant):
    assert refused_with(live_server, tenant.host, f"{settings.SESSION_COOKIE_NAME}=not-a-session") == 4403


def test_member_of_another_workspace_is_refused(live_server, tenant, other_tenant):
    assert refused_with(live_server, tenant.host, session_cookie(other_tenant.owner)) == 4403


def test_unknown_host_is_refused(live_server, tenant, owner_cookie):
    assert refused_with(live_server, f"nobody-{secrets.token_hex(3)}.localhost", owner_cookie) == 4404


def test_public_host_is_refused(live_server, tenant, owner_cookie):
    assert refused_with(live_server, "localhost", owner_cookie) == 4404


def test_suspended_workspace_is_refused(live_server, fresh_workspace):
    from tenants.models import Workspace, WorkspaceStatus

    cookie = session_cookie(fresh_workspace.owner)
    with connect(live_server, fresh_workspace.host, cookie) as socket:  # active: accepted
        socket.send(json.dumps({"type": "ping"}))
        assert next_frame(socket) == {"type": "pong"}
    # No suspension service exists yet; the status column is what HTTP's middleware reads too.
    Workspace.objects.filter(pk=fresh_workspace.workspace.pk).update(status=WorkspaceStatus.SUSPENDED)
    assert refused_with(live_server, fresh_workspace.host, cookie) == 4403


def test_cross_site_origin_is_refused(live_server, tenant, owner_cookie):
    """The session cookie rides along on any page's WebSocket; only pages of the workspace's own host may use it."""
    assert refused_with(live_server, tenant.host, owner_cookie, Origin="http://evil.example") == 4403
    assert refused_with(live_server, tenant.host, owner_cookie, Origin=f"http://{tenant.host}:1") == 4403
    with connect(live_server, tenant.host, owner_cookie, Origin=f"http://{tenant.host}:{live_server.port}") as socket:
        socket.send(json.dumps({"type": "ping"}))
        assert next_frame(socket) == {"type": "pong"}


# --- isolation -----------------------------------------------------------------------------------------------------
def test_events_of_one_workspace_never_reach_another(live_server, tenant, other_tenant):
    a_socket = connect(live_server, tenant.host, session_cookie(tenant.owner))
    b_socket = connect(live_server, other_tenant.host, session_cookie(other_tenant.owner))
    try:
        a_schema, b_schema = tenant.workspace.schema_name, other_tenant.workspace.schema_name
        for_a = {"type": "for", "workspace": "A", "nonce": secrets.token_hex(4)}
        for_b = {"type": "for", "workspace": "B", "nonce": secrets.token_hex(4)}
        # Each socket's first frame must be its own workspace's event, though the other workspace's was sent first.
        broadcast(b_schema, for_b)
        broadcast(a_schema, for_a)
        assert next_frame(a_socket) == for_a
        assert next_frame(b_socket) == for_b
        broadcast(a_schema, {**for_a, "nonce": "second"})
        broadcast(b_schema, {**for_b, "nonce": "second"})
        assert next_frame(b_socket) == {**for_b, "nonce": "second"}
        assert next_frame(a_socket) == {**for_a, "nonce": "second"}
        # Nothing else is waiting on either socket.
        for socket in (a_socket, b_socket):
            with pytest.raises(TimeoutError):
                socket.recv(timeout=1)
    finally:
        a_socket.close()
        b_socket.close()


# --- the redis-py 8 traps ------------------------------------------------------------------------------------------
def hold_idle_then_broadcast(server: LiveServer, workspace: WorkspaceWithOwner, count: int) -> tuple[list, str]:
    """Open `count` sockets, leave them idle past redis-py's socket timeout, broadcast; per socket the frame received
    (or the exception), and what the server logged meanwhile."""
    log = LogWindow(server.process.log_path)
    cookie = session_cookie(workspace.owner)
    sockets = [connect(server, workspace.host, cookie) for _ in range(count)]
    try:
        time.sleep(IDLE_SECONDS)
        payload = {"type": "after.idle", "nonce": secrets.token_hex(4)}
        broadcast(workspace.workspace.schema_name, payload)
        outcomes: list[Any] = []
        for socket in sockets:
            try:
                outcomes.append(next_frame(socket))
            except Exception as error:
                outcomes.append(error)
        return [outcome == payload or outcome for outcome in outcomes], log.text()
    finally:
        close_all(sockets)


@pytest.mark.slow
def test_idle_sockets_survive_past_the_redis_socket_timeout(live_server, fresh_workspace):
    received, log = hold_idle_then_broadcast(live_server, fresh_workspace, count=6)
    assert received == [True] * 6
    assert REDIS_TIMEOUT_ERROR not in log
    assert "Exception in ASGI application" not in log


@pytest.fixture
def stock_layer_server(django_db_blocker) -> Iterator[LiveServer]:
    """A second ASGI server whose channel layer is channels_redis' own, configured as before the fix."""
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(
            connection.settings_dict, LOG_DIR, name="asgi-stock-layer",
            extra_env={"DJANGO_SETTINGS_MODULE": "tests.config.stock_channel_layer_settings"},
        )
    yield server
    server.process.stop()


@pytest.mark.slow
def test_stock_channels_redis_layer_really_loses_idle_sockets(stock_layer_server, fresh_workspace):
    """The trap is real: with redis-py's default 5 s socket timeout, the idle receive loop crashes."""
    received, log = hold_idle_then_broadcast(stock_layer_server, fresh_workspace, count=6)
    assert REDIS_TIMEOUT_ERROR in log
    assert received.count(True) < 6, received


SOCKET_COUNT = 150  # above redis-py's old cap of 100 pooled connections


@pytest.mark.slow
def test_many_sockets_on_one_process_all_receive_and_leave_no_stale_members(live_server, fresh_workspace):
    log = LogWindow(live_server.process.log_path)
    schema = fresh_workspace.workspace.schema_name
    sockets, errors = open_many(live_server, fresh_workspace.host, session_cookie(fresh_workspace.owner), SOCKET_COUNT)
    try:
        assert errors == []
        assert group_size(schema) == SOCKET_COUNT
        payload = {"type": "to.everyone", "nonce": secrets.token_hex(4)}
        broadcast(schema, payload)
        with ThreadPoolExecutor(max_workers=SOCKET_COUNT) as pool:
            frames = list(pool.map(next_frame, sockets))
        assert frames == [payload] * SOCKET_COUNT
    finally:
        close_all(sockets)
    # Every disconnect ran its group_discard (all at once): no stale members are left in the group.
    assert wait_for(lambda: group_size(schema) == 0), group_size(schema)
    text = log.text()
    assert "MaxConnectionsError" not in text and "Too many connections" not in text
    assert "Exception in ASGI application" not in text


def concurrent_group_ops(layer_class: type, count: int) -> tuple[list[BaseException], list[BaseException], int]:
    """On one event loop, as in one ASGI process: `count` sockets join a group all at once, then -- joined in waves
    of 50 -- all leave it at once. The errors of the joins, the errors of the leaves, and the members left behind."""
    group = f"pool-probe-{secrets.token_hex(4)}"

    async def run() -> tuple[list[BaseException], list[BaseException], int]:
        layer = layer_class(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
        channels = [await layer.new_channel() for _ in range(count)]
        added = await asyncio.gather(*(layer.group_add(group, name) for name in channels), return_exceptions=True)
        for wave in range(0, count, 50):
            await asyncio.gather(*(layer.group_add(group, name) for name in channels[wave:wave + 50]))
        discarded = await asyncio.gather(
            *(layer.group_discard(group, name) for name in channels), return_exceptions=True
        )
        left = await layer.connection(0).zcard(layer._group_key(group))
        await layer.connection(0).delete(layer._group_key(group))
        await layer.flush()
        return ([e for e in added if isinstance(e, BaseException)],
                [e for e in discarded if isinstance(e, BaseException)], left)

    return asyncio.run(run())


def test_stock_channels_redis_layer_really_fails_past_100_concurrent_operations():
    """The trap is real: redis-py's asyncio pool raises MaxConnectionsError past 100 connections instead of waiting,
    so group_add fails (the socket dies) and group_discard fails (a stale member stays in the group)."""
    from channels_redis.core import RedisChannelLayer
    from redis.exceptions import MaxConnectionsError

    add_errors, discard_errors, left = concurrent_group_ops(RedisChannelLayer, SOCKET_COUNT)
    assert add_errors and all(isinstance(error, MaxConnectionsError) for error in add_errors)
    assert discard_errors and left > 0


def test_our_layer_waits_for_a_connection_instead():
    from config.channels_layer import WorkspaceRedisChannelLayer

    assert concurrent_group_ops(WorkspaceRedisChannelLayer, 1000) == ([], [], 0)
