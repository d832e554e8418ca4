"""REST API throttles (DRF's DEFAULT_THROTTLE_CLASSES): one budget per API key, per signed-in user, and per
anonymous client address (config.client_ip), each a fixed window of settings.API_THROTTLE_RATES[scope].

Counted in the default cache's Redis under keys that carry the workspace schema (cache.make_key, config.cache): a
workspace's traffic never spends another's budget. A fixed-window counter is one INCR per request, where DRF's
SimpleRateThrottle would keep (and rewrite) a list of every request's timestamp. Over the limit DRF raises
Throttled, rendered as 429 `rate_limited` with Retry-After (config.errors).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from accounts.authentication import ApiKeyPrincipal
from config.client_ip import client_ip
from config.throttle import parse_rate

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

    def allow_request(self, request: Request, view: APIView) -> bool:
        ident = self.identity(request)
        if ident is None:
            return True
        limit, window = parse_rate(settings.API_THROTTLE_RATES[self.scope])
        # The window opens at the first request of the caller (not on a clock boundary); make_key adds the schema.
        key = cache.make_key(f"api-throttle:{self.scope}:{ident}")
        try:
            with cache._cache.get_client(write=True).pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, window, nx=True)
                pipe.ttl(key)
                count, _expire_set, ttl = pipe.execute()
        except RedisError:
            # Fail open: with Redis away the API still serves what it can (reads from PostgreSQL, docs/faults.md);
            # a throttle must not turn an outage of the counters into 500s.
            logger.warning("api throttle: counters unreachable; request allowed", exc_info=True)
            return True
        if count > limit:
            self._wait = max(int(ttl), 1)
            return False
        return True

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
