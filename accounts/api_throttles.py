"""REST API throttles (DRF's DEFAULT_THROTTLE_CLASSES): one budget per API key, per signed-in user, and per
anonymous client address (config.client_ip), each a fixed window of settings.API_THROTTLE_RATES[scope]; and one per
workspace, its plan's `api_requests_per_minute` (WorkspacePlanRateThrottle, with X-RateLimit-* headers).

Counted in the default cache's Redis under keys that carry the workspace schema (cache.make_key, config.cache): a
workspace's traffic never spends another's budget. A fixed-window counter is one INCR per request, where DRF's
SimpleRateThrottle would keep (and rewrite) a list of every request's timestamp. Over the limit DRF raises
Throttled, rendered as 429 `rate_limited` with Retry-After (config.errors).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from accounts.authentication import ApiKeyPrincipal
from config.client_ip import client_ip
from config.throttle import parse_rate
from tenants.billing import plan_rate_limit

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES) while it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


class _FixedWindowThrottle(BaseThrottle):
    scope = ""

    def __init__(self) -> None:
        self._wait: int | None = None

    def identity(self, request: Request) -> str | None:
        """Who is counted, or None when this throttle does not apply to the request."""
        raise NotImplementedError

    def rate(self, request: Request) -> str | None:
        """The rate (config.throttle.parse_rate format) that applies to the request; None: no limit."""
        return settings.API_THROTTLE_RATES[self.scope]

    def cache_key(self, ident: str) -> str:
        return cache.make_key(f"api-throttle:{self.scope}:{ident}")  # make_key adds the schema (config.cache)

    def allow_request(self, request: Request, view: APIView) -> bool:
        ident = self.identity(request)
        if ident is None:
            return True
        rate = self.rate(request)
        if rate is None:
            return True
        limit, window = parse_rate(rate)
        # The window opens at the first request of the caller (not on a clock boundary).
        key = self.cache_key(ident)
        try:
            with cache._cache.get_client(write=True).pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, window, nx=True)
                pipe.pttl(key)
                count, _expire_set, pttl = pipe.execute()
        except RedisError:
            # Fail open: with Redis away the API still serves what it can (reads from PostgreSQL, docs/faults.md);
            # a throttle must not turn an outage of the counters into 500s.
            logger.warning("api throttle: counters unreachable; request allowed", exc_info=True)
            return True
        # Whole seconds, rounded up: a client that waits Retry-After finds the window over (TTL would round to the
        # nearest second, up to half a second early). -1 (no expiry) cannot stay: EXPIRE NX set it in the pipeline.
        ends_at = time.time() + max(int(pttl), 1) / 1000
        ttl = max(math.ceil(max(int(pttl), 1) / 1000), 1)
        self.counted(request, limit=limit, count=count, ttl=ttl, ends_at=ends_at)
        if count > limit:
            self._wait = ttl
            return False
        return True

    def counted(self, request: Request, *, limit: int, count: int, ttl: int, ends_at: float) -> None:
        """Called with the window's state after each counted request (hook for subclasses): `ttl` whole seconds
        left (rounded up), `ends_at` the Unix time the window ends."""

    def wait(self) -> int | None:
        return self._wait


class ApiKeyRateThrottle(_FixedWindowThrottle):
    scope = "api_key"

    def identity(self, request: Request) -> str | None:
        return f"{request.user.api_key.pk}" if isinstance(request.user, ApiKeyPrincipal) else None


class ApiUserRateThrottle(_FixedWindowThrottle):
    scope = "api_user"

    def identity(self, request: Request) -> str | None:
        user = request.user
        if isinstance(user, ApiKeyPrincipal) or not getattr(user, "is_authenticated", False):
            return None
        return f"{user.pk}"


class ApiAnonRateThrottle(_FixedWindowThrottle):
    scope = "api_anon"

    def identity(self, request: Request) -> str | None:
        return None if getattr(request.user, "is_authenticated", False) else client_ip(request._request)


@dataclass(frozen=True)
class ApiRateLimit:
    """A workspace's API budget as of this request: sent as X-RateLimit-* headers (ApiRateLimitHeadersMiddleware)."""

    limit: int
    remaining: int
    reset_at: int  # Unix time (seconds) when the window ends

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset_at)}


API_PATH_PREFIX = "/api/v1/"


class WorkspacePlanRateThrottle(_FixedWindowThrottle):
    """The workspace plan's `api_requests_per_minute` (tenants.billing.plan_rate_limit, read on every request so a
    plan change counts at once): one budget per workspace, shared by all its API keys. Only requests to /api/v1/ on
    a workspace host made with an API key count: the dashboard's own pages call the same API with a member's session,
    and a busy team must never find its inbox refused because of an integration (members have the per-user limit).
    A plan without a limit (null) counts nothing."""

    scope = "plan"

    def identity(self, request: Request) -> str | None:
        workspace = getattr(request._request, "tenant", None)
        if workspace is None or workspace.schema_name == "public":
            return None
        if not request._request.path_info.startswith(API_PATH_PREFIX):
            return None
        if not isinstance(request.user, ApiKeyPrincipal) or not settings.API_PLAN_RATE_LIMITS:
            return None
        return workspace.schema_name

    def rate(self, request: Request) -> str | None:
        return plan_rate_limit(workspace=request._request.tenant, name="api_requests")

    def counted(self, request: Request, *, limit: int, count: int, ttl: int, ends_at: float) -> None:
        request._request.api_rate_limit = ApiRateLimit(  # type: ignore[attr-defined]
            limit=limit, remaining=max(limit - count, 0), reset_at=math.ceil(ends_at),
        )
