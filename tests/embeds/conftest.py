"""Fixtures of the widget tests: a live server of the widget suite's own, workspaces with real knowledge (ingested by
the real Celery worker), embeds made through the services, a host website on another origin, and helpers that use
the widget's doors the way the loader and the frame do."""
from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.conftest import LOG_DIR
from tests.factories import WorkspaceWithOwner, unique_slug
from tests.factories import PASSWORD
from tests.live import LiveServer, free_port, start_live_server

# Generous limits for the suite's own server: tests make many requests a minute from one IP, and the limits have
# tests of their own (against a server with tight ones).
GENEROUS_LIMITS = {
    "WIDGET_RATE_HTTP_IP": "100000/m", "WIDGET_RATE_HTTP_EMBED": "100000/m", "WIDGET_RATE_HTTP_WORKSPACE": "100000/m",
    "WIDGET_RATE_SESSION_IP": "100000/m", "WIDGET_RATE_SOCKET_IP": "100000/m", "WIDGET_RATE_MESSAGE_IP": "100000/m",
    "WIDGET_RATE_MESSAGE_EMBED": "100000/m", "WIDGET_RATE_MESSAGE_WORKSPACE": "100000/m",
}

RETURNS = """# Returns and refunds

You can return any product within 30 days of delivery for a full refund. Print the prepaid return label from your
account page and drop the parcel at any post office. Refunds reach your card within five business days after the
parcel arrives at our warehouse.
"""
SHIPPING = """# Shipping times

Orders placed before 2 p.m. ship the same working day. Standard delivery takes two to four working days; express
delivery arrives the next working day. Every parcel gets a tracking link by email.
"""
# A document whose title tries to be markup: it must show as these characters in the widget's sources.
XSS_TITLE = "Shipping <img src=x onerror=\"alert('title')\"> <script>alert('title2')</script>"


def in_workspace(workspace: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    connection.set_tenant(workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_schema_to_public()


def workspace_on_plan(name: str, plan: str = "pro") -> WorkspaceWithOwner:
    from accounts.services import workspace_signup

    owner, result = workspace_signup(email=f"owner-{secrets.token_hex(4)}@example.test", password=PASSWORD,
                                     workspace_name=name, slug=unique_slug("wdg"), plan=plan)
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def knowledge_add(workspace: Any, documents: list[tuple[str, str]], timeout: float = 300) -> list[int]:
    """Documents typed in through documents.services; the running Celery worker ingests them. One at a time:
    two worker processes opening a fresh Chroma directory at once can collide (documents/vectors.py)."""
    from documents import services as document_services
    from documents.models import Document, DocumentStatus

    ids = []
    for title, text in documents:
        document_id = in_workspace(
            workspace, lambda: document_services.document_create_text(title=title, text=text, markdown=True).pk)
        deadline = time.monotonic() + timeout
        while True:
            status = in_workspace(workspace, lambda: Document.objects.get(pk=document_id).status)
            if status == DocumentStatus.INDEXED:
                break
            assert status != DocumentStatus.FAILED, f"{title!r} failed to ingest"
            assert time.monotonic() < deadline, f"{title!r} not indexed in {timeout} s ({status})"
            time.sleep(0.5)
        ids.append(document_id)
    return ids


def embed_make(workspace: Any, origins: list[str], **kwargs: Any) -> Any:
    from embeds import services

    return in_workspace(workspace, services.embed_create, name=kwargs.pop("name", "Shop site"),
                        allowed_origins=origins, **kwargs)


# --- the browser: tests/conftest.py launches the one session browser with third-party storage partitioning on.


# --- servers -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def widget_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    """A real ASGI server (uvicorn) for the widget suite, with generous rate limits."""
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, extra_env=GENEROUS_LIMITS, name="asgi-widget")
    yield server
    server.process.stop()


# Tight limits, counted per hour so that a test never straddles a window boundary. Clients are told apart by
# X-Forwarded-For: the limited server trusts it from 127.0.0.1 (TRUSTED_PROXIES, as a reverse proxy there would be),
# so each test can play many IPs. The untrusted one has the same limits and trusts nobody (the default).
TIGHT_LIMITS = {
    "WIDGET_RATE_HTTP_IP": "30/h", "WIDGET_RATE_HTTP_EMBED": "40/h", "WIDGET_RATE_HTTP_WORKSPACE": "60/h",
    "WIDGET_RATE_SESSION_IP": "8/h", "WIDGET_RATE_SOCKET_IP": "20/h", "WIDGET_RATE_MESSAGE_IP": "2/h",
    "WIDGET_RATE_MESSAGE_EMBED": "3/h", "WIDGET_RATE_MESSAGE_WORKSPACE": "4/h",
}


@pytest.fixture(scope="session")
def limited_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    """The same server with tight widget rate limits."""
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="asgi-widget-limits",
                                   extra_env={**TIGHT_LIMITS, "TRUSTED_PROXIES": "127.0.0.1"})
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def untrusted_limited_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    """Tight limits and no trusted proxy: X-Forwarded-For from anyone is just a header."""
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="asgi-widget-untrusted",
                                   extra_env={**TIGHT_LIMITS, "TRUSTED_PROXIES": ""})
    yield server
    server.process.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@dataclass
