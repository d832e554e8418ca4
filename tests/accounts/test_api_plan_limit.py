"""A workspace's plan's `api_requests_per_minute` (accounts.api_throttles.WorkspacePlanRateThrottle): one budget per
workspace for its API keys (members' sessions are not counted), 429 `rate_limited` past it, X-RateLimit-* headers,
through the real middleware stack, the test database and the test Redis. The window is ended by expiring its Redis
key, not by waiting a minute."""
from __future__ import annotations

import secrets
import time
from decimal import Decimal

import pytest
from django.core.cache import cache

from accounts.api_throttles import WorkspacePlanRateThrottle
from accounts.services import api_key_create, workspace_signup
from config.cache import schema_keys
from tenants.models import Plan
from tests.config.test_api_limits import assert_rate_limited
from tests.factories import PASSWORD, WorkspaceWithOwner, unique_slug


def plan_make(per_minute: int | None) -> Plan:
    """A hidden plan for one test, with room for everything but API requests."""
    return Plan.objects.create(
        code=f"t-{secrets.token_hex(4)}", name="Rate plan", tier=0, is_public=False, price=Decimal("0"),
        overage_price=Decimal("0"), allow_overage=False, monthly_credits=100, max_documents=None,
        max_storage_bytes=None, max_widgets=None, max_seats=None, api_requests_per_minute=per_minute,
        chat_messages_per_minute=None, allowed_providers=["builtin"],
    )


def workspace_on(plan: Plan) -> WorkspaceWithOwner:
    owner, result = workspace_signup(email=f"owner-{secrets.token_hex(4)}@example.test", password=PASSWORD,
                                     workspace_name="Rate Co", slug=unique_slug("rate"), plan=plan.code)
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def api_key(ws: WorkspaceWithOwner) -> dict[str, str]:
    _key, raw = api_key_create(workspace=ws.workspace, name=f"k-{secrets.token_hex(3)}", scopes=["read"])
    return {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}


def window_end(ws: WorkspaceWithOwner) -> None:
    """Let the workspace's current window run out now (its key expires, as it would at the minute's end)."""
    schema = ws.workspace.schema_name
    with schema_keys(schema):
        key = WorkspacePlanRateThrottle().cache_key(schema)
    client = cache._cache.get_client(write=True)
    assert client.exists(key), "no window is open for this workspace"
    client.pexpire(key, 1)
    deadline = time.monotonic() + 5  # liveness only: Redis expires a 1 ms key at once; speed is not tested here
    while client.exists(key):
        assert time.monotonic() < deadline, "the expired window's key is still there"
        time.sleep(0.01)


def budget(response) -> tuple[int, int, int]:
    return (int(response.headers["X-RateLimit-Limit"]), int(response.headers["X-RateLimit-Remaining"]),
            int(response.headers["X-RateLimit-Reset"]))


def refused_get(client, auth: dict[str, str]) -> int:
    """GET /api/v1/me/ with `auth`, refused by the plan's limit (the shape the other API throttles' tests check,
    within the minute, and headers that agree with Retry-After); returns the limit it reports."""
    sent_at = time.time()
    response = client.get("/api/v1/me/", **auth)
    received_at = time.time()
    assert_rate_limited(response)
    retry_after = int(response.headers["Retry-After"])
    assert retry_after <= 60
    limit, remaining, reset = budget(response)
    # Both come from one reading of the window, rounded up: Reset is Retry-After seconds after the request was
    # served, give or take the rounding (bounded by when the request was sent and answered, however slow).
    assert remaining == 0 and sent_at + retry_after - 1 <= reset <= received_at + retry_after + 1
    return limit


def spend_then_refused(client, auth: dict[str, str], limit: int = 3) -> None:
    for _ in range(limit):
        assert client.get("/api/v1/me/", **auth).status_code == 200
    refused_get(client, auth)


@pytest.fixture(autouse=True)
def _plan_limits_on(settings) -> None:
    settings.API_PLAN_RATE_LIMITS = True  # off for the rest of the suite (config/settings/test.py), as the key limits


@pytest.fixture
def limited() -> Plan:
    return plan_make(3)


