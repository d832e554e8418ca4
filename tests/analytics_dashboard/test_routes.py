"""The dashboard's routes under the project's generated suites: the role matrix (tests/accounts/test_role_matrix.py)
and the isolation test (tests/test_isolation.py) can fill every analytics route, and the matrix holds for them."""
from __future__ import annotations

import pytest

from accounts.roles import Role, role_has_permission
from tests.accounts.test_role_matrix import endpoints, exercise
from tests.test_isolation import fill_path, tenant_routes

EXPECTED = {"analytics/", "analytics/review/", *(f"analytics/export/{t}.csv" for t in (
    "summary", "queries-over-time", "top-queries", "unanswered", "documents", "embeds", "quality", "handoffs")),
    "analytics/export/transcripts.csv", "analytics/export/transcripts.jsonl"}


def test_every_analytics_page_is_routed_and_fillable():
    mine = [(route, pattern) for route, pattern in tenant_routes() if route.startswith("analytics/")]
    assert {route for route, _ in mine} == EXPECTED
    for route, pattern in mine:
        assert fill_path(route, pattern, {}) == "/" + route  # no arguments for the generators to guess
        assert pattern.callback.required_permission == "analytics.view"


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_the_role_matrix_holds_for_the_analytics_routes(role, ws, ws_users, host_client, seeded):
    client = host_client(ws.host)
    client.force_login(ws_users[role])
    mine = [e for e in endpoints() if e.route.startswith("analytics/")]
    assert len(mine) == len(EXPECTED)
    problems: list[str] = []
    for endpoint in mine:
        problems += exercise(client, endpoint, lambda perm: role_has_permission(role, perm), {})
    assert problems == []
