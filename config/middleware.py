"""Request-wide plumbing: request ids in logs, and JSON errors for API paths outside DRF views."""
from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse

from config.errors import ApplicationError, error_json_response, to_application_error


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if 8 <= len(incoming) <= 64 and incoming.isascii() else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


class ApiErrorMiddleware:
    """Errors raised by non-DRF views: JSON in the error shape for API clients, error pages for people."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        error = to_application_error(exception)
        if error is None:
            return None
        if wants_json(request):
            return error_json_response(error)
        if isinstance(exception, ApplicationError):
            from django.shortcuts import render

            return render(request, "errors/error.html", {"error": error}, status=error.status_code)
        return None  # Http404 / PermissionDenied: Django's own handlers render 404.html / 403.html


class ContentSecurityPolicyMiddleware:
    """A strict CSP on every HTML page that does not set its own (the widget frame and loader do).

    Scripts only from our own origin (no inline scripts, no eval: data reaches scripts through `json_script`,
    which the browser does not execute); styles from our origin plus inline `<style>` blocks of the templates;
    sockets to our own host; no plugins; framing refused (the widget frame sets its own frame-ancestors). The API
    docs page (Swagger UI, `/api/docs/`) is under it too: its files come from static/ and its start-up script from
    a URL of its own.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" in response or not response.get("Content-Type", "").startswith("text/html"):
            return response
        try:
            socket_origin = ("wss://" if request.is_secure() else "ws://") + request.get_host()
        except Exception:  # noqa: BLE001 — a host Django refuses; no socket can be opened from that page anyway
            socket_origin = ""
        response["Content-Security-Policy"] = "; ".join([
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: https:",
            f"connect-src 'self' {socket_origin}",
            "frame-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "frame-ancestors 'none'",
        ])
        return response
