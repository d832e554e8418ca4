"""Small workspaces searched exactly, in the process, from the vectors kept in their own schema (issue #21).

    hits = resident_query(schema_name="ws_acme", embedding=question_vector, limit=20)   # None: ask the vector store

Every chunk's vector is written to `documents_chunkvector` in the workspace's schema, in the transaction that writes
the chunk rows, by whoever also writes it to the vector store (documents/vectors.py stays the vector store's adapter
and needs no database): the ingestion pipeline, website syncs, workspace import. A chunk without its row only makes
the workspace go to the vector store. A vector store keeps an index per workspace in the memory of every process that
searched it (Chroma: ~2.6 MB each, however few vectors it holds, plus a load of ~10 ms on a first visit); for a
workspace of a few hundred chunks an exact search over a matrix is both cheaper and smaller (a 12-chunk workspace:
~19 KB). So for workspaces with at most `VECTORS_RESIDENT_MAX_CHUNKS` chunks:

- **Current by construction**: every statement that changes the workspace's vectors bumps `documents_vectorversion`
  (a trigger; its token is drawn when the row is made, so a workspace re-created under the same schema name is a
  stranger). Each search reads the version — retrieval reads it with its term lookup (`documents.lexical.
  lexical_terms`, in the current schema) and hands it over (`version_read`); other callers read it here — and
  reloads the matrix when it changed; the matrix and the version it belongs to are read in one statement (one
  snapshot), and that version, not the handed-over one, is what the entry keeps.
- **Complete or not used**: the matrix is used only when every chunk of the workspace has its row (a workspace
  indexed before these rows existed, or mid-ingestion, is searched by the vector store, as before).
- **Bounded**: least recently used matrices go first beyond `VECTORS_RESIDENT_BUDGET_MB` per process.
- **Per workspace**: an entry's key is the schema; its content is only ever read back for that schema with the
  same token, and every query here names the schema's tables explicitly (never the search_path).

Scores are cosine similarities (the vectors are L2-normalised), as the vector store's.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from config.singletons import process_singleton
from documents.vectors import VectorHit, vector_collection_name

logger = logging.getLogger(__name__)

# How long a workspace found too large (or incomplete) for the resident search goes to the vector store without
# its version being read: it costs a round trip per search otherwise, and the vector store answers it correctly.
NOT_SERVED_SECONDS = 30.0


@dataclass(frozen=True)
class _Entry:
    version: tuple[int, str]  # (version, token) of documents_vectorversion
    chunk_ids: np.ndarray | None  # None: not served here (too many chunks, or not every chunk has its vector)
    document_ids: np.ndarray | None
    matrix: np.ndarray | None  # (n, dimension) float32
    at: float = 0.0  # time.monotonic() when read

    @property
    def nbytes(self) -> int:
        if self.matrix is None:
            return 64
        return int(self.matrix.nbytes + self.chunk_ids.nbytes + self.document_ids.nbytes) + 64


class ResidentVectors:
    """An LRU map schema -> the workspace's vectors at a version, bounded in bytes; safe to share between threads."""

    def __init__(self, *, budget_bytes: int) -> None:
        self.budget_bytes = max(0, budget_bytes)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.loads = 0  # matrices read from PostgreSQL (for tests and benches)

    def get(self, schema_name: str, version: tuple[int, str] | None = None) -> _Entry | None:
        """The workspace's entry (at this version, when given)."""
        with self._lock:
            entry = self._entries.get(schema_name)
            if entry is None or (version is not None and entry.version != version):
                return None
            self._entries.move_to_end(schema_name)
            return entry

    def put(self, schema_name: str, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(schema_name, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.budget_bytes:
                return
            self._entries[schema_name] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.budget_bytes and self._entries:
                _name, gone = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes

    def purge(self, *, schema_name: str) -> bool:
        with self._lock:
            old = self._entries.pop(schema_name, None)
            if old is not None:
                self._bytes -= old.nbytes
            return old is not None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.loads = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, schema_name: str) -> bool:
        return schema_name in self._entries


# The process's cache (created on first use with the configured budget).
resident_vectors = process_singleton(lambda: ResidentVectors(budget_bytes=settings.VECTORS_RESIDENT_BUDGET_MB * 2**20))


def _table(schema_name: str, table: str) -> str:
    vector_collection_name(schema_name)  # refuses anything that is not a workspace schema
    return f"{connection.ops.quote_name(schema_name)}.{connection.ops.quote_name(table)}"


def _version(schema_name: str) -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT version, token::text FROM {_table(schema_name, 'documents_vectorversion')}")
        row = cursor.fetchone()
    return (int(row[0]), row[1]) if row else (0, "")


def _not_served(version: tuple[int, str]) -> _Entry:
    return _Entry(version=version, chunk_ids=None, document_ids=None, matrix=None, at=time.monotonic())


def _load(schema_name: str, version: tuple[int, str]) -> _Entry:
    chunks, vectors = _table(schema_name, "documents_chunk"), _table(schema_name, "documents_chunkvector")
    most = settings.VECTORS_RESIDENT_MAX_CHUNKS
    with connection.cursor() as cursor:
        # Counted up to one past the limit: a large workspace costs no full count.
        cursor.execute(f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {chunks} LIMIT %s) c), "
                       f"(SELECT count(*) FROM (SELECT 1 FROM {vectors} LIMIT %s) v)", [most + 1, most + 1])
        chunk_count, vector_count = cursor.fetchone()
        if chunk_count != vector_count or vector_count > most:
            return _not_served(version)
        # The rows, the version they belong to and the chunk count, in one statement (one snapshot): a copy is
        # complete when it has a row per chunk of that snapshot.
        # The version row by scalar subqueries, not a join: see documents.lexical.lexical_terms (JIT).
        version_table = _table(schema_name, 'documents_vectorversion')
        cursor.execute(
            f"SELECT (SELECT version FROM {version_table}), (SELECT token::text FROM {version_table}), c.id, "
            f"c.document_id, x.vector, (SELECT count(*) FROM {chunks}) "
            f"FROM {vectors} x JOIN {chunks} c ON c.id = x.chunk_id ORDER BY c.id")
        rows = cursor.fetchall()
    if not rows:  # kept at the version read before the rows: a write since then makes the next search reload
        return _Entry(version=version, chunk_ids=np.zeros(0, dtype=np.int64),
                      document_ids=np.zeros(0, dtype=np.int64), matrix=np.zeros((0, 0), dtype=np.float32))
    found = (int(rows[0][0] or 0), rows[0][1] or "")
    if len(rows) != rows[0][5] or len(rows) > most:
        return _not_served(found)
    matrix = np.vstack([np.frombuffer(bytes(row[4]), dtype="<f4") for row in rows]).astype(np.float32)
    matrix.flags.writeable = False
    return _Entry(version=found, chunk_ids=np.array([row[2] for row in rows], dtype=np.int64),
                  document_ids=np.array([row[3] for row in rows], dtype=np.int64), matrix=matrix)


