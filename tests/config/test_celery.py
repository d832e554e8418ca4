"""Workspace tasks on the real Celery worker: they carry the schema they were sent from and run in it; sent from the
public schema, they refuse to run. The app has no result backend: effects are read from the schema-keyed cache
(Redis) and the worker's log."""
from __future__ import annotations

import re
import secrets
import time
from typing import Any

from django.db import connection
from django_tenants.utils import schema_context

from config.tasks import ping_report, ping_schema, worker_ping

REPORT_TIMEOUT = 30


def reports_by_schema(token: str, schemas: list[str]) -> dict[str, dict[str, Any] | None]:
    """Ping `token`'s report as seen from inside each schema (the cache key carries the schema)."""
    seen = {}
    for schema in schemas:
        with schema_context(schema):
            seen[schema] = ping_report(token=token)
    return seen


def wait_for_report(schema: str, token: str) -> dict[str, Any] | None:
    deadline = time.monotonic() + REPORT_TIMEOUT
    with schema_context(schema):
        while time.monotonic() < deadline:
            report = ping_report(token=token)
            if report is not None:
                return report
            time.sleep(0.1)
    return None


def wait_for_log(worker, pattern: str) -> str | None:
    deadline = time.monotonic() + REPORT_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(pattern, worker.log_path.read_text(errors="replace"))
        if match:
            return match.group(0)
        time.sleep(0.2)
    return None


def test_task_sent_from_a_workspace_runs_in_that_workspace(celery_worker, tenant, other_tenant):
    a, b = tenant.workspace.schema_name, other_tenant.workspace.schema_name
    token = secrets.token_hex(8)
    with schema_context(a):
        ping_schema.delay(token)
    report = wait_for_report(a, token)
    assert report is not None, celery_worker.log_tail()
    assert report["schema"] == a
    assert report["database_schema"] == a  # PostgreSQL agrees: unqualified reads and writes land in A's tables
    assert report["worker"].startswith("celery-")
    # The report was written in A's namespace only.
    assert reports_by_schema(token, [b, "public"]) == {b: None, "public": None}


def test_tasks_of_two_workspaces_each_run_in_their_own(celery_worker, tenant, other_tenant):
    """The worker's processes serve both workspaces in turn; each task must still land in its sender's schema."""
    schemas = [tenant.workspace.schema_name, other_tenant.workspace.schema_name] * 3
    tokens = []
    for schema in schemas:
        token = secrets.token_hex(8)
        with schema_context(schema):
            ping_schema.delay(token)
        tokens.append(token)
    for schema, token in zip(schemas, tokens):
        report = wait_for_report(schema, token)
        assert report is not None, celery_worker.log_tail()
        assert (report["schema"], report["database_schema"]) == (schema, schema)


def test_workspace_task_sent_from_public_refuses_to_run(celery_worker, tenant, other_tenant):
    assert connection.schema_name == "public"
    token = secrets.token_hex(8)
    result = ping_schema.delay(token)
    refusal = wait_for_log(celery_worker, rf"config\.ping_schema\[{result.id}\][^\n]*wrong_schema[^\n]*")
    assert refusal is not None, celery_worker.log_tail()
    # It refused before doing anything: no report in any namespace, public or workspace.
    schemas = ["public", tenant.workspace.schema_name, other_tenant.workspace.schema_name]
    assert reports_by_schema(token, schemas) == dict.fromkeys(schemas)
    # The refusal left the worker process in a usable state: the next workspace task runs, in its schema.
    after = secrets.token_hex(8)
    with schema_context(tenant.workspace.schema_name):
        ping_schema.delay(after)
    report = wait_for_report(tenant.workspace.schema_name, after)
    assert report is not None and report["database_schema"] == tenant.workspace.schema_name


def test_worker_ping_reports_the_workspace_schema(celery_worker, tenant):
    report = worker_ping(slug=tenant.workspace.slug, timeout=REPORT_TIMEOUT)
    assert report is not None, celery_worker.log_tail()
    assert report["schema"] == report["database_schema"] == tenant.workspace.schema_name
