"""Cache keys always carry the schema of the workspace they belong to, so one workspace never reads another's."""
from __future__ import annotations

from django.db import connection


def current_schema() -> str:
    return getattr(connection, "schema_name", None) or "public"


def workspace_cache_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:{current_schema()}:{key}"
