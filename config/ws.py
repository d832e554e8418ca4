"""WebSocket plumbing: the workspace comes from the Host header, and every ORM hop runs in its schema.

Consumers never touch the ORM directly: they call `run_in_workspace(workspace, fn, ...)`, which runs `fn` in a
worker thread with the connection switched to the workspace's schema (the thread's connection may have served
another workspace a moment ago, so the schema is set on every hop).

The hops run on a small pool of threads that keep their database connections. Channels' database_sync_to_async
runs every hop of the process on one thread and, with CONN_MAX_AGE=0, opens a new PostgreSQL connection for each:
opening a socket took three of them (~100 ms on a busy machine), one socket after the other, so 150 sockets opening
at once waited 15 s for their handshakes.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import connection
from django.urls import path

from config.channels_layer import workspace_group
from config.errors import ApplicationError, ErrorCode
from config.singletons import process_singleton

T = TypeVar("T")

# Close codes a client can act on: 4403 = not allowed here (not a member, suspended workspace), 4404 = no workspace.
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


# Bounded, so a process holds at most this many PostgreSQL connections for socket hops.
DB_HOP_THREADS = 4

_thread_state = threading.local()
_db_hop_executor = process_singleton(
    lambda: ThreadPoolExecutor(max_workers=DB_HOP_THREADS, thread_name_prefix="ws-db"))


def _db_hop_call(workspace: Any, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    # CONN_HEALTH_CHECKS for a thread that keeps its connection across hops: Django checks it before the hop's first
    # query and reconnects if PostgreSQL cut it (checking only after 30 s idle failed the next socket after a cut).
    if connection.connection is not None:
        connection.health_check_done = False
    _thread_state.last_used = time.monotonic()
    if workspace is None:
        connection.set_schema_to_public()
    else:
        connection.set_tenant(workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_schema_to_public()
        # As Django does between requests: after a database error, keep the connection only if it still works
        # (PostgreSQL may have restarted), so that the next hop reconnects instead of failing too.
        if connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


async def _db_hop(workspace: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` on a hop thread, in `workspace`'s schema (None: the public schema)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_db_hop_executor(), _db_hop_call, workspace, fn, args, kwargs)


def _resolve_workspace(host: str) -> Any | None:
    from tenants.selectors import workspace_for_host

    return workspace_for_host(host=host)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def origin_matches_host(scope: dict[str, Any]) -> bool:
    """Browsers send the session cookie with a WebSocket opened by any site's page, and WebSockets have no CSRF
    token: only a page of the same host may use the cookie. Non-browser clients send no Origin."""
    origin = _header(scope, b"origin")
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == _header(scope, b"host").lower()


async def refuse_websocket(send: Any, code: int) -> None:
    """Accept, then close with `code`: a close before the accept reaches the client as a bare HTTP 403 and the
    code is lost. The caller has already consumed the websocket.connect event."""
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code})


async def run_in_workspace(workspace: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await _db_hop(workspace, fn, *args, **kwargs)


class WorkspaceHostMiddleware:
    """Resolves scope['workspace'] from the Host header; unknown hosts and the public site get no WebSocket."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from tenants.models import WorkspaceStatus

        host = _header(scope, b"host").split(":")[0].lower()
        workspace = await _db_hop(None, _resolve_workspace, host) if host else None
        if workspace is None or workspace.schema_name == "public":
            await receive()  # the websocket.connect event
            await refuse_websocket(send, CLOSE_NOT_FOUND)
            return None
        if workspace.status != WorkspaceStatus.ACTIVE:  # as over HTTP (tenants.middleware): suspended is closed
            await receive()
            await refuse_websocket(send, CLOSE_FORBIDDEN)
            return None
        return await self.app({**scope, "workspace": workspace}, receive, send)


def _session_user_and_role(session: Any, workspace_id: int) -> tuple[Any, str | None]:
    """The session's user (as django.contrib.auth.get_user verifies it) and their role here, in one hop."""
    from django.contrib.auth import get_user

    from accounts.selectors import membership_role

    user = get_user(SimpleNamespace(session=session))
    if not user.is_authenticated:
        return user, None
    return user, membership_role(user_id=user.pk, workspace_id=workspace_id)


class WorkspaceAuthMiddleware:
    """Loads the session's user (public schema) and their role in this workspace into the scope; a socket opened
    by another site's page stays anonymous (see origin_matches_host)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from django.contrib.auth.models import AnonymousUser

        user, role = AnonymousUser(), None
        if origin_matches_host(scope):
            user, role = await _db_hop(None, _session_user_and_role, scope["session"], scope["workspace"].pk)
        return await self.app({**scope, "user": user, "role": role}, receive, send)


class WorkspaceEventsConsumer(AsyncJsonWebsocketConsumer):
    """Dashboard live events of one workspace (ingestion progress, inbox, ...): members only."""

    async def connect(self) -> None:
        if not self.scope.get("role"):
            await self.accept()  # so that the client sees the close code (see refuse_websocket)
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = workspace_group(self.scope["workspace"].schema_name, "events")
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.send_json({"type": "pong"})
            return
        error = ApplicationError("Unknown or malformed frame.", code=ErrorCode.MALFORMED_REQUEST)
        await self.send_json({"type": "error", **error.as_dict()["error"]})

    async def workspace_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])


websocket_urlpatterns = [
    path("ws/workspace/events/", WorkspaceEventsConsumer.as_asgi()),
]
