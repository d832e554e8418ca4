"""Rate limits of the widget's doors: per IP, per embed and per workspace, on the shared Redis.

HTTP goes through django-ratelimit (`get_usage`) on the default cache, whose keys carry the workspace schema
(config.cache), so "per IP" is per IP on this workspace and "per workspace" is a single counter. The WebSocket has no
request object, so it counts in Redis directly with the same fixed-window arithmetic (`socket_limits_take`).

A limit hit raises RateLimited: HTTP renders it as 429 with Retry-After, the socket as an `error` event with
`code: "rate_limited"` and `retry_after` (and the widget shows a friendly sentence).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from typing import Any

import redis
from redis import asyncio as aioredis

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage

from config.errors import ErrorCode, RateLimited
from config.throttle import parse_rate

logger = logging.getLogger(__name__)


def _embed_key(public_key: str) -> Any:
    return lambda _group, _request: public_key


def _workspace_key(_group: str, _request: HttpRequest) -> str:
    return "all"  # the cache key already names the workspace's schema


def http_limits_take(request: HttpRequest, *, public_key: str, group: str = "widget") -> None:
    """Count one widget request against the per-IP, per-embed and per-workspace budgets; RateLimited when any is
    spent."""
    checks = (
        ("ip", "ip", settings.WIDGET_RATE_HTTP_IP),
        ("embed", _embed_key(public_key), settings.WIDGET_RATE_HTTP_EMBED),
        ("workspace", _workspace_key, settings.WIDGET_RATE_HTTP_WORKSPACE),
    )
    _take(request, group, checks)


def session_limit_take(request: HttpRequest) -> None:
    """Visitor sessions (token minting) per IP: a tighter budget than page views."""
    _take(request, "widget.session", (("ip", "ip", settings.WIDGET_RATE_SESSION_IP),))


def _take(request: HttpRequest, group: str, checks: tuple[tuple[str, Any, str], ...]) -> None:
    """Narrowest budget first; a request refused by one budget is not counted against the broader ones, so one
    flooding client can't spend everyone's per-embed or per-workspace budget."""
    for name, key, rate in checks:
        usage = get_usage(request, group=f"{group}.{name}", key=key, rate=rate, increment=True)
        if usage and usage["should_limit"]:
            raise RateLimited("Too many requests to the chat widget; please wait a moment.",
                              retry_after=max(1, int(usage["time_left"])))


# --- WebSocket -------------------------------------------------------------------------------------------------
def _socket_key(schema: str, scope: str, ident: str, window: int) -> str:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "ccgpt")
    digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
    return f"{prefix}:widget:{schema}:{scope}:{digest}:{window}"


# KEYS: the counters, narrowest first. ARGV: for each, its limit and its window length (seconds).
# Counts into each until one is over its limit; returns the 1-based index of that one (0: all allowed).
_TAKE_SCRIPT = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, tonumber(ARGV[2 * i]) + 5) end
  if count > tonumber(ARGV[2 * i - 1]) then return i end
end
return 0
"""


_socket_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def _socket_client() -> aioredis.Redis:
    """One client per event loop, on a pool that waits for a free connection rather than failing: a thousand
    sockets asking at once queue for a moment instead of erroring."""
    loop = asyncio.get_running_loop()
    client = _socket_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=50, timeout=20,
                                                        socket_connect_timeout=5, socket_timeout=10)
        client = _socket_clients[loop] = aioredis.Redis(connection_pool=pool)
    return client


async def socket_limits_take(*, schema: str, checks: list[tuple[str, str, str | None]]) -> int:
    """Count one event against each (scope, identity, rate) budget, narrowest first, in one Redis round trip; a
    refused event is not counted against the broader budgets. Returns 0 when all allow it, else the seconds until
    the spent budget's window ends. A rate of None is no limit."""
    spent = await socket_limits_spent(schema=schema, checks=checks)
    return spent[1] if spent else 0


async def socket_limits_spent(*, schema: str, checks: list[tuple[str, str, str | None]]) -> tuple[str, int] | None:
    """socket_limits_take that also says which budget is spent: (its scope, seconds until its window ends), or
    None when all allow the event."""
    now = time.time()
    keys: list[str] = []
    args: list[int] = []
    ends: list[float] = []
    scopes: list[str] = []
    for scope, ident, rate in checks:
        if not rate:
            continue
        scopes.append(scope)
        limit, period = parse_rate(rate)
        window = int(now // period)
        keys.append(_socket_key(schema, scope, ident, window))
        args += [limit, period]
        ends.append((window + 1) * period)
    if not keys:
        return None
    try:
        spent = int(await _socket_client().eval(_TAKE_SCRIPT, len(keys), *keys, *args))
    except (redis.RedisError, OSError):
        # Redis unreachable: the conversation itself can't work either; don't add a second failure on top.
        logger.warning("widget: rate limits unavailable (Redis)", exc_info=True)
        return None
    if not spent:
        return None
    return scopes[spent - 1], max(1, int(ends[spent - 1] - now + 0.999))


def daily_answer_checks(*, visitor: str, public_key: str) -> list[tuple[str, str, str | None]]:
    """The daily answer caps of the widget (settings WIDGET_ANSWERS_PER_VISITOR_DAY / _PER_EMBED_DAY; 0 = none),
    visitor first, as socket_limits_spent checks. Days are UTC days."""
    per_visitor, per_embed = settings.WIDGET_ANSWERS_PER_VISITOR_DAY, settings.WIDGET_ANSWERS_PER_EMBED_DAY
    return [("answers.visitor", visitor, f"{per_visitor}/d" if per_visitor > 0 else None),
            ("answers.embed", public_key, f"{per_embed}/d" if per_embed > 0 else None)]


def daily_cap_error(scope: str, retry_after: int) -> RateLimited:
    if scope == "answers.visitor":
        return RateLimited("You have asked as many questions as we can answer today; please come back tomorrow.",
                           code=ErrorCode.VISITOR_DAILY_LIMIT, retry_after=retry_after)
    return RateLimited("This chat has answered as many questions as it can today; please try again tomorrow.",
                       code=ErrorCode.EMBED_DAILY_LIMIT, retry_after=retry_after)


def visitor_counters_erase(sender: Any = None, *, visitor_id: str, **_: Any) -> int:
    """chat.signals.visitor_erasing: delete the erased visitor's daily answer counters in this workspace (their key
    holds a digest of the visitor id). Raises on a Redis failure, which rolls the erasure back."""
    from django.db import connection

    from chat.events import sync_client

    client = sync_client()
    pattern = _socket_key(connection.schema_name, "answers.visitor", visitor_id, 0)[:-1] + "*"
    keys = list(client.scan_iter(match=pattern, count=500))
    return client.delete(*keys) if keys else 0
