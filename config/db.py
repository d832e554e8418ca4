"""Transactions that PostgreSQL may abort to break a deadlock or a serialization conflict.

PostgreSQL resolves a deadlock by aborting one of the transactions in the cycle (SQLSTATE 40P01; 40001 for a
serialization failure). The work itself was fine, so the right answer is to run that transaction again:
`atomic_with_retry` does, a few times with a jittered backoff. Inside an outer transaction it cannot (the outer one
is aborted too), so it just runs once and leaves the error to whoever owns the outer transaction. What is still
aborted after the retries reaches the error handler as a 503 with reason `transaction_conflict` (config/errors.py),
never a 500.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
RETRY_ATTEMPTS = 3
RETRY_BASE_DELAY = 0.05


def is_transaction_conflict(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) is PostgreSQL aborting a transaction to break a deadlock or conflict."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in CONFLICT_SQLSTATES:
            return True
        current = current.__cause__ or current.__context__
    return False


def atomic_with_retry(work: Callable[[], T], *, attempts: int = RETRY_ATTEMPTS, using: str | None = None) -> T:
    """Run `work` in a transaction; when PostgreSQL aborts it as a deadlock or serialization victim, run it again
    (at most `attempts` times in all). `work` must not have effects outside the database before it returns (use
    transaction.on_commit for those), since an aborted attempt is thrown away."""
    if transaction.get_connection(using).in_atomic_block:
        return work()
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic(using=using):
                return work()
        except OperationalError as exc:
            if attempt == attempts or not is_transaction_conflict(exc):
                raise
            logger.warning("transaction aborted by the database (%s); trying again (%s of %s)",
                           getattr(exc.__cause__, "sqlstate", "?"), attempt + 1, attempts)
            time.sleep(RETRY_BASE_DELAY * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")
