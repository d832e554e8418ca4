"""The plumbing's own diagnostic task: is a worker consuming, and does workspace work run in the workspace's schema?

`config.ping_schema` is a WorkspaceTask: sent from inside a workspace's schema it reports where it ran -- Django's
schema and PostgreSQL's own `current_schema()`, i.e. where an unqualified read or write would land -- into the cache,
whose keys carry the schema (config/cache.py). So a report is only found from inside the schema it ran in, and no
result backend is needed. Sent from the public schema it refuses to run (wrong_schema).

Operators: `python manage.py shell -c "from config.tasks import worker_ping; print(worker_ping(slug='acme'))"`
prints the report, or None if no worker answered in time.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from celery import shared_task
from django.core.cache import cache
from django.db import connection

from config.celery import WorkspaceTask
from config.errors import ErrorCode, NotFound

PING_REPORT_TTL_SECONDS = 600


def ping_report_key(token: str) -> str:
    return f"worker-ping:{token}"


def schema_report() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (database_schema,) = cursor.fetchone()
    return {"schema": connection.schema_name, "database_schema": database_schema}


@shared_task(name="config.ping_schema", base=WorkspaceTask, bind=True, ignore_result=True)
def ping_schema(self: WorkspaceTask, token: str) -> dict[str, Any]:
    report = {**schema_report(), "token": token, "worker": self.request.hostname or "", "at": time.time()}
    cache.set(ping_report_key(token), report, PING_REPORT_TTL_SECONDS)
    return report


def ping_report(*, token: str) -> dict[str, Any] | None:
    """The report of ping `token`, as seen from the current schema."""
    return cache.get(ping_report_key(token))


def worker_ping(*, slug: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """Send a ping from inside workspace `slug` and wait for a worker's report; None if none came within `timeout`."""
    from django_tenants.utils import schema_context

    from tenants.selectors import workspace_get

    workspace = workspace_get(slug=slug)
    if workspace is None:
        raise NotFound(f"There is no workspace {slug!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
    token = secrets.token_hex(8)
    with schema_context(workspace.schema_name):
        ping_schema.delay(token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = ping_report(token=token)
            if report is not None:
                return report
            time.sleep(0.1)
    return None
