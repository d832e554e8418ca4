"""The ingestion retry policy and time limits, run for real.

- the retry delays grow with each attempt (the policy function the pipeline calls, and the `next_retry_at` the real
  worker writes across two real transient failures), up to DOCUMENT_RETRY_BACKOFF_MAX;
- every ingestion job carries its queue's soft/hard time limits (read from the messages in the real broker: the first
  send and the worker's retry), and the hard limit stays below the broker's visibility timeout;
- a job that passes a tiny soft limit (a private worker) ends `failed` with `time_limit` instead of hanging.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from documents import pipeline, services
from documents.models import Chunk
from tests.chat.test_protocol import in_workspace
from tests.documents.test_pipeline import (
    _Site, add_file, dedicated_worker, document_of, manual_text, wait_settled, word_marker, workspace_schema,
)
from tests.factories import workspace_with_owner

SAMPLES = 300  # draws per retry number: the jitter is random, the bounds are not


@pytest.fixture(scope="module")
def ws(django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Retry Policy Co")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def ingest_messages(broker: redis.Redis, raw: list[bytes]) -> list[dict[str, Any]]:
    """Kombu's Redis transport: a message is JSON with its headers; the unacked hash holds [message, exchange, key]."""
    found = []
    for item in raw:
        message = json.loads(item)
        message = message[0] if isinstance(message, list) else message
        if message.get("headers", {}).get("task") == "documents.ingest":
            found.append(message)
    return found


def is_job_of(message: dict[str, Any], document_id: int, schema_name: str) -> bool:
    """Document ids start at 1 in every workspace's schema: a job is named by its schema and its document id (a
    long-delayed retry another module's workspace left with the suite's worker can carry the same id)."""
    headers = message["headers"]
    return (headers.get("_schema_name") == schema_name
            and re.match(rf"[\[(]{document_id},", headers.get("argsrepr", "")) is not None)


# --- the policy --------------------------------------------------------------------------------------------------


def test_each_retry_waits_at_least_as_long_as_the_one_before_up_to_the_cap(settings):
    settings.DOCUMENT_RETRY_BACKOFF_MAX = 600
    draws = {retries: [pipeline.retry_countdown(retries) for _ in range(SAMPLES)] for retries in range(12)}
    uncapped = [r for r in draws if pipeline.RETRY_BACKOFF_FACTOR * 2 ** (r + 1) <= 600]
    assert len(uncapped) >= 5
    for retries in uncapped:
        # Exponential with half the delay fixed: the shortest wait of the next attempt is the longest of this one.
        assert min(draws[retries + 1]) >= max(draws[retries]), (retries, min(draws[retries + 1]), max(draws[retries]))
    assert all(300 <= delay <= 600 for delay in draws[11]), "past the cap the delay stays within [cap/2, cap]"
    assert len(set(draws[3])) > SAMPLES // 2, "the jitter spreads workers that failed together"


# --- the time limits on the messages ------------------------------------------------------------------------------


def test_the_first_send_carries_the_queues_soft_and_hard_limits(ws, broker, settings):
    queue = f"ingest_nobody_{secrets.token_hex(3)}"  # no worker consumes it: the message stays in the broker
    settings.DOCUMENT_TIME_LIMITS = {queue: (17, 23)}
    try:
        with workspace_schema(ws.workspace):
            services.pipeline_send(document_id=424242, run_token="t-limits", queue=queue)
        [message] = ingest_messages(broker, broker.lrange(queue, 0, -1))
    finally:
        broker.delete(queue)
    headers = message["headers"]
    assert headers["timelimit"] == [23, 17]  # Celery's order: [hard, soft]
    assert headers["_schema_name"] == ws.workspace.schema_name and is_job_of(message, 424242, ws.workspace.schema_name)


