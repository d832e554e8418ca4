"""Structured logs: JSON lines that carry the request id (echoed as X-Request-ID) and the workspace.

The configured output is checked, not a handler of the test's own: a real ASGI server (uvicorn, LOG_LEVEL=INFO) and a
real `manage.py` process write their lines as they run in production, and the field names docs/operations.md
documents are pinned (dashboards and alerts query them)."""
from __future__ import annotations

import io
import json
import logging
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests

from config.logging import JsonFormatter
from tests.conftest import LOG_DIR
from tests.live import BASE_DIR, LiveServer, process_env, start_live_server

BASE_FIELDS = {"ts", "level", "logger", "event"}  # on every line (docs/operations.md, Logs)
LEVELS = {"debug", "info", "warning", "error", "critical"}


def json_lines(text: str) -> list[dict]:
    """Every line of a process's output that is a JSON object (other writers, e.g. Python warnings, are plain)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))  # a line that starts like JSON and is not is a bug: fail loudly
    return found


def assert_base_fields(line: dict) -> None:
    assert BASE_FIELDS <= set(line), line
    assert datetime.fromisoformat(line["ts"]).utcoffset() is not None, line  # ISO 8601 with its offset (UTC)
    assert line["level"] in LEVELS and line["logger"] and isinstance(line["event"], str), line


@pytest.fixture(scope="module")
def info_server(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, extra_env={"LOG_LEVEL": "INFO"},
                                   name="logging-asgi")
    yield server
    server.process.stop()


def test_the_servers_log_lines_of_a_request_are_json_with_the_documented_fields(info_server):
    """A signup over HTTP: its "workspace created" line carries the request id sent as X-Request-ID."""
    request_id = f"req-log-{secrets.token_hex(8)}"
    session = requests.Session()
    url = f"http://127.0.0.1:{info_server.port}/signup/"
    headers = {"Host": f"localhost:{info_server.port}"}
    form = session.get(url, headers=headers, timeout=30)
    assert form.status_code == 200, form.text[:300]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    slug = f"logs-{secrets.token_hex(4)}"
    response = session.post(url, headers={**headers, "X-Request-ID": request_id}, allow_redirects=False, timeout=60,
                            data={"csrfmiddlewaretoken": token, "email": f"{slug}@example.test",
                                  "password": "a long enough password 123", "workspace_name": "Logs Co", "slug": slug})
    assert response.status_code == 302, response.text[:500]
    assert response.headers["X-Request-ID"] == request_id

    deadline = time.monotonic() + 30  # the server writes the line as the request runs; give a slow machine time
    while True:
        lines = json_lines(info_server.process.log_path.read_text(errors="replace"))
        mine = [line for line in lines if line.get("request_id") == request_id]
        created = [line for line in mine if line["event"] == "workspace created"]
        if created:
            break
        assert time.monotonic() < deadline, f"no 'workspace created' line for {request_id}:\n" \
                                            f"{info_server.process.log_tail()}"
        time.sleep(0.2)
    assert lines and all(assert_base_fields(line) is None for line in lines)
    [line] = created
    assert line["level"] == "info" and line["logger"] == "tenants.services", line
    assert line["workspace"] == slug, line  # the workspace the line is about
    assert not any("password" in json.dumps(entry) for entry in mine), mine


def test_a_process_with_the_configured_settings_logs_json_to_stderr_only():
    """stdout stays free for commands' output (their `--json` documents); log lines go to stderr as JSON."""
    from django.db import connection

    script = ("import logging, django; django.setup(); "
              "logging.getLogger('ccgpt.probe').warning('probe %s', 'line', extra={'request_id': 'req-probe-1234', "
              "'task': 'documents.ingest'})")
    done = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
                          env=process_env(connection.settings_dict))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    [line] = [entry for entry in json_lines(done.stderr) if entry["logger"] == "ccgpt.probe"]
    assert_base_fields(line)
    assert (line["level"], line["event"], line["request_id"], line["task"]) == (
        "warning", "probe line", "req-probe-1234", "documents.ingest")


def test_log_lines_of_a_request_carry_its_id_and_workspace(tenant, host_client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        response = host_client(tenant.host).get("/no-such-page/", HTTP_X_REQUEST_ID="req-test-12345678")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert response.status_code == 404 and response["X-Request-ID"] == "req-test-12345678"
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines, "the 404 was not logged"
    line = lines[-1]
    assert line["request_id"] == "req-test-12345678"
    assert {"ts", "level", "logger", "event"} <= set(line)


def test_a_request_id_that_is_not_plausible_is_replaced(tenant, host_client):
    response = host_client(tenant.host).get("/api/v1/me/", HTTP_X_REQUEST_ID="x" * 500)
    assert response["X-Request-ID"] != "x" * 500 and len(response["X-Request-ID"]) == 32
