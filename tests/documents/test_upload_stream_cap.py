"""Uploads far over the size cap, over real sockets to the real ASGI server (uvicorn, the `live_server`).

What must hold: a ~120 MB chunked upload (generated on the fly, never held in memory) is answered 413 in the error
shape, nothing of it is stored (no Document row, no file under MEDIA_ROOT for the workspace) and the server stays
healthy; and the refusal comes as soon as the declared (Content-Length) or streamed size passes the cap, not after the
server has read (and spooled to disk) the whole body. The last two are proven without any clock: the client stops
sending well before the end of its body and waits, with a deadline, for the answer; a server that reads everything
before refusing never answers a body that never ends.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings

from accounts.services import api_key_create
from documents.models import Document
from tests.documents.test_pipeline import workspace_schema
from tests.factories import workspace_with_owner

API = "/api/v1/documents/"
BOUNDARY = "ccgpt-huge-upload-boundary"
HUGE_BYTES = 120 * 1024 * 1024
BLOCK = (b"The quick brown fox jumps over the lazy dog, again and again and again.\n" * 14_564)[: 1024 * 1024]
HUNG_AFTER_SECONDS = 60  # liveness only: a server that has not answered by then never will (speed is not tested)


def cap() -> int:
    """The live server's per-file cap: it runs with this process's settings and environment."""
    return settings.DOCUMENT_MAX_BYTES


@pytest.fixture(scope="module")
def uploader(django_db_blocker) -> SimpleNamespace:
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Huge Uploads")
        _key, secret = api_key_create(workspace=ws.workspace, name="uploader", scopes=["read", "write"])
        return SimpleNamespace(ws=ws, host=ws.host, auth=f"Api-Key {secret}")


def multipart_head(filename: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def huge_body(filename: str, size: int) -> Iterator[bytes]:
    """A multipart body carrying a `size`-byte text file, generated block by block (never held whole)."""
    yield multipart_head(filename)
    sent = 0
    while sent < size:
        block = BLOCK[: size - sent]
        sent += len(block)
        yield block
    yield MULTIPART_TAIL


def stored_files(ws) -> set[str]:
    root = Path(settings.MEDIA_ROOT) / "workspaces" / ws.workspace.schema_name
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def documents_named(ws, name: str) -> int:
    with workspace_schema(ws.workspace):
        return Document.objects.filter(original_name=name).count()


def assert_too_large(status: int, body: bytes) -> dict:
    assert status == 413, body[:500]
    payload = json.loads(body)
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message", "details"}, payload
    assert payload["error"]["code"] == "file_too_large" and payload["error"]["message"], payload
    assert payload["error"]["details"]["max_bytes"] == cap(), payload
    return payload["error"]


def raw_request(live_server, uploader, headers: dict[str, str]) -> socket.socket:
    """An upload request's head on a plain socket; the caller sends the body (or not)."""
    sock = socket.create_connection(("127.0.0.1", live_server.port), timeout=HUNG_AFTER_SECONDS)
    lines = [f"POST {API} HTTP/1.1", f"Host: {uploader.host}:{live_server.port}", f"Authorization: {uploader.auth}",
             f"Content-Type: multipart/form-data; boundary={BOUNDARY}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_answer(sock: socket.socket, what: str) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        return response.status, response.read()
    except TimeoutError:
        raise AssertionError(f"no answer within {HUNG_AFTER_SECONDS} s to {what}: the server waits for the whole "
                             "body before refusing it") from None


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.slow
def test_a_120_mb_chunked_upload_is_refused_with_413_and_leaves_nothing(live_server, uploader):
    name = "huge-chunked.txt"
    files_before = stored_files(uploader.ws)
    response = live_server.request(
        "POST", uploader.host, API, data=huge_body(name, HUGE_BYTES), timeout=HUNG_AFTER_SECONDS,
        headers={"Authorization": uploader.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"  # streamed, no length declared
    assert_too_large(response.status_code, response.content)
    assert documents_named(uploader.ws, name) == 0
    assert stored_files(uploader.ws) == files_before

    # The server is healthy afterwards, and a normal small upload works on it.
    assert live_server.request("GET", "localhost", "/healthz", timeout=HUNG_AFTER_SECONDS).status_code == 200
    small_text = b"How to reset the router: hold Reset for ten seconds.\n"
    small = live_server.request("POST", uploader.host, API, headers={"Authorization": uploader.auth},
                                files={"file": ("small.txt", small_text)}, timeout=HUNG_AFTER_SECONDS)
    assert small.status_code == 201, small.text
    assert documents_named(uploader.ws, "small.txt") == 1


def test_a_declared_length_over_the_cap_is_refused_before_any_of_the_body(live_server, uploader):
    files_before = stored_files(uploader.ws)
    sock = raw_request(live_server, uploader, {"Content-Length": str(HUGE_BYTES)})
    try:
        sock.sendall(multipart_head("declared.txt"))  # and nothing more: the 120 MB never come
        status, body = read_answer(sock, "a declared 120 MB body")
    finally:
        sock.close()
    assert_too_large(status, body)
    assert documents_named(uploader.ws, "declared.txt") == 0
    assert stored_files(uploader.ws) == files_before


@pytest.mark.slow
def test_a_streamed_body_is_refused_once_it_passes_the_cap_not_at_its_end(live_server, uploader):
    """Chunked, no length: the client sends a little more than the cap (plus what socket buffers may hold), then
    stops without ending the body and waits for the answer."""
    files_before = stored_files(uploader.ws)
    stop_after = cap() + 16 * 1024 * 1024
    assert stop_after < HUGE_BYTES
    sock = raw_request(live_server, uploader, {"Transfer-Encoding": "chunked"})
    try:
        sock.sendall(chunk(multipart_head("streamed.txt")))
        sent = 0
        while sent < stop_after and not select.select([sock], [], [], 0)[0]:  # stop early once it has answered
            sock.sendall(chunk(BLOCK))
            sent += len(BLOCK)
        status, body = read_answer(sock, f"a chunked body stopped after {sent} bytes (cap {cap()})")
    finally:
        sock.close()
    assert_too_large(status, body)
    assert documents_named(uploader.ws, "streamed.txt") == 0
    assert stored_files(uploader.ws) == files_before
    assert live_server.request("GET", "localhost", "/healthz", timeout=HUNG_AFTER_SECONDS).status_code == 200


def test_a_chunked_upload_within_the_cap_is_stored(live_server, uploader):
    """Without a Content-Length Django's parsing reads no body at all (it answered `file_required`): a chunked body
    within the cap is handed on with its length."""
    name, size = "small-chunked.txt", 120_000
    response = live_server.request(
        "POST", uploader.host, API, data=huge_body(name, size), timeout=HUNG_AFTER_SECONDS,
        headers={"Authorization": uploader.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] == size and documents_named(uploader.ws, name) == 1
