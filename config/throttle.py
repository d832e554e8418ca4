"""Fixed-window counters in Redis for platform-wide throttles (login, signup) that must not depend on the host.

Workspace-scoped limits go through the cache (whose keys carry the schema); these deliberately don't, so trying
passwords on several workspace hosts counts against one budget.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

_RATE_RE = re.compile(r"^(\d+)/(\d*)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    match = _RATE_RE.match(rate)
    if not match:
        raise ValueError(f"bad rate {rate!r}; use e.g. '10/15m'")
    count, mult, unit = match.groups()
    return int(count), int(mult or 1) * _UNIT[unit]


@dataclass
class ThrottleState:
    allowed: bool
    retry_after: int


def _client():  # the Redis client behind Django's RedisCache
    return cache._cache.get_client(write=True)


def _key(scope: str, ident: str) -> str:
    digest = hashlib.sha256(ident.lower().encode()).hexdigest()[:32]
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}:throttle:{scope}:{digest}"


def throttle_check(scope: str, ident: str, rate: str) -> ThrottleState:
    limit, window = parse_rate(rate)
    key = _key(scope, ident)
    client = _client()
    count = int(client.get(key) or 0)
    if count >= limit:
        return ThrottleState(False, max(int(client.ttl(key)), 1))
    return ThrottleState(True, 0)


def throttle_hit(scope: str, ident: str, rate: str) -> None:
    _limit, window = parse_rate(rate)
    key = _key(scope, ident)
    client = _client()
    with client.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, window, nx=True)
        pipe.execute()


def throttle_reset(scope: str, ident: str) -> None:
    _client().delete(_key(scope, ident))
