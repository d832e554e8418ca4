"""Prometheus metrics: HTTP latency by route, and a registry other apps add to (`metric_*` helpers).

Labels are low-cardinality by construction: the URL *pattern* (never the path), the method, the status class.
Nothing secret is ever a label or a value.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_LATENCY = Histogram(
    "ccgpt_http_request_duration_seconds", "HTTP request latency by route.", ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter("ccgpt_http_requests_total", "HTTP requests by route.", ["route", "method", "status"])
WS_CONNECTIONS = Gauge("ccgpt_websocket_connections", "Open WebSocket connections by route.", ["route"])
WS_EVENTS = Counter("ccgpt_websocket_events_total", "WebSocket events sent and received.", ["route", "direction", "type"])


UNMATCHED = "<unmatched>"  # every request no URL pattern matched (404s, unknown hosts): one series, never the path
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return "/" + match.route
    return UNMATCHED


def _method(request: HttpRequest) -> str:
    """The method is client-chosen text too: anything but the standard verbs is one value, "other"."""
    method = (request.method or "").upper()
    return method if method in _METHODS else "other"


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        labels = (_route(request), _method(request), f"{response.status_code // 100}xx")
        HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(*labels).inc()
        return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.OPS_TOKEN
    if settings.METRICS_REQUIRE_TOKEN and (not token or request.headers.get("X-Ops-Token") != token):
        return HttpResponse("metrics need the ops token\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


# --- WebSocket -----------------------------------------------------------------------------------------------------
_FRAME_TYPE = re.compile(r'"type"\s*:\s*"([a-z_]{1,24})"')
# What a client may send (docs/websocket-protocol.md); any other `type` a client writes is counted as "other".
_CLIENT_FRAME_TYPES = frozenset({"message", "typing", "feedback", "request_human", "contact", "ping", "resume"})


def ws_route(path: str, routes: Sequence[Any] = ()) -> str:
    """The URL pattern the socket's path matches (`/ws/chat/<str:conversation_id>/`), or "<unmatched>": the path is
    client-chosen text (sockets refused by the host check are accepted then closed), so it is never a label."""
    relative = (path or "/").lstrip("/")
    for route in routes:
        if route.pattern.match(relative):
            return "/" + str(route.pattern)
    return UNMATCHED


def _frame_type(text: str | None, known: frozenset[str] | None = None) -> str:
    match = _FRAME_TYPE.search(text[:120]) if text else None
    if match is None:
        return "binary" if text is None else "other"
    return match.group(1) if known is None or match.group(1) in known else "other"


class WebSocketMetricsMiddleware:
    """Counts open sockets and the frames each way, by route and frame type (the `type` field of our JSON frames)."""

    def __init__(self, app: Callable, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.routes = tuple(routes)  # the URLRouter's patterns: labels are these, never the path

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "websocket":
            return await self.app(scope, receive, send)
        route = ws_route(scope.get("path", ""), self.routes)
        accepted = False

        async def counting_receive() -> dict:
            message = await receive()
            if message.get("type") == "websocket.receive":
                WS_EVENTS.labels(route, "in", _frame_type(message.get("text"), _CLIENT_FRAME_TYPES)).inc()
            return message

        async def counting_send(message: dict) -> None:
            nonlocal accepted
            kind = message.get("type")
            if kind == "websocket.accept" and not accepted:
                accepted = True
                WS_CONNECTIONS.labels(route).inc()
            elif kind == "websocket.send":
                WS_EVENTS.labels(route, "out", _frame_type(message.get("text"))).inc()
            await send(message)

        try:
            return await self.app(scope, counting_receive, counting_send)
        finally:
            if accepted:
                WS_CONNECTIONS.labels(route).dec()


# --- answers, providers, credits (the processes that answer: ASGI and commands) ------------------------------------
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
ANSWER_STAGE = Histogram(
    "ccgpt_answer_stage_seconds", "Answer latency by stage (retrieval, first_token, total) and provider.",
    ["stage", "provider"], buckets=_LATENCY_BUCKETS,
)
ANSWERS = Counter("ccgpt_answers_total", "Completed answers by provider and outcome.", ["provider", "outcome"])
PROVIDER_ERRORS = Counter(
    "ccgpt_provider_errors_total", "Provider failures that made the chain fall back, by provider and code.",
    ["provider", "code"],
)
CREDITS_CONSUMED = Counter("ccgpt_credits_consumed_total", "Credits consumed, by reason.", ["reason"])


def _label(value: object, default: str = "unknown") -> str:
    text = str(value or default)
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", text)[:40]


def answer_observe(data: dict) -> None:
    """Record a completed answer (the `completed` data of chat.answering). Never raises."""
    try:
        provider = _label(data.get("provider"))
        for stage, ms in (data.get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)):
                ANSWER_STAGE.labels(_label(stage), provider).observe(ms / 1000)
        ANSWERS.labels(provider, "answered" if data.get("answered") else "declined").inc()
        for fallback in data.get("fallbacks") or ():
            PROVIDER_ERRORS.labels(_label(fallback.get("provider")), _label(fallback.get("error"))).inc()
    except Exception:  # noqa: BLE001 — metrics never break an answer
        pass


def credits_observe(reason: str, amount: int) -> None:
    try:
        CREDITS_CONSUMED.labels(_label((reason or "answer").split(":")[0])).inc(amount)
    except Exception:  # noqa: BLE001
        pass


# --- Celery: task durations and failures, queue depth ---------------------------------------------------------------
# Workers are separate processes (and hosts), so they add their task timings to a Redis hash and the web process's
# /metrics reads it back; queue depth is read from the broker at scrape time.
TASK_METRICS_KEY = "ccgpt:metrics:tasks"
TASK_BUCKETS = (0.05, 0.25, 1, 5, 15, 60, 300, 900)


_clients: dict[tuple[int, str], Any] = {}


def _metrics_redis():
    """One client (and connection pool) per process and broker URL: a task observation must not pay a connect."""
    import redis

    url = getattr(settings, "CELERY_BROKER_URL", "") or settings.REDIS_URL
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return client


INGEST_STAGE_METRICS_KEY = "ccgpt:metrics:ingest_stages"
INGEST_STAGE_BUCKETS = (0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900)


def _hash_observe(pipe: Any, key: str, prefix: str, seconds: float, buckets: tuple[float, ...]) -> None:
    """One histogram observation as HINCRBY fields `<prefix>|count`, `|sum` and `|le=<bound>` of a Redis hash."""
    pipe.hincrby(key, f"{prefix}|count", 1)
    pipe.hincrbyfloat(key, f"{prefix}|sum", seconds)
    for bound in buckets:
        if seconds <= bound:
            pipe.hincrby(key, f"{prefix}|le={bound}", 1)


def task_observe(*, task: str, queue: str, state: str, seconds: float) -> None:
    """Called in the worker when a task ends (config.celery). Never raises."""
    try:
        prefix = f"{_label(task, 'task')[:40]}|{_label(queue, 'default')}|{_label(state)}"
        pipe = _metrics_redis().pipeline(transaction=False)
        _hash_observe(pipe, TASK_METRICS_KEY, prefix, seconds, TASK_BUCKETS)
        pipe.execute()
    except Exception:  # noqa: BLE001
        pass


def ingest_stages_observe(*, timings_ms: dict[str, float], queue: str) -> None:
    """Called by the pipeline when a document is indexed: the time of each stage of that run (parse, chunk, embed,
    index; fetch for web pages; queue_wait). Never raises."""
    try:
        pipe = _metrics_redis().pipeline(transaction=False)
        for stage, ms in timings_ms.items():
            _hash_observe(pipe, INGEST_STAGE_METRICS_KEY, f"{_label(stage)[:20]}|{_label(queue, 'default')}",
                          float(ms) / 1000, INGEST_STAGE_BUCKETS)
        pipe.execute()
    except Exception:  # noqa: BLE001
        pass


def _hash_histograms(raw: dict[str, str], label_count: int) -> dict[tuple[str, ...], dict[str, float]]:
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for key, value in raw.items():
        *labels, field = key.split("|", label_count)
        series.setdefault(tuple(labels), {})[field] = float(value)
    return series


def _histogram_family(name: str, documentation: str, labels: list[str], raw: dict[str, str],
                      buckets: tuple[float, ...]):
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, fields in sorted(_hash_histograms(raw, len(labels)).items()):
        points = [(str(bound), fields.get(f"le={bound}", 0.0)) for bound in buckets]
        points.append(("+Inf", fields.get("count", 0.0)))
        family.add_metric(list(values), points, fields.get("sum", 0.0))
    return family


class BackgroundWorkCollector:
    """Exposes the workers' task histograms (from Redis) and the depth of every Celery queue."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("ccgpt_background_metrics_up", "1 when the broker could be read for these metrics.")
        try:
            client = _metrics_redis()
            raw = {k.decode(): v.decode() for k, v in client.hgetall(TASK_METRICS_KEY).items()}
            stages = {k.decode(): v.decode() for k, v in client.hgetall(INGEST_STAGE_METRICS_KEY).items()}
            queues = getattr(settings, "CELERY_METRICS_QUEUES", ("default", "ingest", "ingest_large"))
            depths = {queue: client.llen(queue) for queue in queues}
        except Exception:  # noqa: BLE001 — the broker being down shows as up=0, not as a failed scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("ccgpt_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
        for queue, value in depths.items():
            depth.add_metric([queue], value)
        yield depth
        yield _histogram_family("ccgpt_task_duration_seconds", "Celery task durations by task, queue and final state.",
                                ["task", "queue", "state"], raw, TASK_BUCKETS)
        yield _histogram_family("ccgpt_ingest_stage_seconds",
                                "Time of each ingestion stage of indexed documents, by stage and queue.",
                                ["stage", "queue"], stages, INGEST_STAGE_BUCKETS)


def _register_background_collector() -> None:
    from prometheus_client import REGISTRY

    global _BACKGROUND_REGISTERED
    if not _BACKGROUND_REGISTERED:
        REGISTRY.register(BackgroundWorkCollector())
        _BACKGROUND_REGISTERED = True


_BACKGROUND_REGISTERED = False
_register_background_collector()
