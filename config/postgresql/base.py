"""The database backend: django-tenants' PostgreSQL backend, whose `SET search_path` travels with the statement
that needs it instead of in a round trip of its own.

django-tenants sends `SET search_path = <workspace>, public` on the first cursor after every change of workspace: a
request, a socket message or a task in a workspace pays one extra round trip before its first query. With
client-side binding (Django's default for psycopg 3) one query string may hold several statements, so the SET is
kept on the new cursor and sent in front of its first statement, in the same string; the cursor then moves past the
SET's (empty) result, and the caller sees only its own statement's.

What the connection believes is set follows what PostgreSQL ran: the workspace's path counts as set only once a SET
carrying it has succeeded and is still the one wanted (`_search_path_sent`), and not while one is on its way. Each
cursor keeps the path it was made for and, before every statement, sends it again when the connection does not know
PostgreSQL has it: a failed combined string is rolled back whole (one implicit transaction, or the caller's
transaction, which Django then rolls back and django-tenants forgets the path), and the same cursor, or the next one,
sends the SET again. (This also closes a gap of django-tenants' own: a cursor made inside a transaction after its
SET, used after that transaction rolled back, ran in the previous path.)

Named (server-side) cursors, server-side binding, `executemany`, `copy`, `stream` and statements other than SELECT /
INSERT / UPDATE / DELETE / WITH send the SET on its own first, as before.
"""
from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.base import Cursor as DjangoCursor
from django_tenants.postgresql_backend import base as tenants_base
from django_tenants.utils import quote_schema_name


# Only queries and data changes carry the SET in front: a multi-statement string runs as one transaction block, which
# some statements refuse (CREATE DATABASE, VACUUM, CREATE INDEX CONCURRENTLY ...). Anything else sends the SET alone.
_CARRIES_THE_SET = re.compile(r"\s*(?:SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def set_search_path_sql(search_paths: list[str]) -> str:
    # Every part was checked by django-tenants (_get_cursor_search_paths) and is quoted; its pattern allows "%",
    # which Cursor.execute doubles when the statement has parameters (our slugs never make one).
    return "SET search_path = " + ",".join(quote_schema_name(s) for s in search_paths)


class Cursor(DjangoCursor):
    """psycopg's client-side binding cursor (Django's) that makes sure PostgreSQL has its workspace's search_path
    before each statement, sending the SET in front of it when PostgreSQL may not."""

    _search_paths: list[str] | None = None  # the path the cursor was made for, for its whole life
    _owner: DatabaseWrapper | None = None

    def _search_path_needed(self) -> list[str] | None:
        """The cursor's path, unless the connection knows PostgreSQL has it. Kept for the cursor's life: a SET rolled
        back (a failed statement, ROLLBACK, ROLLBACK TO SAVEPOINT) clears the connection's mark, and the same cursor
        then sends it again before its next statement."""
        search_paths = self._search_paths
        if search_paths is None or self._owner.search_path_set_schemas == search_paths:
            return None
        return search_paths

    def _flush_search_path(self) -> None:
        """Send the SET on its own, when needed (for what cannot carry it in front)."""
        search_paths = self._search_path_needed()
        if search_paths is None:
            return
        self._owner.search_path_set_schemas = None  # unknown until PostgreSQL answers
        try:
            super().execute(set_search_path_sql(search_paths))
        except BaseException:
            self._owner._search_path_sent(None)
            raise
        self._owner._search_path_sent(search_paths)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Cursor:
        search_paths = self._search_path_needed()
        if search_paths is None:
            return super().execute(query, params, **kwargs)
        if not isinstance(query, str) or not _CARRIES_THE_SET.match(query):  # DDL, a Composed query: the SET alone
            self._flush_search_path()
            return super().execute(query, params, **kwargs)
        set_sql = set_search_path_sql(search_paths)
        if params is not None:  # client-side binding reads "%" anywhere in the string
            set_sql = set_sql.replace("%", "%%")
        self._owner.search_path_set_schemas = None  # unknown until PostgreSQL answers
        try:
            super().execute(f"{set_sql};\n{query}", params, **kwargs)
        except BaseException:
            self._owner._search_path_sent(None)
            raise
        self.nextset()  # past the SET's result, to the caller's statement's
        self._owner._search_path_sent(search_paths)
        return self

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        self._flush_search_path()
        return super().executemany(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_search_path()
        return super().copy(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self._flush_search_path()
        return super().stream(*args, **kwargs)


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if params.get("cursor_factory") is DjangoCursor:  # not with server-side binding: one statement per query
            params["cursor_factory"] = Cursor
        return params

    def _handle_search_path(self, cursor: Any = None) -> None:
        raw = getattr(cursor, "cursor", None)
        if not isinstance(raw, Cursor):  # a named cursor (cursor is None) or another cursor class: django-tenants' way
            super()._handle_search_path(cursor)
            return
        if not self.schema_name:
            raise ImproperlyConfigured("Database schema not set. Did you forget to call set_schema() or set_tenant()?")
        raw._search_paths = self._get_cursor_search_paths()
        raw._owner = self

    def _search_path_sent(self, search_paths: list[str] | None) -> None:
        """A SET carrying `search_paths` has run (None: it may not have). It counts as set only while it is still
        the path wanted: a cursor made before a change of workspace may send the old one after a newer cursor sent
        the new one, and then the next cursor must send the SET again."""
        wanted = search_paths is not None and search_paths == self._get_cursor_search_paths()
        self.search_path_set_schemas = search_paths if wanted else None