def resident_query(
    *, schema_name: str, embedding: Any, limit: int, version_read: tuple[int, str] | None = None,
) -> list[VectorHit] | None:
    """The `limit` nearest chunks of a small workspace, best first (ties by chunk id); None when the workspace is
    not served here (the caller asks the vector store). Never raises for the copy's sake: a copy that can't be read
    or searched (say, vectors of another dimension after a model change) sends the workspace to the vector store.
    `version_read`: documents_vectorversion's (version, token) in `schema_name`, when the caller read it along with
    something else during this question (retrieval's term lookup); else it is read here."""
    if settings.VECTORS_RESIDENT_MAX_CHUNKS <= 0 or settings.VECTORS_RESIDENT_BUDGET_MB <= 0:
        return None
    cache = resident_vectors()
    known = cache.get(schema_name)
    if known is not None and known.matrix is None and time.monotonic() - known.at < NOT_SERVED_SECONDS:
        return None
    version: tuple[int, str] | None = None
    try:
        # Inside a caller's transaction, a savepoint: a failed read must not break the caller's work.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            version = version_read if version_read is not None else _version(schema_name)
            entry = known if known is not None and known.version == version else None
            if entry is None:
                entry = _load(schema_name, version)
                cache.loads += 1
                cache.put(schema_name, entry)
        if entry.matrix is None:
            return None
        if limit <= 0 or not len(entry.chunk_ids):
            return []
        scores = entry.matrix @ np.asarray(embedding, dtype=np.float32)
    except (DatabaseError, ValueError):
        logger.warning("resident vectors of %s unusable; asking the vector store", schema_name, exc_info=True)
        cache.put(schema_name, _not_served(version or (-1, "")))
        return None
    count = min(limit, len(scores))
    top = np.argpartition(-scores, count - 1)[:count] if count < len(scores) else np.arange(len(scores))
    order = sorted(top.tolist(), key=lambda i: (-float(scores[i]), int(entry.chunk_ids[i])))
    return [VectorHit(chunk_id=int(entry.chunk_ids[i]), document_id=int(entry.document_ids[i]),
                      score=float(scores[i])) for i in order]


def resident_vectors_write(*, schema_name: str, chunk_ids: list[int], embeddings: list[list[float]]) -> None:
    """Keep (or replace) these chunks' vectors in the workspace's schema; chunks deleted meanwhile are skipped."""
    if not chunk_ids:
        return
    vectors = _table(schema_name, "documents_chunkvector")
    sql = (f"INSERT INTO {vectors} AS v (chunk_id, vector) "
           f"SELECT x.c, x.v FROM unnest(%s::bigint[], %s::bytea[]) AS x(c, v) "
           f"WHERE EXISTS (SELECT 1 FROM {_table(schema_name, 'documents_chunk')} c WHERE c.id = x.c) "
           f"ON CONFLICT (chunk_id) DO UPDATE SET vector = EXCLUDED.vector WHERE v.vector <> EXCLUDED.vector")
    rows = sorted(zip((int(c) for c in chunk_ids), embeddings, strict=True), key=lambda row: row[0])  # lock order
    with connection.cursor() as cursor:
        cursor.execute(sql, [[c for c, _ in rows], [np.asarray(v, dtype="<f4").tobytes() for _, v in rows]])
