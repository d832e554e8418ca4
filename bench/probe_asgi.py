"""Our ASGI application with counters, for bench/answer_cost.py: every PostgreSQL round trip the process makes, by
statement kind, read over HTTP at /__probe__/ (GET: the counters; POST: the counters, then zero them).

    uvicorn bench.probe_asgi:application --port 8001 --ws-per-message-deflate false

What counts as a round trip: each statement Django sends (Django's execute wrappers, installed on every connection
the process opens, in every thread), each transaction's BEGIN and its COMMIT or ROLLBACK (psycopg sends BEGIN before
the first statement of a transaction and COMMIT/ROLLBACK at its end; a transaction that ran no statement sends
neither), and each new connection (startup, authentication and Django's session settings: counted once each, as
`connect`). Redis commands are counted outside this process (MONITOR on the bench's Redis db).
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from typing import Any

from config.asgi import application as _application  # noqa: E402  (sets Django up)
from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_WORDS = re.compile(r'^\s*(\w+)(?:.*?\b(?:FROM|INTO|UPDATE)\s+"?([\w.]+)"?(?:\."?(\w+)"?)?)?', re.S | re.I)


def _kind(sql: str) -> str:
    if ";" in sql:  # several statements in one round trip (config.db.statements_run)
        return " + ".join(_kind(part) for part in sql.split(";") if part.strip())
    match = _WORDS.match(sql)
    if not match:
        return sql[:40]
    verb = match.group(1).upper()
    if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return verb
    table = match.group(3) or match.group(2) or ""
    return f"{verb} {table}".strip()


def _count(key: str, n: int = 1) -> None:
    with _lock:
        _counts[key] += n


_trace: list[str] | None = [] if os.environ.get("PROBE_TRACE") else None


def _execute_wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    _count("statements")
    _count(f"sql:{_kind(sql)}")
    if _trace is not None:
        with _lock:
            _trace.append(f"{threading.current_thread().name}: {' '.join(sql.split())[:160]}")
    return execute(sql, params, many, context)


def _in_transaction(wrapper: BaseDatabaseWrapper) -> bool:
    raw = wrapper.connection
    if raw is None:
        return False
    import psycopg

    return raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


_original_commit, _original_rollback = BaseDatabaseWrapper._commit, BaseDatabaseWrapper._rollback


def _commit(self: BaseDatabaseWrapper) -> Any:
    if _in_transaction(self):
        _count("transactions")  # its BEGIN
        _count("commits")
        if _trace is not None:
            with _lock:
                _trace.append(f"{threading.current_thread().name}: COMMIT")
    return _original_commit(self)


def _rollback(self: BaseDatabaseWrapper) -> Any:
    if _in_transaction(self):
        _count("transactions")
        _count("rollbacks")
    return _original_rollback(self)


BaseDatabaseWrapper._commit = _commit  # type: ignore[method-assign]
BaseDatabaseWrapper._rollback = _rollback  # type: ignore[method-assign]


def _on_connect(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    _count("connects")
    if _execute_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_execute_wrapper)


connection_created.connect(_on_connect, weak=False)


def snapshot(reset: bool = False) -> dict[str, Any]:
    with _lock:
        counts = dict(_counts)
        if _trace is not None:
            counts["trace"] = list(_trace)
        if reset:
            _counts.clear()
            if _trace is not None:
                _trace.clear()
    statements = counts.get("statements", 0)
    transactions = counts.get("transactions", 0)
    return {
        "round_trips": statements + 2 * transactions + counts.get("connects", 0),
        "statements": statements, "transactions": transactions, "connects": counts.get("connects", 0),
        "commits": counts.get("commits", 0), "rollbacks": counts.get("rollbacks", 0),
        **({"trace": counts["trace"]} if "trace" in counts else {}),
        "by_statement": dict(sorted(((k[4:], v) for k, v in counts.items() if k.startswith("sql:")),
                                    key=lambda kv: -kv[1])),
    }


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope.get("path") == "/__probe__/":
        body = json.dumps(snapshot(reset=scope.get("method") == "POST")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await _application(scope, receive, send)
