"""Request bodies capped per route before Django reads them (ASGI).

Django's ASGI handler reads a request's whole body (spooled to a temporary file) before any middleware or view
runs, so a cap checked in a view answers only after the last byte: a client could make the server read and write
gigabytes just to be told 413. Apps register the routes (URL names of the tenant URLconf) whose bodies they cap;
`RequestBodyCapMiddleware` refuses a body as soon as its declared Content-Length, or the bytes streamed so far, pass
the cap, with the app's error in the error shape. The server drops the rest of a body whose request is already
answered (uvicorn), so a client that keeps sending reads the 413 when it is done.

A chunked body (no Content-Length) within the cap is collected here, spooled like Django does, and handed on with
its Content-Length: Django's request parsing reads no body without one.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.urls import Resolver404, resolve

from config.errors import ApplicationError

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_REPLAY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class BodyCap:
    limit: Callable[[], int]  # the largest body accepted, in bytes (read per request: settings may change)
    error: Callable[[], ApplicationError]  # what a larger body is answered with


_caps: dict[str, BodyCap] = {}


def body_cap_register(*, url_names: Iterable[str], limit: Callable[[], int], error: Callable[[], ApplicationError]
                      ) -> None:
    """Cap the bodies of POST/PUT/PATCH requests to these routes (called from an app's ready())."""
    for name in url_names:
        _caps[name] = BodyCap(limit=limit, error=error)


def body_cap_for(*, path: str) -> BodyCap | None:
    try:
        match = resolve(path, urlconf=settings.ROOT_URLCONF)
    except Resolver404:
        return None
    return _caps.get(match.url_name or "")


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in headers)


async def _refuse(send: Send, error: ApplicationError, *, path: str, received: int | None) -> None:
    logger.warning("request body over its cap refused before reading it",
                   extra={"path": path, "code": error.code, "received_bytes": received})
    body = json.dumps(error.as_dict()).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestBodyCapMiddleware:
    """ASGI middleware in front of Django's HTTP handler; see the module docstring."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = None
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            cap = body_cap_for(path=scope["path"])
        if cap is None:
            return await self.app(scope, receive, send)
        limit = cap.limit()
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > limit:
            return await _refuse(send, cap.error(), path=scope["path"], received=0)
        if declared is not None or not _is_chunked(scope["headers"]):
            return await self.app(scope, receive, send)  # the server holds the body to its declared length

        body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        try:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nobody to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return await _refuse(send, cap.error(), path=scope["path"], received=size)
                if getattr(body, "_rolled", False):
                    await sync_to_async(body.write, thread_sensitive=False)(chunk)
                else:
                    body.write(chunk)
                if not message.get("more_body", False):
                    break
            body.seek(0)
            framing = (b"transfer-encoding", b"content-length")
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in framing]
            headers.append((b"content-length", str(size).encode()))
            await self.app({**scope, "headers": headers}, _replay(body, receive), send)
        finally:
            body.close()


def _replay(body: Any, receive: Receive) -> Receive:
    """The collected body again, in chunks; then the client's own messages (Django listens for a disconnect)."""
    done = False

    async def replayed() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(_REPLAY_CHUNK)
        more = len(chunk) == _REPLAY_CHUNK
        done = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replayed
