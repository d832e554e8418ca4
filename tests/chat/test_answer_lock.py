"""The conversation's answer lock (a Redis key plus a PostgreSQL advisory lock on the answering thread's connection)
never outlives an attempt that failed to take it. Real Redis, real PostgreSQL: the thread's connection is cut with
pg_terminate_backend, as the fault suite does to the server."""
from __future__ import annotations

import psycopg
import pytest
from django.db import DatabaseError, connection
from django_tenants.utils import tenant_context

from chat.events import answer_locks_release_all, sync_client
from chat.services import conversation_log
from tests.chat.test_protocol import conversation_new
from tests.factories import workspace_with_owner


def _terminate(pid: int) -> None:
    params = connection.settings_dict
    with psycopg.connect(dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"] or None,
                         host=params["HOST"] or None, port=params["PORT"] or None, autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_a_cut_connection_while_taking_the_lock_leaves_no_lock_behind(django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Lock Co")
        conversation = conversation_new(ws.workspace)
        with tenant_context(ws.workspace):
            log = conversation_log(conversation)
            connection.ensure_connection()
            _terminate(connection.connection.info.backend_pid)
            with pytest.raises(DatabaseError):
                log.lock_acquire(ttl=60)
            # Without the fix the Redis key stayed for the whole TTL: a retry of the message found the lock taken,
            # was acknowledged, and waited for an answer nobody was writing.
            assert not sync_client().exists(log.lock_key)
            connection.close()  # the next use reconnects, as the next hop's health check does
            token = log.lock_acquire(ttl=60)
            assert token is not None
            log.lock_release(token)
            assert not sync_client().exists(log.lock_key)
            answer_locks_release_all()
