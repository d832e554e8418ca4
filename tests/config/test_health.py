"""/healthz and /readyz over real servers: the session's healthy one, and servers whose Redis or PostgreSQL is a
closed port (a real outage, not a patched check)."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.conftest import LOG_DIR
from tests.factories import UserFactory
from tests.live import LiveServer, free_port, start_live_server

CHECKS = {"postgres", "redis", "broker", "vector_store"}
OPS_TOKEN = secrets.token_hex(16)
REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(6)


def session_cookie(user) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def server_with(django_db_blocker, name: str, **env: str) -> LiveServer:
    from django.db import connection

    with django_db_blocker.unblock():
        return start_live_server(connection.settings_dict, LOG_DIR, extra_env=env, name=name)


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def redis_down_server(django_db_blocker, closed_port) -> Iterator[LiveServer]:
    """Redis (cache, channel layer and broker) at a closed port, with a password in its URL as production has."""
    broken = urlunsplit(urlsplit(settings.REDIS_URL)._replace(netloc=f":{REDIS_PASSWORD}@127.0.0.1:{closed_port}"))
    server = server_with(django_db_blocker, "asgi-redis-down", REDIS_URL=broken, OPS_TOKEN=OPS_TOKEN)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def postgres_down_server(django_db_blocker, closed_port) -> Iterator[LiveServer]:
    server = server_with(
        django_db_blocker, "asgi-postgres-down", OPS_TOKEN=OPS_TOKEN,
        DATABASE_URL=f"postgres://postgres:db-pw-{closed_port}@127.0.0.1:{closed_port}/{settings.TEST_DATABASE_NAME}",
    )
    yield server
    server.process.stop()


# --- the healthy server --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host_kind", ["public", "workspace", "probe by IP"])
def test_healthz_answers_on_every_host(live_server, tenant, host_kind):
    host = {"public": "localhost", "workspace": tenant.host, "probe by IP": "10.0.0.7"}[host_kind]
    response = live_server.request("GET", host, "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("host_kind", ["public", "workspace"])
def test_readyz_is_ok_when_every_dependency_is(live_server, tenant, host_kind):
    host = "localhost" if host_kind == "public" else tenant.host
    response = live_server.request("GET", host, "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failed": []}


def test_readyz_details_need_a_configured_token_or_staff(live_server, tenant, django_db_blocker):
    # The session's server has no OPS_TOKEN: no token value (not even an empty one) opens the details.
    for token in ("", "guess", OPS_TOKEN):
        assert "checks" not in live_server.request("GET", "localhost", "/readyz", headers={"X-Ops-Token": token}).json()
    with django_db_blocker.unblock():
        staff, member = UserFactory(is_staff=True), tenant.owner
    assert "checks" not in live_server.request("GET", "localhost", "/readyz",
                                               headers={"Cookie": session_cookie(member)}).json()
    body = live_server.request("GET", "localhost", "/readyz", headers={"Cookie": session_cookie(staff)}).json()
    assert set(body["checks"]) == CHECKS
    assert all(check["ok"] for check in body["checks"].values())


# --- Redis down ----------------------------------------------------------------------------------------------------
def secrets_in(text: str, port: int) -> list[str]:
    found = [word for word in (REDIS_PASSWORD, f"db-pw-{port}", "redis://", "postgres://") if word in text]
    if str(port) in text:
        found.append(f"port {port}")
    return found + [word for word in ("127.0.0.1", "localhost:") if word in text]


@pytest.mark.parametrize("host_kind", ["public", "workspace"])
def test_readyz_names_redis_and_broker_when_redis_is_down(redis_down_server, tenant, closed_port, host_kind):
    host = "localhost" if host_kind == "public" else tenant.host
    assert redis_down_server.request("GET", host, "/healthz").status_code == 200  # the process is up
    response = redis_down_server.request("GET", host, "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["broker", "redis"]
    assert body["error"]["code"] == "service_unavailable"
    assert body["error"]["details"] == {"failed": ["broker", "redis"]}
    assert "checks" not in body
    assert secrets_in(response.text, closed_port) == []


def test_readyz_details_with_the_ops_token_name_the_cause_but_no_password(redis_down_server, closed_port):
    wrong = redis_down_server.request("GET", "localhost", "/readyz", headers={"X-Ops-Token": OPS_TOKEN[:-1] + "x"})
    assert "checks" not in wrong.json()
    response = redis_down_server.request("GET", "localhost", "/readyz", headers={"X-Ops-Token": OPS_TOKEN})
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert set(checks) == CHECKS
    assert checks["postgres"]["ok"] and checks["vector_store"]["ok"]
    assert not checks["redis"]["ok"] and not checks["broker"]["ok"]
    assert str(closed_port) in checks["redis"]["error"]  # what operators need: where it tried to connect
    assert REDIS_PASSWORD not in response.text


# --- PostgreSQL down -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host_kind", ["public", "workspace"])
def test_readyz_names_postgres_when_it_is_down(postgres_down_server, tenant, closed_port, host_kind):
    """Resolving a workspace host needs the database: the probes must answer without it, not with a bare 500."""
    host = "localhost" if host_kind == "public" else tenant.host
    assert postgres_down_server.request("GET", host, "/healthz").status_code == 200
    response = postgres_down_server.request("GET", host, "/readyz", headers={"Cookie": "sessionid=whatever"})
    assert response.status_code == 503
    assert response.json()["failed"] == ["postgres"]
    assert secrets_in(response.text, closed_port) == []
    detailed = postgres_down_server.request("GET", host, "/readyz", headers={"X-Ops-Token": OPS_TOKEN}).json()
    assert not detailed["checks"]["postgres"]["ok"]
    assert f"db-pw-{closed_port}" not in str(detailed)
