"""Liveness and readiness. The public sees up/down and which dependency is down; error details need the ops token
or a staff session (they can carry hostnames).

HealthProbeMiddleware answers both before the workspace is resolved from the host: that lookup needs PostgreSQL, so
behind it a database outage made /healthz and /readyz a bare 500 instead of "postgres" in a 503. It also answers on
any host, as load balancers and kubelets probe by IP.
"""
from __future__ import annotations

import hmac
import re
import socket
import time
from collections.abc import Callable
from importlib import import_module
from urllib.parse import urlparse

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.errors import ServiceUnavailable


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_postgres() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis_ping(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=settings.READINESS_CHECK_TIMEOUT,
                                  socket_connect_timeout=settings.READINESS_CHECK_TIMEOUT)
    try:
        client.ping()
    finally:
        client.close()


def _check_redis() -> None:
    _redis_ping(settings.REDIS_URL)


def _check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        _redis_ping(url)
        return
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5672), settings.READINESS_CHECK_TIMEOUT):
        pass


def _check_vector_store() -> None:
    if settings.CHROMA_URL:
        import urllib.request

        with urllib.request.urlopen(settings.CHROMA_URL.rstrip("/") + "/api/v2/heartbeat",
                                    timeout=settings.READINESS_CHECK_TIMEOUT) as response:
            if response.status != 200:
                raise RuntimeError(f"chroma heartbeat answered {response.status}")
        return
    path = settings.CHROMA_PATH
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".ready-probe"
    probe.write_text("ok")
    probe.unlink()


CHECKS: dict[str, Callable[[], None]] = {
    "postgres": _check_postgres,
    "redis": _check_redis,
    "broker": _check_broker,
    "vector_store": _check_vector_store,
}


def _may_see_details(request: HttpRequest) -> bool:
    token = settings.OPS_TOKEN
    if token and hmac.compare_digest(request.headers.get("X-Ops-Token", "").encode(), token.encode()):
        return True
    return _is_staff_session(request)


def _is_staff_session(request: HttpRequest) -> bool:
    """Probes run before the session and auth middleware, so the session is read here, and only if there is one."""
    user = getattr(request, "user", None)
    if user is None:
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if not session_key:
            return False
        from django.contrib.auth import get_user

        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        try:
            user = get_user(request)
        except DatabaseError:  # the database is what is down: no details, but still the probe's answer
            return False
    return bool(user.is_authenticated and user.is_staff)


# Even the detailed errors never carry credentials, should a client library put a URL with them in its message.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def _error_text(exc: Exception) -> str:
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", f"{type(exc).__name__}: {exc}")[:300]


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:  # any failure of a dependency means "not ready"
            results[name] = {"ok": False, "error": _error_text(exc)}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    from config.warmup import warm_up_holds_readiness, warm_up_state

    if warm_up_holds_readiness():  # the first answer's model is still loading (config/warmup.py)
        results["warm_up"] = {"ok": False, "error": "warming up", "ms": 0.0}
    failed = sorted(name for name, result in results.items() if not result["ok"])
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "failed": failed}
    if failed:  # also in the one error shape, for clients that read only that
        body.update(ServiceUnavailable(f"Not ready: {', '.join(failed)}.", details={"failed": failed}).as_dict())
    if _may_see_details(request):
        body["checks"] = results
        body["warm_up"] = warm_up_state()
    return JsonResponse(body, status=200 if not failed else 503)


PROBES: dict[str, Callable[[HttpRequest], JsonResponse]] = {"/healthz": healthz, "/readyz": readyz}


class HealthProbeMiddleware:
    """Listed before the workspace middleware (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        # The previous request on this thread may have left a workspace's schema; probes read the public one.
        connection.set_schema_to_public()
        return probe(request)
