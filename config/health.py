"""Liveness and readiness. The public sees up/down and which dependency is down; error details need the ops token
or a staff session (they can carry hostnames)."""
from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


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
    if token and request.headers.get("X-Ops-Token") == token:
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:  # any failure of a dependency means "not ready"
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    failed = sorted(name for name, result in results.items() if not result["ok"])
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "failed": failed}
    if _may_see_details(request):
        body["checks"] = results
    return JsonResponse(body, status=200 if not failed else 503)
