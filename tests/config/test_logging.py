"""Structured logs: JSON lines that carry the request id (echoed as X-Request-ID) and the workspace."""
from __future__ import annotations

import io
import json
import logging

from config.logging import JsonFormatter


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