def test_the_default_hard_limits_stay_below_the_visibility_timeout():
    """A job running longer than the visibility timeout would be delivered again while it still runs."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    for queue in services.ingest_queues():
        soft, hard = services.queue_time_limits(queue)
        assert 0 < soft < hard < visibility, (queue, soft, hard, visibility)
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT < visibility


# --- two real transient failures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Iterator[_Site]:
    server = _Site()
    yield server
    server.close()


@pytest.mark.slow
def test_two_real_transient_failures_schedule_growing_delays_with_the_limits(ws, site, broker, settings,
                                                                            django_db_blocker):
    """A URL that never answers times out (transient) three times on a private worker: the second retry is scheduled
    at least as far out as the first, and the worker's retry messages carry its queue's time limits."""
    queue = f"ingest_backoff_{secrets.token_hex(3)}"
    settings.DOCUMENT_QUEUE, settings.URL_IMPORT_ALLOW_PRIVATE = queue, True
    limits = {queue: [41, 47]}
    settings.DOCUMENT_TIME_LIMITS = limits
    env = {"URL_IMPORT_ALLOW_PRIVATE": "true", "DOCUMENT_URL_TIMEOUT": "2", "DOCUMENT_RETRY_MAX": "2",
           "DOCUMENT_RETRY_BACKOFF_MAX": "600", "DOCUMENT_TIME_LIMITS": json.dumps(limits)}
    retries_seen: dict[int, Any] = {}  # attempts -> (delay in seconds, time limits on the pending retry message)
    with django_db_blocker.unblock(), dedicated_worker("backoff", queue, **env) as worker:
        with workspace_schema(ws.workspace):
            document_id = services.document_import_url(url=site.silent_url).pk
        deadline = time.monotonic() + 120
        while len(retries_seen) < 2:
            document = document_of(ws.workspace, document_id)
            if document.status == "retrying" and document.attempts not in retries_seen:
                pending = [m for m in ingest_messages(broker, broker.hvals("unacked"))
                           if is_job_of(m, document_id, ws.workspace.schema_name)]
                if pending:  # the worker holds the delayed retry unacknowledged until it runs it
                    retries_seen[document.attempts] = (
                        (document.next_retry_at - document.last_error_at).total_seconds(),
                        pending[-1]["headers"]["timelimit"], document.error_code)
            assert document.status != "failed" or len(retries_seen) == 2, (retries_seen, document.error_message)
            assert time.monotonic() < deadline, f"hung: retries seen {retries_seen}\n{worker.log_tail()}"
            time.sleep(0.05)
        final = wait_settled(ws.workspace, document_id, timeout=120)

    (first, first_limits, first_code), (second, second_limits, second_code) = retries_seen[1], retries_seen[2]
    assert first_code == second_code == "url_timeout"
    factor = pipeline.RETRY_BACKOFF_FACTOR
    assert factor / 2 <= first <= factor and factor <= second <= 2 * factor, (first, second)
    assert second >= first
    assert first_limits == second_limits == [47, 41]  # [hard, soft] of the worker's queue
    assert final.status == "failed" and final.error_code == "url_timeout" and final.attempts == 3


# --- a tiny soft limit ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_past_its_soft_limit_ends_failed_with_time_limit(ws, settings, django_db_blocker):
    queue = f"ingest_tiny_{secrets.token_hex(3)}"
    settings.DOCUMENT_QUEUE = settings.DOCUMENT_LARGE_QUEUE = queue
    settings.DOCUMENT_TIME_LIMITS = {queue: (1, 60)}  # applied by the sender: this process
    text = manual_text(title="Long manual", sections=20, paragraphs=12, marker=word_marker("tl"), seed=11)
    with django_db_blocker.unblock(), dedicated_worker("tiny-limit", queue, EMBEDDING_BATCH_SIZE="8") as worker:
        document_id = add_file(ws.workspace, "long-manual.md", text.encode())
        document = wait_settled(ws.workspace, document_id, timeout=120)
        assert worker.proc.poll() is None, worker.log_tail()
    assert document.status == "failed", (document.status, document.error_code, document.error_message)
    assert document.error_code == "time_limit", document.error_message
    assert document.attempts == 1
    # Whatever stage the limit cut (parse, chunk or embed: it depends on the machine's load), nothing of the failed
    # run is searchable: no chunk rows are kept for it. (`chunk_count` is the chunk stage's progress figure.)
    kept = in_workspace(ws.workspace, lambda: Chunk.objects.filter(document_id=document_id).count())
    assert kept == 0, f"{kept} chunks of a failed run are kept"
