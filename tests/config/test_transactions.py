"""PostgreSQL transactions: deadlock recovery, on real PostgreSQL.

PostgreSQL breaks a deadlock by aborting one transaction of the cycle. We check that the victim's work is run again
where our services can (`config.db.atomic_with_retry`), that what still fails reaches the client as a 503 with
reason `transaction_conflict` and nothing half-done, and that a request caught in a real deadlock over HTTP ends as
if there had been none. The other side of each cycle is a raw connection taking the same rows in the opposite order,
with a long deadlock_timeout so that PostgreSQL picks our side as the victim: the point is our recovery."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from django_tenants.utils import schema_context, tenant_context

from accounts.services import api_key_create
from config.db import atomic_with_retry, is_transaction_conflict
from config.errors import to_application_error
from documents import services
from documents.models import Chunk, Document
from tests.factories import workspace_with_owner


def _raw_connection() -> psycopg.Connection:
    params = connection.settings_dict
    raw = psycopg.connect(dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"] or None,
                          host=params["HOST"] or None, port=params["PORT"] or None, autocommit=True)
    raw.execute("SET deadlock_timeout = '10s'")  # PostgreSQL aborts the other side, not this one
    return raw


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _wait_for_lock_waiter(probe: psycopg.Connection, *, query_like: str = "%", pid: int | None = None,
                          timeout: float = 20) -> None:
    """Until a session (`pid`, or any whose query is like `query_like`; PostgreSQL keeps only the first 1 kB of a
    query's text) waits on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND query ILIKE %s AND pid = coalesce(%s, pid) AND pid <> pg_backend_pid()",
                                (query_like, pid)).fetchone()[0]
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError(f"no session ({pid or query_like!r}) waited on a lock")


@pytest.fixture
def documents_pair(django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Deadlock Co")
        with tenant_context(ws.workspace):
            first = services.document_create_text(title="First", text="The first text of the deadlock test.")
            second = services.document_create_text(title="Second", text="The second text of the deadlock test.")
    return ws, first.pk, second.pk


def _in_a_deadlock(schema: str, first: int, second: int, run: Callable[[Callable[[], None]], None]) -> list[str]:
    """Our side (this thread, Django's connection) locks `first` then `second`; the raw side locks `second`, waits
    until our side waits for it, then locks `first`: a cycle. `run` runs our side's work (plainly or with retries)."""
    raw, probe = _raw_connection(), _raw_connection()
    table = f'"{schema}".documents_document'
    ours_has_first = threading.Event()
    log: list[str] = []
    ours: dict[str, int] = {}

    def raw_side() -> None:
        ours_has_first.wait(20)
        with raw.transaction():
            raw.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", (second,))
            log.append("raw locked second")
            _wait_for_lock_waiter(probe, pid=ours["pid"])
            raw.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", (first,))
            log.append("raw locked first")
            time.sleep(0.2)
        log.append("raw committed")

    def our_work() -> None:
        log.append("ours started")
        list(Document.objects.select_for_update().filter(pk=first))
        ours["pid"] = connection.connection.info.backend_pid
        ours_has_first.set()
        deadline = time.monotonic() + 20
        while "raw locked second" not in log:
            assert time.monotonic() < deadline, "the raw side never locked its row"
            time.sleep(0.01)
        list(Document.objects.select_for_update().filter(pk=second))
        Document.objects.filter(pk__in=[first, second]).update(title="Both locked")
        log.append("ours locked both")

    thread = threading.Thread(target=raw_side)
    thread.start()
    try:
        with schema_context(schema):
            run(our_work)
    finally:
        thread.join(30)
        raw.close()
        probe.close()
    return log


def test_a_deadlock_victim_gets_a_503_transaction_conflict_and_keeps_nothing(documents_pair, django_db_blocker):
    ws, first, second = documents_pair
    schema = ws.workspace.schema_name
    with django_db_blocker.unblock():
        before = _deadlocks()

        def once(work: Callable[[], None]) -> None:
            with transaction.atomic():
                work()

        with pytest.raises(OperationalError) as caught:
            _in_a_deadlock(schema, first, second, once)
        assert is_transaction_conflict(caught.value)
        error = to_application_error(caught.value)
        assert error is not None and error.status_code == 503
        assert error.as_dict()["error"]["details"] == {"reason": "transaction_conflict"}
        assert error.retry_after == 1
        with schema_context(schema):
            assert set(Document.objects.filter(pk__in=[first, second]).values_list("title", flat=True)) == \
                {"First", "Second"}  # the victim's update was rolled back
        assert _deadlocks() >= before + 1


def test_atomic_with_retry_runs_the_victim_again_and_it_succeeds(documents_pair, django_db_blocker):
    ws, first, second = documents_pair
    schema = ws.workspace.schema_name
    with django_db_blocker.unblock():
        before = _deadlocks()
        log = _in_a_deadlock(schema, first, second, atomic_with_retry)
        assert log.count("ours started") == 2, log  # aborted once, run again
        assert log[-1] == "ours locked both" and "raw committed" in log
        with schema_context(schema):
            assert set(Document.objects.filter(pk__in=[first, second]).values_list("title", flat=True)) == \
                {"Both locked"}
        assert _deadlocks() >= before + 1


def test_other_database_errors_are_not_retried(django_db_blocker):
    calls = []

    def broken() -> None:
        calls.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM a_table_that_does_not_exist")

    with django_db_blocker.unblock(), pytest.raises(Exception) as caught:
        atomic_with_retry(broken)
    assert not is_transaction_conflict(caught.value)
    assert calls == [1]


def test_a_delete_caught_in_a_deadlock_over_http_is_run_again_and_succeeds(live_server, django_db_blocker):
    """DELETE /api/v1/documents/<id>/ locks the document row, then deletes its chunks; a raw session holding the
    chunks and then asking for the document closes the cycle. PostgreSQL aborts the request's transaction; the
    service runs it again and the client sees a plain 204."""
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Deadlock Http Co")
        _key, secret = api_key_create(workspace=ws.workspace, name="writer", scopes=["read", "write"])
        schema = ws.workspace.schema_name
        with tenant_context(ws.workspace):
            document = services.document_create_text(title="Contested", text="A document two sessions want.")
            Chunk.objects.create(document=document, ordinal=0, text="A document two sessions want.", token_count=6)
        before = _deadlocks()
    raw, probe = _raw_connection(), _raw_connection()
    responses: list = []
    try:
        with raw.transaction():
            raw.execute(f'SELECT id FROM "{schema}".documents_chunk WHERE document_id = %s FOR UPDATE',
                        (document.pk,))
            request = threading.Thread(target=lambda: responses.append(live_server.request(
                "DELETE", ws.host, f"/api/v1/documents/{document.pk}/",
                headers={"Authorization": f"Api-Key {secret}"}, timeout=60)))
            request.start()
            _wait_for_lock_waiter(probe, query_like="%DELETE%documents_chunk%")  # the request holds the document row
            # Closing the cycle: this waits until PostgreSQL aborts the request's transaction (after its 1 s
            # deadlock_timeout), which releases the document row.
            raw.execute(f'SELECT id FROM "{schema}".documents_document WHERE id = %s FOR UPDATE', (document.pk,))
            time.sleep(0.2)
        request.join(60)
    finally:
        raw.close()
        probe.close()
    assert responses and responses[0].status_code == 204, responses and responses[0].text
    with django_db_blocker.unblock():
        with schema_context(schema):
            assert not Document.objects.filter(pk=document.pk).exists()
            assert not Chunk.objects.filter(document_id=document.pk).exists()
        assert _deadlocks() >= before + 1
