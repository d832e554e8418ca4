"""A circuit breaker per answer provider and workspace, kept in the shared cache (Redis).

Closed: calls go through; consecutive failures are counted and a success resets the count. After
`failure_threshold` consecutive failures the circuit opens for `cooldown` seconds (doubling on each reopening, up to
`MAX_COOLDOWN`); a 429 opens it at once for the vendor's Retry-After (there is no point asking again sooner). Open:
the provider is skipped. Once the cooldown has passed the circuit is half-open: exactly one caller (an atomic
`cache.add` on a probe key) tries the provider; its success closes the circuit, its failure opens it again.

Cache keys carry the workspace schema (config/cache.py), so one workspace's failing vendor key never trips another
workspace's circuit. Two processes recording a failure at the same instant may count it once; a breaker only needs
the order of magnitude.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache

MAX_COOLDOWN = 600.0
STATE_TTL = 24 * 3600


class BreakerState:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    state: str
    retry_in: float = 0.0


def _state_key(provider_key: str) -> str:
    return f"answers:breaker:{provider_key}"


def _probe_key(provider_key: str) -> str:
    return f"answers:breaker-probe:{provider_key}"


def _load(provider_key: str) -> dict:
    return cache.get(_state_key(provider_key)) or {"failures": 0, "open_until": 0.0, "trips": 0}


def breaker_state(*, provider_key: str) -> str:
    """closed, open or half_open, as the next caller would find it."""
    record = _load(provider_key)
    if not record["open_until"]:
        return BreakerState.CLOSED
    return BreakerState.OPEN if time.time() < record["open_until"] else BreakerState.HALF_OPEN


def breaker_allow(*, provider_key: str, probe_timeout: float = 60.0) -> BreakerDecision:
    """May we call this provider now? In half-open state only the one caller that wins the probe may."""
    record = _load(provider_key)
    if not record["open_until"]:
        return BreakerDecision(True, BreakerState.CLOSED)
    remaining = record["open_until"] - time.time()
    if remaining > 0:
        return BreakerDecision(False, BreakerState.OPEN, retry_in=remaining)
    # The probe key expires by itself, so a prober that died mid-call does not keep the circuit half-open forever.
    if cache.add(_probe_key(provider_key), 1, timeout=max(1, int(probe_timeout))):
        return BreakerDecision(True, BreakerState.HALF_OPEN)
    return BreakerDecision(False, BreakerState.HALF_OPEN)


def breaker_record_success(*, provider_key: str) -> None:
    record = _load(provider_key)
    if record["failures"] or record["open_until"] or record["trips"]:
        cache.delete(_state_key(provider_key))
    cache.delete(_probe_key(provider_key))


def breaker_record_failure(
    *, provider_key: str, failure_threshold: int, cooldown: float, retry_after: float | None = None
) -> str:
    """Count a failure; returns the state after it."""
    record = _load(provider_key)
    now = time.time()
    was_open = bool(record["open_until"])  # a failed half-open probe
    record["failures"] += 1
    opens = retry_after is not None or was_open or record["failures"] >= max(1, failure_threshold)
    if opens:
        record["trips"] += 1
        wait = min(MAX_COOLDOWN, cooldown * (2 ** (record["trips"] - 1)))
        if retry_after is not None:
            wait = min(MAX_COOLDOWN, max(wait if was_open else 0.0, retry_after))
        record["open_until"] = now + wait
    cache.set(_state_key(provider_key), record, timeout=STATE_TTL)
    cache.delete(_probe_key(provider_key))
    return BreakerState.OPEN if opens else BreakerState.CLOSED


def breaker_reset(*, provider_key: str) -> None:
    cache.delete_many([_state_key(provider_key), _probe_key(provider_key)])
