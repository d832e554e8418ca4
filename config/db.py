"""Database plumbing: transactions retried after a deadlock, and several statements sent in one round trip.

## Retried transactions

PostgreSQL resolves a deadlock by aborting one of the transactions in the cycle (SQLSTATE 40P01; 40001 for a
serialization failure). The work itself was fine, so the right answer is to run that transaction again:
`atomic_with_retry` does, a few times with a jittered backoff. Inside an outer transaction it cannot (the outer one
is aborted too), so it just runs once and leaves the error to whoever owns the outer transaction. What is still
aborted after the retries reaches the error handler as a 503 with reason `transaction_conflict` (config/errors.py),
never a 500.

## One round trip

`statements_run` sends several statements at once; `statements_batch` / `statements_defer` collect the writes of a
piece of work that may wait for its end (see the notes above them).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import OperationalError, connection, router, transaction
from django.db.models import Model, QuerySet
from django.db.models.sql import InsertQuery, UpdateQuery

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


# --- several statements, one round trip ---------------------------------------------------------------------------
# An answer writes a handful of small rows (the question, its seq, the answer, its events); each statement Django sends
# is a round trip, and a transaction adds two more (BEGIN, COMMIT). With client-side binding (Django's default for
# psycopg 3) a query string may hold several statements: PostgreSQL runs them in order as ONE implicit transaction
# (all or nothing, like an atomic block), and psycopg returns each one's result. The SQL comes from Django's own
# compilers, so field conversions, defaults and `auto_now` behave as with `create()` / `update()`.
Statement = tuple[str, list[Any]]


def insert_statement(instance: Model, *, returning: tuple[str, ...] = ("id",)) -> Statement:
    """`INSERT ... RETURNING <returning>` of an unsaved `instance` (its pre_save hooks run now: auto_now_add
    timestamps are set on it). No model signals are sent: use it for models nobody listens to."""
    meta = instance._meta
    fields = [field for field in meta.local_concrete_fields if field is not meta.auto_field]
    query = InsertQuery(type(instance))
    query.insert_values(fields, [instance], raw=False)
    compiler = query.get_compiler(using=router.db_for_write(type(instance)))
    compiler.returning_fields = [meta.get_field(name) for name in returning]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


def update_statement(queryset: QuerySet[Any], *, returning: tuple[str, ...] = (), **values: Any) -> Statement:
    """The `UPDATE` that `queryset.update(**values)` would send (expressions such as F() and Greatest() allowed),
    with `RETURNING` the columns of `returning` (as they are after the update)."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    if returning:
        meta = queryset.model._meta
        quote = connection.ops.quote_name
        sql += " RETURNING " + ", ".join(quote(meta.get_field(name).column) for name in returning)
    return sql, list(params)


def statements_run(statements: list[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run `statements` in one round trip, all or nothing (one implicit transaction, or the caller's open one);
    the rows each returned, in order. Statements that return nothing give []."""
    statements = [(sql, params) for sql, params in statements if sql]
    if not statements:
        return []
    sql = ";\n".join(sql for sql, _params in statements)
    params = [param for _sql, statement_params in statements for param in statement_params]
    results: list[list[tuple[Any, ...]]] = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            results.append(cursor.fetchall() if cursor.description else [])
            if not cursor.nextset():
                break
    return results


# A batch: writes that may wait until the end of a piece of work (an answer's analytics events, its bookkeeping) are
# collected on this thread and sent together, in one round trip, when the outermost `statements_batch()` block ends.
_batch = threading.local()


@contextmanager
def statements_batch() -> Iterator[None]:
    """Collect what `statements_defer` is given inside the block and run it in one round trip at its end (nested
    blocks join the outermost). A statement that fails takes the batch's others with it (one transaction): batch
    only writes whose loss is acceptable, and whose senders would have swallowed their own failure."""
    if getattr(_batch, "pending", None) is not None:
        yield
        return
    pending: list[tuple[Statement, bool]] = []
    _batch.pending = pending
    try:
        yield
    except BaseException:
        _batch.pending = None
        if pending:  # the work failed: its deferred writes go with it, and its error is the one that surfaces
            logger.warning("db: %d deferred statements dropped with a failed batch", len(pending))
        raise
    else:
        _batch.pending = None
        if pending:
            statements = [statement for statement, _durable in pending]
            if not any(durable for _statement, durable in pending) and not connection.in_atomic_block:
                # Nothing here is worth waiting for a WAL flush (a crash may lose the last few hundred milliseconds
                # of them); the setting ends with this batch's own implicit transaction.
                statements.insert(0, ("SET LOCAL synchronous_commit TO OFF", []))
            statements_run(statements)


@contextmanager
def statements_collected() -> Iterator[list[Statement]]:
    """Like `statements_batch`, but what `statements_defer` is given inside the block is handed to the caller (the
    yielded list, filled when the block ends) instead of run: the caller sends it with a round trip of its own
    (chat.deferred carries a question's writes to the answer's credit step). Inside an open batch, the statements
    join that batch and the list stays empty."""
    collected: list[Statement] = []
    if getattr(_batch, "pending", None) is not None:
        yield collected
        return
    pending: list[tuple[Statement, bool]] = []
    _batch.pending = pending
    try:
        yield collected
    finally:
        _batch.pending = None
    collected.extend(statement for statement, _durable in pending)


def statements_defer(statement: Statement, *, durable: bool = True) -> bool:
    """Add `statement` to this thread's open batch; False when no batch is open (the caller runs it itself).
    `durable=False`: the statement may commit without waiting for the WAL flush."""
    pending = getattr(_batch, "pending", None)
    if pending is None:
        return False
    pending.append((statement, durable))
    return True
