"""PostgreSQL cuts the connections of our processes (pg_terminate_backend: what a failover, a restart or a proxy
timeout does to them) while HTTP requests, a chat answer and an ingestion task are in flight.

Only the connections of this run's own test database with the application_name of the private ASGI server or worker
are cut (tests/faults/conftest.py), never another database's and never this test process's.

What must hold: no request hangs; one in flight gets its answer or a 503 `service_unavailable` in the error shape
(never a bare 500); the next requests succeed; a chat socket still gets its answer or a clear error frame, and its
retry (same client_id) is answered once — the answer threads keep their connections between hops, so a dead one must
be noticed and replaced; and a Celery task whose connection is cut retries and indexes its document exactly once.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
from django.db import connection as django_connection

from accounts.services import api_key_create
from chat.models import Message, MessageRole
from documents.models import Chunk
from tests.chat.test_protocol import QUESTION, ChatSocket, conversation_new, in_workspace, session_cookie
from tests.documents.test_pipeline import manual_text, word_marker
from tests.factories import workspace_with_owner
from tests.faults.conftest import (
    ASGI_APPLICATION_NAME, WORKER_APPLICATION_NAME, Blockers, backends_count, backends_terminate, quoted,
    server_waits_on,
)
from tests.faults.test_redis_restart_chat import WARRANTY_QUESTION, outcome_of
from tests.faults.test_redis_restart_ingestion import assert_indexed_exactly_once, document, wait_status

REQUEST_TIMEOUT = 20  # a request that takes longer than this counts as hung


def hammer(server, host: str, path: str, cookie: str, stop: threading.Event, results: list[tuple[Any, ...]]) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = session.get(f"http://127.0.0.1:{server.port}{path}", timeout=REQUEST_TIMEOUT,
                                   headers={"Host": f"{host}:{server.port}", "Cookie": cookie})
            results.append((response.status_code, time.monotonic() - started, response.text[:500]))
        except requests.RequestException as exc:
            results.append(("exception", time.monotonic() - started, repr(exc)))


def ask_until_answered(tab: ChatSocket, text: str, client_id: str, timeout: float) -> tuple[dict[str, Any], list[str]]:
    """Send (and re-send, same client_id) until the answer completes; refusals must be clear errors. Returns the
    completed event and the codes of the refusals on the way."""
    deadline = time.monotonic() + timeout
    refusals: list[str] = []
    while True:
        tab.ask(text, client_id=client_id)
        frames = tab.until(lambda f: f["type"] in ("agent_completed", "error"), timeout=timeout)
        if frames[-1]["type"] == "agent_completed":
            return frames[-1], refusals
        assert frames[-1]["code"] in ("service_unavailable", "answer_failed", "rate_limited"), frames[-1]
        refusals.append(frames[-1]["code"])
        assert time.monotonic() < deadline, f"still refused after {timeout} s: {frames[-1]}"
        time.sleep(1.0)


def test_requests_and_chat_survive_cut_database_connections(private_stack, knowledge):
    stack, workspace = private_stack, knowledge
    cookie = session_cookie(workspace.owner)
    conversation = conversation_new(workspace.workspace)
    path = f"/api/v1/conversations/{conversation.public_id}/"
    with ChatSocket(stack.server, workspace.host, conversation.public_id, cookie) as tab:
        # One answer first: the socket's worker threads now hold PostgreSQL connections of their own.
        assert tab.answer(QUESTION)[-1]["type"] == "agent_completed"
        assert backends_count(ASGI_APPLICATION_NAME) >= 1

        stop, results = threading.Event(), []
        threads = [threading.Thread(target=hammer, args=(stack.server, workspace.host, path, cookie, stop, results))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        in_flight_id = "c-pg-inflight"
        tab.ask(WARRANTY_QUESTION, client_id=in_flight_id)
        cut = 0
        for _ in range(10):
            time.sleep(0.3)
            cut += backends_terminate(ASGI_APPLICATION_NAME)
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)
        assert not any(thread.is_alive() for thread in threads), "a request hung"
        ended = outcome_of(tab, 30)  # the in-flight question: its answer, or a clear error — never silence

        assert cut > 0, "no connection of the server was cut: the test did not test anything"
        assert results and all(status != "exception" for status, _, _ in results), \
            [r for r in results if r[0] == "exception"][:3]
        assert not [r for r in results if r[1] >= REQUEST_TIMEOUT], "a request hung (liveness bound, not speed)"
        assert {status for status, _, _ in results} <= {200, 503}, [r for r in results if r[0] not in (200, 503)][:3]
        for status, _, body in results:
            if status == 503:
                assert '"code": "service_unavailable"' in body or '"code":"service_unavailable"' in body, body
        assert sum(1 for status, _, _ in results if status == 200) > 0

        # Cut once more, with every thread of the socket idle for less than the 30 s after which it would check its
        # connection anyway: the socket must still get answers (the dead connection is noticed and replaced).
        # First let the work of the in-flight answer settle (seq records, on-commit receivers): on a loaded machine it
        # can trail the answer by a moment, and a cut in the middle of it is the case above, not this one.
        time.sleep(3)
        backends_terminate(ASGI_APPLICATION_NAME)
        if ended["type"] == "agent_completed":
            final, refusals = ask_until_answered(tab, "Where is the reset button of the X200?", "c-pg-after", 30)
        else:
            assert ended["type"] == "error" and ended["code"] in ("service_unavailable", "answer_failed"), ended
            final, refusals = ask_until_answered(tab, WARRANTY_QUESTION, in_flight_id, 30)
        assert final["message"]["answered"] is True
        # The socket's per-connection question rate may refuse a quick re-ask (rate_limited, unrelated to the cut);
        # a refusal because of the cut connection would be service_unavailable / answer_failed.
        assert [code for code in refusals if code != "rate_limited"] == [], \
            f"the threads' cut connections are checked and replaced before use, not failed on: {refusals}"

    # The next requests all succeed.
    for _ in range(10):
        response = stack.server.request("GET", workspace.host, path, headers={"Cookie": cookie}, timeout=10)
        assert response.status_code == 200, response.text
    # Every acknowledged question is stored once, and each is answered once.
    stored = in_workspace(workspace.workspace, lambda: list(
        Message.objects.filter(conversation=conversation).order_by("id")))
    questions = [m for m in stored if m.role == MessageRole.CUSTOMER]
    answers = [m for m in stored if m.role == MessageRole.ASSISTANT]
    assert len({q.client_message_id for q in questions}) == len(questions)
    assert sorted(a.reply_to_id for a in answers) == sorted(q.pk for q in questions)

    # A new socket opens and is answered.
    fresh = conversation_new(workspace.workspace)
    with ChatSocket(stack.server, workspace.host, fresh.public_id, cookie) as tab:
        assert tab.answer(QUESTION)[-1]["type"] == "agent_completed"


@pytest.fixture(scope="module")
def writer(django_db_blocker):
    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Faults Postgres Ingestion")
        _key, raw = api_key_create(workspace=workspace.workspace, name="faults-pg", scopes=["read", "write"])
        return workspace, raw


def test_a_worker_whose_connection_is_cut_mid_task_retries_and_indexes_once(private_stack, writer):
    stack, (workspace, key) = private_stack, writer
    text = manual_text(title="Cut manual", sections=10, paragraphs=8, marker=word_marker("pgz"), seed=31)
    # Mid-task, exactly: the worker's run waits on the chunk table (a lock this test holds) while it processes the
    # document; polling for a stage instead missed a fast run on a quiet machine.
    blockers = Blockers(django_connection.settings_dict)
    try:
        blockers.hold(f"LOCK TABLE {quoted(workspace.workspace.schema_name, Chunk)} IN ACCESS EXCLUSIVE MODE")
        response = stack.server.request(
            "POST", workspace.host, "/api/v1/documents/text/", json={"title": "Cut manual", "text": text,
                                                                     "format": "markdown"},
            headers={"Authorization": f"Api-Key {key}"}, timeout=30)
        assert response.status_code == 201, response.text
        document_id = response.json()["id"]
        server_waits_on(f"%{Chunk._meta.db_table}%", 60, application_name=WORKER_APPLICATION_NAME)
        assert document(workspace.workspace, document_id).status == "processing"
        cut = backends_terminate(WORKER_APPLICATION_NAME)
    finally:
        blockers.close()
    assert cut >= 1, "the worker had no connection to cut"
    settled = wait_status(workspace.workspace, document_id, ("indexed", "failed"), 120)
    assert settled.status == "indexed", (settled.error_code, settled.error_message)
    assert_indexed_exactly_once(workspace.workspace, document_id)
    log = stack.worker_log_text()
    assert f"transient failure ingesting document {document_id}" in log
    assert settled.attempts == 2, settled.attempts  # the cut attempt, and its retry
    # The worker's next task gets a fresh connection.
    again = stack.server.request(
        "POST", workspace.host, "/api/v1/documents/text/",
        json={"title": "After the cut", "text": "## Warranty\n\nTwo years on every part.\n", "format": "markdown"},
        headers={"Authorization": f"Api-Key {key}"}, timeout=30)
    assert again.status_code == 201, again.text
    wait_status(workspace.workspace, again.json()["id"], ("indexed",), 60)
    assert_indexed_exactly_once(workspace.workspace, again.json()["id"])
