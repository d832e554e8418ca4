"""API fuzzing: schemathesis generates requests from our own OpenAPI schema (/api/schema/) and sends them, with a
valid API key, to the real ASGI server. Whatever it sends, the API answers without a 5xx, and every error is in the
project's error shape ({"error": {"code", "message", "details"}}).

The workspace is a fresh one made for this module, so the fuzzer's writes (documents, widgets, conversations) touch
nothing else. Shrinking is off (a failure is reported with the request as generated) to keep the run bounded.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from accounts.services import api_key_create
from tests.factories import workspace_with_owner

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def _error_shape_problem(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return f"a {response.status_code} that is not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        return f"a {response.status_code} outside the error shape: {json.dumps(body)[:300]}"
    if not isinstance(error["code"], str) or not error["code"] or not error["message"]:
        return f"a {response.status_code} without a code or message: {json.dumps(body)[:300]}"
    return None


@pytest.fixture(scope="module")
def fuzz_target(live_server, django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Fuzz Co")
        _key, raw = api_key_create(workspace=ws.workspace, name="fuzz", scopes=["read", "write", "chat"])
        workspace_host = ws.host
    host = f"{workspace_host}:{live_server.port}"
    schema_response = live_server.request("GET", workspace_host, "/api/schema/?format=json")
    assert schema_response.status_code == 200, schema_response.text[:300]
    return {
        "schema": schemathesis.openapi.from_dict(schema_response.json()),
        "base_url": f"http://127.0.0.1:{live_server.port}",
        "headers": {"Host": host, "Authorization": f"Api-Key {raw}"},
        "server": live_server,
    }


def test_every_operation_answers_without_5xx_and_in_the_error_shape(fuzz_target):
    schema = fuzz_target["schema"]
    problems: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzz_target["base_url"], headers=fuzz_target["headers"], timeout=60)
            where = f"{label} -> {case.method} {case.formatted_path} query={case.query!r} body={str(case.body)[:200]!r}"
            if response.status_code >= 500:
                problems.append(f"{where}: {response.status_code} {response.text[:300]!r}")
            elif response.status_code >= 400:
                problem = _error_shape_problem(response)
                if problem:
                    problems.append(f"{where}: {problem}")

        try:
            exercise()
        except Unsatisfiable:
            pass
    assert operations >= 20, f"the schema lists only {operations} operations"
    log = fuzz_target["server"].process.log_tail(60) if problems else ""
    assert not problems, "\n".join(problems[:30]) + "\n--- server log ---\n" + log
