"""The ingestion pipeline against real Celery workers: parse → chunk → embed → index, live progress, failures with
codes, retries with backoff, redelivery after a worker is killed, and search isolation between workspaces."""
from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

from documents import selectors, services
from documents.models import Chunk, Document
from documents.vectors import vectors_count, vectors_query
from tests.factories import WorkspaceWithOwner, workspace_with_owner
from tests.live import ManagedProcess, process_env, start_process

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOG_DIR = Path(settings.BASE_DIR) / ".data" / f"test-logs-{settings.TEST_DATABASE_NAME}"
WORDS = (
    "printer router invoice refund warranty battery charger cable screen keyboard account password login shipping "
    "delivery parcel courier address billing subscription renewal upgrade downgrade install configure reset reboot "
    "firmware driver update backup restore export import calendar reminder notification email message archive "
    "folder permission admin member invite policy return exchange voucher discount coupon order tracking customs "
    "invoice receipt currency payment card transfer balance statement quarterly annual report network wireless "
    "bluetooth pairing speaker microphone camera lens tripod storage memory processor fan cooling noise vibration"
).split()


# --- helpers -----------------------------------------------------------------------------------------------------


def word_marker(prefix: str) -> str:
    """A made-up word (letters only: digits can make PostgreSQL's parser split a token differently)."""
    return prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(10))


@contextmanager
def workspace_schema(workspace: Any) -> Iterator[None]:
    connection.set_tenant(workspace)
    try:
        yield
    finally:
        connection.set_schema_to_public()


def manual_text(*, title: str, sections: int, paragraphs: int, marker: str = "", seed: int = 0) -> str:
    """A Markdown manual with headings and varied prose (deterministic for a seed)."""
    rng = random.Random(seed)
    lines = [f"# {title}", ""]
    for s in range(sections):
        lines += [f"## Section {s + 1} {rng.choice(WORDS)}", ""]
        for _p in range(paragraphs):
            words = [rng.choice(WORDS) for _ in range(rng.randint(60, 120))]
            if marker:
                words.insert(rng.randint(0, len(words)), marker)
            lines += [" ".join(words).capitalize() + ".", ""]
    return "\n".join(lines)


def add_file(workspace: Any, name: str, data: bytes, **kwargs: Any) -> int:
    with workspace_schema(workspace):
        return services.document_upload(uploaded_file=ContentFile(data, name=name), **kwargs).pk


def document_of(workspace: Any, document_id: int) -> Document:
    with workspace_schema(workspace):
        return Document.objects.get(pk=document_id)


def wait_settled(workspace: Any, document_id: int, *, timeout: float = 180,
                 until: tuple[str, ...] = ("indexed", "failed")) -> Document:
    deadline = time.monotonic() + timeout
    while True:
        document = document_of(workspace, document_id)
        if document.status in until:
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"document {document_id} is still {document.status} at {document.stage} "
                                 f"({document.stage_progress}%): {document.error_code} {document.error_message}")
        time.sleep(0.1)


def chunk_rows(workspace: Any, document_id: int) -> list[tuple[int, str]]:
    with workspace_schema(workspace):
        return list(Chunk.objects.filter(document_id=document_id).order_by("ordinal").values_list("ordinal", "text"))


def session_cookie(user: Any) -> str:
    """A logged-in session for `user`, stored the way django.contrib.auth.login stores one."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def worker_alive(worker: ManagedProcess) -> bool:
    return worker.proc.poll() is None


@contextmanager
def dedicated_worker(name: str, queue: str, **env: str) -> Iterator[ManagedProcess]:
    """A Celery worker of our own (one process) on its own queue, with its own environment."""
    from config.celery import app

    node = f"{name}-{secrets.token_hex(3)}"
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-Q", queue, "-c", "1",
            "-n", f"{node}@%h", "--without-gossip", "--without-mingle"]
    worker = start_process(node, argv, process_env(connection.settings_dict, **env), LOG_DIR)
    try:
        deadline = time.monotonic() + 90
        while True:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker {node} exited:\n{worker.log_tail()}")
            if any(f"{node}@" in list(reply)[0] for reply in app.control.ping(timeout=1.0)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {node} did not come up:\n{worker.log_tail()}")
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def ws(django_db_blocker) -> WorkspaceWithOwner:
    """A workspace of this module's own, so nothing else in the run touches its knowledge base."""
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Pipeline Co")


# --- the happy path ------------------------------------------------------------------------------------------------