class HostSite:
    """A business's website on another origin: a plain http.server on 127.0.0.1, reached by Chromium as
    http://shop.localhost:<port>/ (and, for a site that is not allowed, http://evil.localhost:<port>/)."""

    folder: Path
    port: int
    server: ThreadingHTTPServer = field(repr=False)

    def origin(self, host: str = "shop.localhost") -> str:
        return f"http://{host}:{self.port}"

    def page(self, name: str, html: str, host: str = "shop.localhost") -> str:
        (self.folder / name).write_text(html)
        return f"{self.origin(host)}/{name}"


@pytest.fixture(scope="session")
def host_site(tmp_path_factory) -> Iterator[HostSite]:
    folder = tmp_path_factory.mktemp("host-site")
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HostSite(folder=folder, port=port, server=server)
    server.shutdown()
    server.server_close()


def host_page_html(snippet: str, *, body: str = "", head: str = "") -> str:
    """A host page with hostile CSS: its rules must not reach the widget (it lives in a shadow root and a frame)."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  * {{ font-family: "Comic Sans MS", cursive !important; color: #ff00ff !important; }}
  button {{ display: none !important; background: red !important; }}
  iframe {{ width: 1px !important; height: 1px !important; }}
  div {{ visibility: hidden !important; }}
</style>{head}</head>
<body><h1>Our shop</h1><p>Welcome.</p>{body}
{snippet}
</body></html>"""


# --- the widget's doors, as the loader and the frame use them ---------------------------------------------------
@dataclass
class Door:
    server: LiveServer
    host: str  # the workspace host

    @property
    def own_origin(self) -> str:
        return f"http://{self.host}:{self.server.port}"

    def config(self, key: str, origin: str | None, **headers: str):
        headers = {name.replace("_", "-"): value for name, value in headers.items()}
        if origin is not None:
            headers["Origin"] = origin
        return self.server.request("GET", self.host, f"/widget/v1/config/{key}/", headers=headers)

    def frame(self, key: str, origin: str | None, **headers: str):
        query = f"?o={origin}" if origin is not None else ""
        headers.setdefault("Sec-Fetch-Dest", "iframe")
        return self.server.request("GET", self.host, f"/widget/v1/frame/{key}/{query}", headers=headers)

    def session(self, key: str, host_origin: str, *, origin: str | None = "own", ip: str | None = None, **body: Any):
        headers = {"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}
        if ip:
            headers["X-Forwarded-For"] = ip
        if origin == "own":
            headers["Origin"] = self.own_origin
        elif origin is not None:
            headers["Origin"] = origin
            headers["Sec-Fetch-Site"] = "cross-site"
        return self.server.request("POST", self.host, f"/widget/v1/session/{key}/",
                                   json={"host_origin": host_origin, **body}, headers=headers)

    def token(self, key: str, host_origin: str, **body: Any) -> dict[str, Any]:
        response = self.session(key, host_origin, **body)
        assert response.status_code == 200, response.text
        return response.json()

    def visitor_call(self, method: str, path: str, token: str, **kwargs: Any):
        headers = {"Authorization": f"Bearer {token}", "Sec-Fetch-Site": "same-origin", **kwargs.pop("headers", {})}
        if method != "GET":
            headers["Origin"] = self.own_origin
        return self.server.request(method, self.host, path, headers=headers, **kwargs)

    def conversation_new(self, token: str, **body: Any) -> str:
        response = self.visitor_call("POST", "/widget/v1/conversations/", token, json=body)
        assert response.status_code == 201, response.text
        return response.json()["conversation"]["id"]

    def socket(self, conversation_id: str, token: str, *, origin: str | None = "own", **extra: str):
        headers = {name.replace("_", "-"): value for name, value in extra.items()}
        if origin == "own":
            headers["Origin"] = self.own_origin
        elif origin is not None:
            headers["Origin"] = origin
        return self.server.ws_connect(self.host, f"/widget/v1/ws/{conversation_id}/?token={token}",
                                      additional_headers=headers)
