"""Prometheus metrics: HTTP latency by route, and a registry other apps add to (`metric_*` helpers).

Labels are low-cardinality by construction: the URL *pattern* (never the path), the method, the status class.
Nothing secret is ever a label or a value.
"""
from __future__ import annotations

import time
from collections.abc import Callable

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


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return "/" + match.route
    return "unmatched"


class MetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        labels = (_route(request), request.method or "", f"{response.status_code // 100}xx")
        HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(*labels).inc()
        return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.OPS_TOKEN
    if settings.METRICS_REQUIRE_TOKEN and (not token or request.headers.get("X-Ops-Token") != token):
        return HttpResponse("metrics need the ops token\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
