"""Cache keys always carry the schema of the workspace they belong to, so one workspace never reads another's."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_override = threading.local()


def current_schema() -> str:
    schema = getattr(_override, "schema", None)
    if schema:
        return schema
    return getattr(connection, "schema_name", None) or "public"


@contextmanager
def schema_keys(schema_name: str) -> Iterator[None]:
    """Cache keys of `schema_name` inside the block, whatever schema the connection is in (work deferred to a
    transaction's commit, which may run after the connection moved to another schema)."""
    previous = getattr(_override, "schema", None)
    _override.schema = schema_name
    try:
        yield
    finally:
        _override.schema = previous


def workspace_cache_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:{current_schema()}:{key}"
