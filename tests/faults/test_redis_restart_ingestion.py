"""Redis restarted (and emptied) while documents are being ingested: the private Redis is the broker of a private
Celery worker (with its beat) and of the private ASGI server that takes the uploads.

Redis keeps nothing on disk here, so a restart loses every message it held: the jobs waiting in the queue and the
"unacknowledged" copies of the jobs being run. What must hold: a document being processed at that moment ends
indexed exactly once (or failed with a code that `failed_jobs --retry` recovers); a document whose queued job was lost
is sent again by the beat sweeper (documents.stalled_resend_all) once it has shown no sign of life for
DOCUMENT_STALLED_AFTER (6 s here); an upload while Redis is down fails with `queue_unavailable` and `failed_jobs
--retry` recovers it; and the worker reconnects by itself and processes new uploads.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import requests
from django.db import connection

from accounts.services import api_key_create
from documents.models import Chunk, Document
from documents.vectors import vectors_count
from tests.documents.test_pipeline import manual_text, word_marker, workspace_schema
from tests.factories import WorkspaceWithOwner, workspace_with_owner
from tests.faults.conftest import private_env
from tests.live import BASE_DIR, process_env

SETTLE_SECONDS = 120
HUNG_AFTER_SECONDS = 30  # liveness only: an upload with no answer by then is hung (speed is not tested here)


@pytest.fixture(scope="module")
def ws(django_db_blocker) -> tuple[WorkspaceWithOwner, str]:
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Faults Ingestion")
        _key, raw = api_key_create(workspace=workspace.workspace, name="faults", scopes=["read", "write"])
        return workspace, raw


def upload_text(stack, ws, *, title: str, text: str) -> Any:
    workspace, key = ws
    return stack.server.request(
        "POST", workspace.host, "/api/v1/documents/text/", json={"title": title, "text": text, "format": "markdown"},
        headers={"Authorization": f"Api-Key {key}"}, timeout=HUNG_AFTER_SECONDS,
    )


def document(workspace: Any, document_id: int) -> Document:
    with workspace_schema(workspace):
        return Document.objects.get(pk=document_id)


def wait_status(workspace: Any, document_id: int, statuses: tuple[str, ...], timeout: float,
                condition=lambda d: True) -> Document:
    deadline = time.monotonic() + timeout
    while True:
        found = document(workspace, document_id)
        if found.status in statuses and condition(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"document {document_id} is {found.status} at {found.stage} "
                                 f"({found.stage_progress}%) after {timeout} s: {found.error_code} {found.error_message}")
        time.sleep(0.1)


def assert_indexed_exactly_once(workspace: Any, document_id: int) -> Document:
    found = document(workspace, document_id)
    assert found.status == "indexed", (found.error_code, found.error_message)
    with workspace_schema(workspace):
        ordinals = list(Chunk.objects.filter(document_id=document_id).order_by("ordinal")
                        .values_list("ordinal", flat=True))
    assert ordinals == list(range(found.chunk_count)) and found.chunk_count > 0
    assert vectors_count(schema_name=workspace.schema_name, document_id=document_id) == found.chunk_count
    return found


def failed_jobs_retry(stack, workspace: Any) -> dict[str, Any]:
    """The operator's command, as a process of its own on the private Redis (that is where it must queue)."""
    env = process_env(connection.settings_dict, **private_env(stack.redis))
    done = subprocess.run([sys.executable, "manage.py", "failed_jobs", "--workspace", workspace.slug, "--retry",
                           "--json"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def queue_length(stack, queue: str) -> int:
    return int(stack.redis.client(stack.redis.test_db).llen(queue))


def test_redis_restart_mid_pipeline_loses_no_document(private_stack, ws, redis_restored):
    stack, workspace = private_stack, ws[0].workspace
    # Two big manuals keep both worker processes busy (prefetch 1: nothing more is reserved), so the third job waits
    # in the Redis queue: a restart loses it as well as the unacknowledged copies of the two running ones.
    big = []
    for seed in (21, 22):
        marker = word_marker("fz")
        response = upload_text(stack, ws, title=f"Big manual {seed}", text=manual_text(
            title=f"Big manual {seed}", sections=12, paragraphs=8, marker=marker, seed=seed))
        assert response.status_code == 201, response.text
        big.append(response.json()["id"])
    for document_id in big:
        wait_status(workspace, document_id, ("processing",), 60, lambda d: d.stage in ("parse", "chunk", "embed"))
    # The sweeper measures "no sign of life" from the document's queued_at, which the upload sets: time it from
    # before the request (the restart comes ~0.5 s later, so timing from the restart would be too strict).
    before_upload = time.monotonic()
    waiting = upload_text(stack, ws, title="Small FAQ", text="## Opening hours\n\nWe are open from nine to five.\n")
    assert waiting.status_code == 201, waiting.text
    waiting_id = waiting.json()["id"]
    time.sleep(0.5)
    assert document(workspace, waiting_id).status == "queued" and queue_length(stack, "ingest") == 1
    running = [d for d in big if document(workspace, d).status == "processing"]
    assert running, "both manuals finished before the restart: nothing was mid-pipeline"

    stack.redis.stop(signal.SIGKILL)
    stack.redis.start()
    assert queue_length(stack, "ingest") == 0, "the restarted Redis is empty: the queued job is gone"

    # The running ones finish by themselves (their progress events are lost while Redis is away, not the work).
    for document_id in big:
        settled = wait_status(workspace, document_id, ("indexed", "failed"), SETTLE_SECONDS)
        if settled.status == "failed":  # allowed only with a clear code, and the operator's retry recovers it
            assert settled.error_code, settled.error_message
    if any(document(workspace, d).status == "failed" for d in big):
        result = failed_jobs_retry(stack, workspace)
        assert set(result["retried"]) >= {d for d in big if document(workspace, d).status != "indexed"}
        for document_id in big:
            wait_status(workspace, document_id, ("indexed",), SETTLE_SECONDS)
    for document_id in big:
        assert_indexed_exactly_once(workspace, document_id)

    # The lost queued job is sent again by the beat sweeper, after DOCUMENT_STALLED_AFTER without a sign of life.
    rescued = wait_status(workspace, waiting_id, ("indexed",), 60)
    assert time.monotonic() - before_upload >= 6  # DOCUMENT_STALLED_AFTER: not re-sent before it counted as lost
    assert "re-sent the job of stalled document" in stack.worker_log_text()
    assert_indexed_exactly_once(workspace, waiting_id)
    assert rescued.attempts == 1

    # And the worker, reconnected by itself, takes a new upload at once.
    fresh = upload_text(stack, ws, title="After the restart", text="## Returns\n\nReturns are free for 30 days.\n")
    assert fresh.status_code == 201, fresh.text
    wait_status(workspace, fresh.json()["id"], ("indexed",), 30)
    assert_indexed_exactly_once(workspace, fresh.json()["id"])


def test_an_upload_while_redis_is_down_fails_with_a_code_that_failed_jobs_recovers(private_stack, ws,
                                                                                   redis_restored):
    stack, workspace = private_stack, ws[0].workspace
    stack.redis.stop(signal.SIGKILL)
    try:
        response = upload_text(stack, ws, title="Written during the outage",
                               text="## Shipping\n\nParcels leave the warehouse every weekday at four.\n")
    except requests.Timeout:
        raise AssertionError(f"the upload hung on a dead broker ({HUNG_AFTER_SECONDS} s)") from None
    # The document is kept (the text is safe in PostgreSQL and storage) and says why it is not being processed.
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "failed" and body["error_code"] == "queue_unavailable", body
    document_id = body["id"]
    failed = document(workspace, document_id)
    assert failed.status == "failed" and failed.error_code == "queue_unavailable", failed.status
    stack.redis.start()
    result = failed_jobs_retry(stack, workspace)
    assert document_id in result["retried"]
    wait_status(workspace, document_id, ("indexed",), 60)
    assert_indexed_exactly_once(workspace, document_id)
