"""WebSocket plumbing: the workspace comes from the Host header, and every ORM hop runs in its schema.

Consumers never touch the ORM directly: they call `run_in_workspace(workspace, fn, ...)`, which runs `fn` in a
worker thread with the connection switched to the workspace's schema (the thread's connection may have served
another workspace a moment ago, so the schema is set on every hop).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import connection
from django.urls import path

from config.channels_layer import workspace_group

T = TypeVar("T")


def _resolve_workspace(host: str) -> Any | None:
    from tenants.selectors import workspace_for_host

    connection.set_schema_to_public()
    return workspace_for_host(host=host)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


async def run_in_workspace(workspace: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    def call() -> T:
        connection.set_tenant(workspace)
        try:
            return fn(*args, **kwargs)
        finally:
            connection.set_schema_to_public()

    return await database_sync_to_async(call)()


class WorkspaceHostMiddleware:
    """Resolves scope['workspace'] from the Host header; unknown hosts and the public site get no WebSocket."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        host = _header(scope, b"host").split(":")[0].lower()
        workspace = await database_sync_to_async(_resolve_workspace)(host) if host else None
        if workspace is None or workspace.schema_name == "public":
            await receive()  # the websocket.connect event
            await send({"type": "websocket.close", "code": 4404})
            return None
        return await self.app({**scope, "workspace": workspace}, receive, send)


def _membership_role(user_id: int, workspace_id: int) -> str | None:
    from accounts.selectors import membership_role

    return membership_role(user_id=user_id, workspace_id=workspace_id)


class WorkspaceAuthMiddleware:
    """Loads the session's user (public schema) and their role in this workspace into the scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from channels.auth import get_user

        user = await get_user(scope)
        role = None
        if user.is_authenticated:
            role = await database_sync_to_async(_membership_role)(user.pk, scope["workspace"].pk)
        return await self.app({**scope, "user": user, "role": role}, receive, send)


class WorkspaceEventsConsumer(AsyncJsonWebsocketConsumer):
    """Dashboard live events of one workspace (ingestion progress, inbox, ...): members only."""

    async def connect(self) -> None:
        if not self.scope.get("role"):
            await self.close(code=4403)
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
        await self.send_json({"type": "error", "code": "malformed_request", "message": "Unknown or malformed frame."})

    async def workspace_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])


websocket_urlpatterns = [
    path("ws/workspace/events/", WorkspaceEventsConsumer.as_asgi()),
]