def test_markdown_document_is_parsed_chunked_embedded_and_indexed_once(ws, celery_worker):
    marker = word_marker("zq")
    text = manual_text(title="Router handbook", sections=4, paragraphs=5, marker=marker, seed=1)
    text += ("\n## Staff kitchen\n\nBoil plenty of salted water, cook the spaghetti for nine minutes, drain it and "
             "serve it with tomato sauce and fresh basil.\n")
    document_id = add_file(ws.workspace, "router-handbook.md", text.encode(), uploaded_by=ws.owner)
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed", document.error_message
    assert document.stage == "done" and document.stage_progress == 100
    assert document.content_type == "md" and document.chunk_count > 3
    assert document.embedding_model and document.indexed_at and document.attempts == 1
    assert "Router handbook" in document.title and "Section 1" in document.text_preview
    rows = chunk_rows(ws.workspace, document_id)
    assert [ordinal for ordinal, _ in rows] == list(range(document.chunk_count))
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == document.chunk_count
    with workspace_schema(ws.workspace):
        hits = selectors.chunk_fulltext_search(query=marker, limit=100)
        assert hits and {hit.document_id for hit in hits} == {document_id}
        assert all(marker in hit.text.lower() for hit in hits)
        # Title and headings are indexed with weight A: a heading word finds the chunks under it.
        heading_hits = selectors.chunk_fulltext_search(query="handbook", limit=5)
        assert heading_hits and heading_hits[0].document_id == document_id
        dense = selectors.chunk_vector_search(query="How long do I cook pasta?", limit=5)
        assert dense and dense[0].document_id == document_id
        assert "spaghetti" in dense[0].text and dense[0].heading_path.endswith("Staff kitchen")


