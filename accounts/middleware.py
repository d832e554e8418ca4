from __future__ import annotations

from collections.abc import Callable

import structlog
from django.http import HttpRequest, HttpResponse

from accounts.selectors import membership_role


class MembershipMiddleware:
    """On a workspace host, the logged-in user's role there (None for non-members) becomes `request.role`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.role = None  # type: ignore[attr-defined]
        workspace = getattr(request, "tenant", None)
        user = getattr(request, "user", None)
        if workspace is not None and workspace.schema_name != "public" and user is not None and user.is_authenticated:
            request.role = membership_role(user_id=user.pk, workspace_id=workspace.pk)  # type: ignore[attr-defined]
            structlog.contextvars.bind_contextvars(user=user.pk)
        return self.get_response(request)


class ApiRateLimitHeadersMiddleware:
    """X-RateLimit-Limit/-Remaining/-Reset on every REST API response of a workspace whose plan sets
    `api_requests_per_minute`: the state WorkspacePlanRateThrottle (accounts.api_throttles) left on the request,
    on 429s too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        state = getattr(request, "api_rate_limit", None)
        if state is not None:
            for name, value in state.headers().items():
                response[name] = value
        return response