def test_keys_share_one_budget_per_workspace_and_members_sessions_are_not_counted(limited, host_client):
    ws = workspace_on(limited)
    client = host_client(ws.host)
    first_key, second_key = api_key(ws), api_key(ws)
    session = host_client(ws.host)
    session.force_login(ws.owner)

    started = time.time()
    seen = []
    for auth in (first_key, second_key, first_key):
        response = client.get("/api/v1/me/", **auth)
        assert response.status_code == 200, response.content
        seen.append(budget(response))
        # The dashboard calls the same API with a member's session: never counted, never refused by the plan's limit.
        response = session.get("/api/v1/me/")
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
    assert [(limit, remaining) for limit, remaining, _reset in seen] == [(3, 2), (3, 1), (3, 0)]
    assert all(started + 55 <= reset <= time.time() + 61 for _limit, _remaining, reset in seen)

    assert refused_get(client, second_key) == 3
    refused_get(client, api_key(ws))  # a brand-new key too: the budget is the workspace's
    assert session.get("/api/v1/me/").status_code == 200  # the team's dashboard keeps working


def test_another_workspace_keeps_its_own_budget(limited, host_client):
    busy, quiet = workspace_on(limited), workspace_on(limited)
    spend_then_refused(host_client(busy.host), api_key(busy))

    response = host_client(quiet.host).get("/api/v1/me/", **api_key(quiet))
    assert response.status_code == 200 and budget(response)[:2] == (3, 2)


def test_the_next_window_serves_again(limited, host_client):
    ws = workspace_on(limited)
    client, auth = host_client(ws.host), api_key(ws)
    spend_then_refused(client, auth)

    window_end(ws)
    response = client.get("/api/v1/me/", **auth)
    assert response.status_code == 200 and budget(response)[:2] == (3, 2)


def test_a_plan_change_counts_at_once(limited, host_client):
    ws = workspace_on(limited)
    client, auth = host_client(ws.host), api_key(ws)
    spend_then_refused(client, auth)

    # Staff raise the plan's limit in the admin: the next request reads it (no restart, no cache to wait for).
    Plan.objects.filter(pk=limited.pk).update(api_requests_per_minute=10)
    response = client.get("/api/v1/me/", **auth)
    assert response.status_code == 200 and budget(response)[:2] == (10, 5)  # the refused ones counted too


def test_an_unlimited_plan_is_never_refused_and_sends_no_headers(host_client):
    ws = workspace_on(plan_make(None))
    client, auth = host_client(ws.host), api_key(ws)
    session = host_client(ws.host)
    session.force_login(ws.owner)
    for _ in range(8):
        for response in (client.get("/api/v1/me/", **auth), session.get("/api/v1/me/")):
            assert response.status_code == 200, response.content
            assert not any(name.lower().startswith("x-ratelimit-") for name in response.headers)


def test_pages_health_widget_and_unauthenticated_calls_are_not_counted(limited, host_client):
    ws = workspace_on(limited)
    session = host_client(ws.host)
    session.force_login(ws.owner)
    anonymous = host_client(ws.host)
    for _ in range(4):
        assert session.get("/").status_code == 200  # the dashboard's pages
        assert session.get("/settings/api-keys/").status_code == 200
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/widget/v1/loader.js").status_code == 200  # the widget has limits of its own
        assert anonymous.get("/api/v1/me/").status_code in (401, 403)  # no credential: the anonymous throttle's
    for response in (session.get("/"), anonymous.get("/healthz"), anonymous.get("/widget/v1/loader.js")):
        assert "X-RateLimit-Limit" not in response.headers

    response = session.get("/api/v1/me/")  # a member's session: the dashboard's own calls
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
    response = host_client(ws.host).get("/api/v1/me/", **api_key(ws))
    assert response.status_code == 200 and budget(response)[:2] == (3, 2)  # the first request that counted


@pytest.fixture(scope="module")
def redis_down_server(django_db_blocker):
    """A server of the same code and database whose Redis is a closed port (a real outage, not a patched client)."""
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings
    from django.db import connection

    from tests.conftest import LOG_DIR
    from tests.live import free_port, start_live_server

    broken = urlunsplit(urlsplit(settings.REDIS_URL)._replace(netloc=f"127.0.0.1:{free_port()}"))
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR,
                                   extra_env={"REDIS_URL": broken, "API_PLAN_RATE_LIMITS": "true"},
                                   name="asgi-rpm-redis-down")
    yield server
    server.process.stop()


def test_the_api_stays_up_without_its_counters(limited, redis_down_server):
    ws = workspace_on(limited)
    _key, raw = api_key_create(workspace=ws.workspace, name="outage", scopes=["read"])
    for _ in range(5):  # past the plan's 3: nothing can be counted, so nothing is refused (fail open, logged)
        response = redis_down_server.request("GET", ws.host, "/api/v1/me/", headers={"Authorization": f"Api-Key {raw}"})
        assert response.status_code == 200, response.text
        assert "X-RateLimit-Limit" not in response.headers