def test_progress_of_every_stage_is_pushed_live_over_the_websocket(ws, celery_worker, live_server):
    text = manual_text(title="Live progress", sections=12, paragraphs=8, seed=2)
    with live_server.ws_connect(ws.host, "/ws/workspace/events/",
                                additional_headers={"Cookie": session_cookie(ws.owner)}) as socket_:
        document_id = add_file(ws.workspace, "live.md", text.encode())
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            frame = json.loads(socket_.recv(timeout=60))
            if frame.get("document_id") != document_id:
                continue
            seen.append(frame)
            if frame["status"] in ("indexed", "failed"):
                break
    assert seen and seen[0]["type"] == "document.created" and seen[-1]["status"] == "indexed"
    stages = [frame["stage"] for frame in seen]
    # Progress is pushed at most twice a second, so a fast stage may pass between two events; these never do.
    for stage in ("parse", "embed", "done"):
        assert stage in stages, stages
    assert [frame["status"] for frame in seen[1:-1]] == ["processing"] * (len(seen) - 2)
    progress = [frame["progress"] for frame in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert seen[-1]["chunk_count"] == document_of(ws.workspace, document_id).chunk_count


def test_reindex_and_new_version_replace_chunks_and_vectors_without_duplicates(ws, celery_worker):
    first = manual_text(title="Warranty policy", sections=2, paragraphs=4, marker="oldmarkerword", seed=3)
    document_id = add_file(ws.workspace, "warranty.md", first.encode())
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed"
    count = document.chunk_count
    with workspace_schema(ws.workspace):
        services.document_reindex(document=document)
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed" and document.chunk_count == count and document.version == 1
    assert len(chunk_rows(ws.workspace, document_id)) == count
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == count

    second = manual_text(title="Warranty policy", sections=1, paragraphs=3, marker="newmarkerword", seed=4)
    with workspace_schema(ws.workspace):
        services.document_new_version(document=document, uploaded_file=ContentFile(second.encode(), name="w2.md"))
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed" and document.version == 2 and document.original_name == "w2.md"
    rows = chunk_rows(ws.workspace, document_id)
    assert len(rows) == document.chunk_count < count
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == document.chunk_count
    with workspace_schema(ws.workspace):
        assert selectors.chunk_fulltext_search(query="oldmarkerword") == []
        assert selectors.chunk_fulltext_search(query="newmarkerword")


def test_delete_removes_chunks_vectors_and_file(ws, celery_worker):
    document_id = add_file(ws.workspace, "to-delete.txt", manual_text(title="Doomed", sections=1, paragraphs=3,
                                                                      seed=5).encode())
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed" and default_storage.exists(document.file)
    with workspace_schema(ws.workspace):
        services.document_delete(document=document)
        assert not Document.objects.filter(pk=document_id).exists()
    assert chunk_rows(ws.workspace, document_id) == []
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == 0
    assert not default_storage.exists(document.file)


def test_large_documents_go_to_their_own_queue(ws, celery_worker, settings):
    settings.DOCUMENT_LARGE_BYTES = 4_000
    small = add_file(ws.workspace, "small.md", manual_text(title="Small", sections=1, paragraphs=1, seed=12).encode())
    large = add_file(ws.workspace, "large.md", manual_text(title="Large", sections=3, paragraphs=4, seed=13).encode())
    assert document_of(ws.workspace, small).queue == "ingest"
    assert document_of(ws.workspace, large).queue == "ingest_large"
    # Each run records the queue its message was delivered from.
    large_doc, small_doc = wait_settled(ws.workspace, large), wait_settled(ws.workspace, small)
    assert large_doc.status == small_doc.status == "indexed"
    assert large_doc.queue == "ingest_large" and small_doc.queue == "ingest"


def test_a_newer_run_supersedes_one_in_progress(ws, celery_worker):
    old = manual_text(title="Superseded manual", sections=12, paragraphs=10, marker="oldrunword", seed=14)
    document_id = add_file(ws.workspace, "superseded.md", old.encode())
    deadline = time.monotonic() + 120
    while document_of(ws.workspace, document_id).stage not in ("embed", "index", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    new = manual_text(title="Superseded manual", sections=2, paragraphs=2, marker="newrunword", seed=15)
    with workspace_schema(ws.workspace):
        services.document_new_version(document=Document.objects.get(pk=document_id),
                                      uploaded_file=ContentFile(new.encode(), name="superseded-v2.md"))
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed" and document.version == 2
    rows = chunk_rows(ws.workspace, document_id)
    assert len(rows) == document.chunk_count and all("oldrunword" not in text.lower() for _, text in rows)
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == document.chunk_count
    with workspace_schema(ws.workspace):
        assert selectors.chunk_fulltext_search(query="oldrunword") == []
        assert {hit.document_id for hit in selectors.chunk_fulltext_search(query="newrunword")} == {document_id}


# --- bad input that passes the upload checks and fails in the worker -------------------------------------------


def _deep_html(depth: int) -> bytes:
    return (b"<html><body>" + b"<div>" * depth + b"deep text" + b"</div>" * depth + b"</body></html>")


@pytest.mark.parametrize("name, data, code", [
    ("corrupt.pdf", (FIXTURES / "corrupt.pdf").read_bytes(), "corrupt_file"),
    ("encrypted.pdf", (FIXTURES / "encrypted.pdf").read_bytes(), "encrypted_file"),
    ("bomb.docx", (FIXTURES / "bomb.docx").read_bytes(), "file_too_complex"),
    ("deep.html", _deep_html(50_000), "file_too_complex"),
    ("huge.html", b"<html><body>" + b"<p>filler paragraph text</p>" * 500_000 + b"</body></html>", "file_too_complex"),
    ("scanned.pdf", (FIXTURES / "scanned.pdf").read_bytes(), "empty_document"),
])
def test_hostile_files_fail_at_once_with_their_code_and_the_worker_survives(ws, celery_worker, name, data, code):
    document_id = add_file(ws.workspace, name, data)
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.error_code == code, (document.error_code, document.error_message)
    assert document.attempts == 1, "a permanent failure is not retried"
    assert document.error_message and chunk_rows(ws.workspace, document_id) == []
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == 0
    with workspace_schema(ws.workspace):
        assert document_id in [d.pk for d in selectors.document_failed_list()]
    assert worker_alive(celery_worker), celery_worker.log_tail()
    # Nothing else is affected: the next document goes through.
    ok = add_file(ws.workspace, f"after-{name}.txt", f"Still working after {name} {secrets.token_hex(4)}.".encode())
    assert wait_settled(ws.workspace, ok).status == "indexed"


def test_failed_document_retried_from_the_failed_jobs_list_gets_a_fresh_run(ws, celery_worker):
    document_id = add_file(ws.workspace, "still-corrupt.pdf", (FIXTURES / "corrupt.pdf").read_bytes()[:-7] + b"%%junk")
    assert wait_settled(ws.workspace, document_id).status == "failed"
    with workspace_schema(ws.workspace):
        document = services.document_retry(document=Document.objects.get(pk=document_id))
        assert document.status == "queued" and document.error_code == "" and document.attempts == 0
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.attempts == 1 and document.error_code == "corrupt_file"


# --- URLs -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/admin", "http://10.1.2.3/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
    "http://localhost/", "http://0x7f000001/",
])
def test_url_to_a_private_address_is_refused_by_the_worker_too(ws, celery_worker, url, settings):
    # The request-time check is off here (as if DNS had answered differently then): the fetch checks again.
    settings.URL_IMPORT_ALLOW_PRIVATE = True
    with workspace_schema(ws.workspace):
        document_id = services.document_import_url(url=url).pk
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.error_code == "url_forbidden", document.error_message
    assert document.attempts == 1 and document.file == ""


class _Site:
    """A real HTTP server on loopback: a page, a never-ending body, and a port that accepts but never answers."""

    def __init__(self) -> None:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/page"):
                    body = (f"<html><head><title>Shipping FAQ</title></head><body><nav>menu menu</nav><h1>Shipping</h1>"
                            f"<p>Parcels ship within two days {site.marker}.</p><script>x()</script></body></html>")
                    data = body.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path.startswith("/endless"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    block = b"gigabytes " * 6554
                    try:
                        while not site.stop.is_set():
                            self.wfile.write(block)
                    except OSError:
                        pass
                    return
                self.send_error(404)

        self.marker = word_marker("zz")
        self.stop = threading.Event()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(64)  # the kernel completes connections; nobody ever reads or answers

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    @property
    def silent_url(self) -> str:
        return f"http://127.0.0.1:{self.silent.getsockname()[1]}/never"

    def close(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.silent.close()


@pytest.fixture(scope="module")
def url_worker(django_db_blocker) -> Iterator[tuple[ManagedProcess, str]]:
    """A worker that may fetch from loopback (like a test site), gives up fast, and retries once."""
    queue = f"ingest_url_{secrets.token_hex(3)}"
    with django_db_blocker.unblock(), dedicated_worker(
        "url-worker", queue, URL_IMPORT_ALLOW_PRIVATE="true", DOCUMENT_URL_TIMEOUT="2", DOCUMENT_RETRY_MAX="1",
        DOCUMENT_RETRY_BACKOFF_MAX="4", DOCUMENT_MAX_BYTES=str(2 * 1024 * 1024),
    ) as worker:
        yield worker, queue


@pytest.fixture(scope="module")
def site() -> Iterator[_Site]:
    server = _Site()
    yield server
    server.close()


def test_url_import_fetches_the_page_and_indexes_its_main_content(ws, url_worker, site, settings):
    settings.DOCUMENT_QUEUE, settings.URL_IMPORT_ALLOW_PRIVATE = url_worker[1], True
    with workspace_schema(ws.workspace):
        document_id = services.document_import_url(url=site.url("/page")).pk
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "indexed", document.error_message
    assert document.title == "Shipping FAQ" and document.content_type == "html" and document.sha256
    texts = " ".join(text for _, text in chunk_rows(ws.workspace, document_id))
    assert site.marker in texts and "x()" not in texts


def test_url_that_returns_gigabytes_stops_at_the_cap(ws, url_worker, site, settings):
    settings.DOCUMENT_QUEUE, settings.URL_IMPORT_ALLOW_PRIVATE = url_worker[1], True
    with workspace_schema(ws.workspace):
        document_id = services.document_import_url(url=site.url("/endless")).pk
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.error_code == "url_too_large", document.error_message
    assert worker_alive(url_worker[0])


def test_url_that_never_answers_retries_with_backoff_then_lands_in_failed_jobs(ws, url_worker, site, settings):
    settings.DOCUMENT_QUEUE, settings.URL_IMPORT_ALLOW_PRIVATE = url_worker[1], True
    with workspace_schema(ws.workspace):
        document_id = services.document_import_url(url=site.silent_url).pk
    retrying = wait_settled(ws.workspace, document_id, until=("retrying", "failed"))
    assert retrying.status == "retrying", "the first timeout schedules a retry"
    assert retrying.error_code == "url_timeout" and retrying.next_retry_at is not None
    assert retrying.next_retry_at > retrying.last_error_at
    with workspace_schema(ws.workspace):
        assert "Trying again" in selectors.document_state_note(retrying)
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.error_code == "url_timeout"
    assert document.attempts == 2 and document.error_message.startswith("Gave up after 2 attempts")
    with workspace_schema(ws.workspace):
        assert document_id in [d.pk for d in selectors.document_failed_list()]
    assert worker_alive(url_worker[0])


# --- a worker killed in the middle of embedding ------------------------------------------------------------------


def test_worker_killed_while_embedding_leaves_the_document_indexed_exactly_once(ws, settings, django_db_blocker):
    queue = f"ingest_kill_{secrets.token_hex(3)}"
    settings.DOCUMENT_QUEUE = queue
    visibility = 4
    env = {"CELERY_VISIBILITY_TIMEOUT": str(visibility), "EMBEDDING_BATCH_SIZE": "8"}
    marker = word_marker("kq")
    text = manual_text(title="Big manual", sections=20, paragraphs=12, marker=marker, seed=7)
    with dedicated_worker("doomed", queue, **env) as doomed:
        document_id = add_file(ws.workspace, "big-manual.md", text.encode())
        deadline = time.monotonic() + 120
        while True:
            document = document_of(ws.workspace, document_id)
            if document.stage == "embed" and document.stage_progress >= 5:
                break
            assert document.status not in ("indexed", "failed"), "finished before we could kill it"
            assert time.monotonic() < deadline, f"never reached embedding: {document.stage}"
            time.sleep(0.05)
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        doomed.proc.wait(timeout=10)
        killed_at = time.monotonic()
    document = document_of(ws.workspace, document_id)
    assert document.status == "processing" and document.stage == "embed" and document.attempts == 1
    assert chunk_rows(ws.workspace, document_id) == []
    # The message was never acknowledged; once older than the visibility timeout, a worker takes it again.
    time.sleep(max(0.0, visibility + 1 - (time.monotonic() - killed_at)))
    with dedicated_worker("rescuer", queue, **env):
        document = wait_settled(ws.workspace, document_id, timeout=240)
    assert document.status == "indexed", document.error_message
    assert document.attempts == 2
    rows = chunk_rows(ws.workspace, document_id)
    assert len(rows) == document.chunk_count > 50
    assert [ordinal for ordinal, _ in rows] == list(range(document.chunk_count))
    assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document_id) == document.chunk_count
    with workspace_schema(ws.workspace):
        hits = selectors.chunk_fulltext_search(query=marker, limit=1000)
    assert {hit.document_id for hit in hits} == {document_id}
    assert sorted(hit.ordinal for hit in hits) == [ordinal for ordinal, text in rows if marker in text.lower()]


# --- isolation -------------------------------------------------------------------------------------------------------


def _search_everything(workspace: Any, query: str) -> tuple[set[int], set[int], list[str]]:
    from documents.embedding import embedder

    with workspace_schema(workspace):
        fulltext = selectors.chunk_fulltext_search(query=query, limit=1000)
        dense = selectors.chunk_vector_search(query=query, limit=50)
        raw = vectors_query(schema_name=workspace.schema_name, embedding=embedder().embed([query])[0], limit=50)
    texts = [hit.text for hit in fulltext + dense]
    return {hit.document_id for hit in fulltext + dense}, {hit.document_id for hit in raw}, texts


def test_search_in_one_workspace_never_returns_anothers_chunks_even_after_delete_and_reupload(ws, celery_worker):
    a, b = ws.workspace, workspace_with_owner(name="Bravo Isolation").workspace
    secret = word_marker("bravosecret")
    b_text = manual_text(title="Bravo internal pricing", sections=2, paragraphs=3, marker=secret, seed=8)
    b_first = add_file(b, "pricing.md", b_text.encode())
    a_doc = add_file(a, "alpha-pricing.md", manual_text(title="Alpha pricing", sections=2, paragraphs=3,
                                                        seed=9).encode())
    assert wait_settled(b, b_first).status == "indexed" and wait_settled(a, a_doc).status == "indexed"
    with workspace_schema(a):
        a_ids = set(Document.objects.values_list("id", flat=True))

    def assert_a_sees_nothing_of_b() -> None:
        # The same words, typed in A: only A's documents, and never B's text, by every path.
        for query in (secret, b_text.split("\n")[4][:200], "Bravo internal pricing"):
            ids, raw_ids, texts = _search_everything(a, query)
            assert ids <= a_ids and raw_ids <= a_ids, query
            assert not any(secret in text.lower() for text in texts)

    assert_a_sees_nothing_of_b()
    ids, raw_ids, texts = _search_everything(b, secret)
    assert b_first in ids and any(secret in text.lower() for text in texts), "B does find its own chunks"

    with workspace_schema(b):
        services.document_delete(document=Document.objects.get(pk=b_first))
    assert vectors_count(schema_name=b.schema_name, document_id=b_first) == 0
    ids, raw_ids, _texts = _search_everything(b, secret)
    assert b_first not in ids and b_first not in raw_ids
    b_second = add_file(b, "pricing-again.md", b_text.encode())
    assert b_second != b_first and wait_settled(b, b_second).status == "indexed"
    assert_a_sees_nothing_of_b()
    ids, _raw_ids, _texts = _search_everything(b, secret)
    assert ids == {b_second}
