"""Sentence vectors for retrieval's sentence signals (documents/retrieval.py `sentence_signals`), cached per process.

    vectors = sentence_vectors_get(sentences=["Returns are free within 30 days.", ...])   # (n, dimension) float32

Embedding up to 40 sentences of the best chunks was the tail of a question's retrieval (docs/answers.md, "Lexical
ranking in PostgreSQL", latency): ~10 model calls for sentences the workspace asked about a minute ago. A sentence's
vector depends only on its text and the model, so it is kept here after its first use.

- **Per workspace, by construction**: an entry's key is (schema, workspace id, digest of model identity + text).
  Two workspaces with the same sentence have two entries; one never reads the other's, not even to learn that the
  other holds that text (a hit is faster than a miss). The workspace id makes a workspace re-created under the same
  slug (and so the same schema name) a stranger to the old one's entries. The text itself is not kept: its digest,
  its vector and its stemmed words (`workspace_text_cached`, which the sentence signals also use for stems).
- **Bounded**: least recently used entries go first beyond `RETRIEVAL_SENTENCE_CACHE_ENTRIES` (default 32,768
  entries, ~1.9 KB each for a 384-dimension vector and its key) or `RETRIEVAL_SENTENCE_CACHE_MB` (default 64) of
  vectors and stems, estimated per entry (a long sentence's stems can outweigh a vector).
- **Purged with the workspace**: the purge signal drops the workspace's entries in the purging process; in other
  processes they are unreachable (the workspace id is gone) and age out.
- **Survives `reindex`** when the model stays (same text, same vector: the key is the text), and is never wrong
  after a model change (the model's identity is in the key).
- **Kept in PostgreSQL too** (`documents_sentencevector`, one row per chunk and sentence digest, in the workspace's
  schema, deleted with its chunk): a sentence embedded by a question is written back there, and a process that has
  not seen the workspace yet reads it instead of embedding it again (~8 ms of CPU per sentence with the int8 MiniLM,
  most of a first visit's cost: issue #21). Small knowledge bases get every sentence stored at ingestion
  (`sentence_vectors_store`, up to `RETRIEVAL_SENTENCE_VECTORS_AT_INGESTION_MAX_CHUNKS` chunks in the workspace):
  their first question embeds nothing but itself. Large ones stay lazy: every sentence of every chunk embedded at
  ingestion would roughly double its embedding time, for the few chunks that questions actually reach.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from config.singletons import process_singleton
from documents.embedding import embedder, model_identity

DEFAULT_ENTRIES = 32768
DEFAULT_MB = 64
logger = logging.getLogger(__name__)


class SentenceVectorCache:
    """An LRU map (schema, workspace id, digest) -> value (a sentence's vector, its stems), safe to share between
    threads."""

    def __init__(self, *, capacity: int, budget_bytes: int | None = None) -> None:
        self.capacity = max(0, capacity)
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[str, int, bytes], Any] = OrderedDict()
        self._sizes: dict[tuple[str, int, bytes], int] = {}
        self.nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int, bytes]) -> Any:
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: tuple[str, int, bytes], vector: Any) -> None:
        if not self.capacity:
            return
        size = _size(vector)
        with self._lock:
            self.nbytes -= self._sizes.pop(key, 0)
            self._entries[key] = vector
            self._sizes[key] = size
            self.nbytes += size
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity or (
                    self.budget_bytes is not None and self.nbytes > self.budget_bytes and self._entries):
                gone, _ = self._entries.popitem(last=False)
                self.nbytes -= self._sizes.pop(gone, 0)

    def purge(self, *, schema_name: str) -> int:
        with self._lock:
            gone = [key for key in self._entries if key[0] == schema_name]
            for key in gone:
                del self._entries[key]
                self.nbytes -= self._sizes.pop(key, 0)
            return len(gone)

    def keys_for(self, *, schema_name: str) -> list[tuple[str, int, bytes]]:
        with self._lock:
            return [key for key in self._entries if key[0] == schema_name]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.nbytes = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


def _size(value: Any) -> int:
    """An entry's bytes, roughly: a vector's buffer, or a set of stems' strings and table, plus the key's ~150."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 250
    if isinstance(value, (frozenset, set, list, tuple)):
        return sys.getsizeof(value) + sum(sys.getsizeof(item) for item in value) + 150
    return sys.getsizeof(value) + 150


# The process's cache (created on first use with the configured capacity and budget).
sentence_vector_cache = process_singleton(lambda: SentenceVectorCache(
    capacity=getattr(settings, "RETRIEVAL_SENTENCE_CACHE_ENTRIES", DEFAULT_ENTRIES),
    budget_bytes=getattr(settings, "RETRIEVAL_SENTENCE_CACHE_MB", DEFAULT_MB) * 2**20))


def _workspace_key() -> tuple[str, int]:
    schema_name = getattr(connection, "schema_name", None) or "public"
    if schema_name == "public":
        raise ValueError("sentence vectors belong to a workspace, not to the public schema")
    tenant = getattr(connection, "tenant", None)
    return schema_name, int(getattr(tenant, "pk", None) or 0)


def workspace_text_cached(*, kind: bytes, texts: list[str], compute: Callable[[list[str]], Sequence[Any]]) -> list[Any]:
    """What `compute` makes of each text (`kind` names what, and what it depends on besides the text), for the
    current workspace: cached values as they are, the others computed in one call and kept. Values are shared:
    they must not be changed."""
    schema_name, workspace_id = _workspace_key()
    cache = sentence_vector_cache()
    prefix = kind + b"\0"
    keys = [(schema_name, workspace_id, hashlib.blake2b(prefix + text.encode(), digest_size=16).digest())
            for text in texts]
    found = [cache.get(key) for key in keys]
    missing = [index for index, value in enumerate(found) if value is None]
    if missing:
        for index, value in zip(missing, compute([texts[index] for index in missing]), strict=True):
            found[index] = value
            cache.put(keys[index], value)
    return found


def _key_digest(kind: bytes, text: str) -> bytes:
    return hashlib.blake2b(kind + b"\0" + text.encode(), digest_size=16).digest()


def _vector_kind(model: Any) -> bytes:
    return b"vector\0" + model_identity(model).encode()


def _vectors_embed(model: Any, texts: list[str]) -> list[np.ndarray]:
    vectors = np.asarray(model.embed(texts), dtype=np.float32)
    # Each row its own array: a row view kept in the cache would keep its whole batch alive.
    rows = [row.copy() for row in vectors]
    for row in rows:
        row.flags.writeable = False
    return rows


def _vector_decode(raw: bytes | memoryview) -> np.ndarray:
    vector = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32)
    vector.flags.writeable = False
    return vector


def _vectors_stored(*, chunk_ids: list[int], digests: list[bytes]) -> dict[bytes, np.ndarray]:
    """The stored vectors among these chunks' sentences with these digests (the current workspace's schema)."""
    if not chunk_ids or not digests:
        return {}
    # Inside a caller's transaction, a savepoint: a failed read must not break the caller's work.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute("SELECT digest, vector FROM documents_sentencevector WHERE chunk_id = ANY(%s) "
                       "AND digest = ANY(%s)", [sorted(set(chunk_ids)), list(set(digests))])
        return {bytes(digest): _vector_decode(raw) for digest, raw in cursor.fetchall()}


def _vectors_write(rows: list[tuple[int, bytes, np.ndarray]]) -> None:
    """Keep (chunk id, digest, vector) rows; rows of chunks deleted meanwhile are skipped, existing ones kept."""
    if not rows:
        return
    sql = ("INSERT INTO documents_sentencevector (chunk_id, digest, vector) "
           "SELECT x.c, x.d, x.v FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[]) AS x(c, d, v) "
           "WHERE EXISTS (SELECT 1 FROM documents_chunk c WHERE c.id = x.c) ON CONFLICT DO NOTHING")
    rows = sorted(rows, key=lambda row: (row[0], row[1]))  # one lock order for concurrent writers
    params = [[r[0] for r in rows], [r[1] for r in rows], [np.asarray(r[2], dtype="<f4").tobytes() for r in rows]]
    # Inside a caller's transaction, a savepoint: a failed write must not break the caller's work.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def sentence_vectors_get(*, sentences: list[str], chunk_ids: list[int] | None = None) -> np.ndarray:
    """The current workspace's vectors of these sentences, (n, dimension) float32, L2-normalised: from this
    process's cache, else from the rows stored with their chunks (`chunk_ids[i]`: the chunk sentence i comes from),
    else embedded in one call, then kept in both."""
    model = embedder()
    kind = _vector_kind(model)
    if chunk_ids is None:
        found = workspace_text_cached(kind=kind, texts=sentences, compute=lambda texts: _vectors_embed(model, texts))
    else:
        if len(chunk_ids) != len(sentences):
            raise ValueError("one chunk id per sentence")
        schema_name, workspace_id = _workspace_key()
        cache = sentence_vector_cache()
        digests = [_key_digest(kind, text) for text in sentences]
        found = [cache.get((schema_name, workspace_id, digest)) for digest in digests]
        missing = [index for index, value in enumerate(found) if value is None]
        if missing:
            try:
                stored = _vectors_stored(chunk_ids=[chunk_ids[i] for i in missing],
                                         digests=[digests[i] for i in missing])
            except DatabaseError:  # the table is an optimisation: embed instead
                logger.warning("stored sentence vectors unreadable", exc_info=True)
                stored = {}
            for index in missing:
                found[index] = stored.get(digests[index])
            embed = [index for index in missing if found[index] is None]
            if embed:
                for index, vector in zip(embed, _vectors_embed(model, [sentences[i] for i in embed]), strict=True):
                    found[index] = vector
                written: dict[bytes, tuple[int, bytes, np.ndarray]] = {}
                for index in embed:
                    written.setdefault(digests[index], (chunk_ids[index], digests[index], found[index]))
                try:
                    _vectors_write(list(written.values()))
                except DatabaseError:  # e.g. a chunk deleted between the check and the insert: embedded next time
                    logger.warning("sentence vectors not stored", exc_info=True)
            for index in missing:
                cache.put((schema_name, workspace_id, digests[index]), found[index])
    if not found:
        return np.zeros((0, model.dimension), dtype=np.float32)
    return np.vstack(found)


def sentence_vectors_store(*, chunks: list[tuple[int, str]]) -> int:
    """Embed and keep every sentence of these (chunk id, text) of the current workspace (at ingestion); how many
    sentences were embedded. Sentences already stored for the same chunk are not embedded again."""
    from documents.retrieval import passage_sentences

    model = embedder()
    kind = _vector_kind(model)
    units = [(chunk_id, sentence, _key_digest(kind, sentence)) for chunk_id, text in chunks
             for sentence in passage_sentences(text)]
    if not units:
        return 0
    have: set[tuple[int, bytes]] = set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT chunk_id, digest FROM documents_sentencevector WHERE chunk_id = ANY(%s)",
                       [sorted({chunk_id for chunk_id, _, _ in units})])
        have = {(chunk_id, bytes(digest)) for chunk_id, digest in cursor.fetchall()}
    todo = [(chunk_id, sentence, digest) for chunk_id, sentence, digest in units if (chunk_id, digest) not in have]
    texts = list(dict.fromkeys(sentence for _, sentence, _ in todo))  # a sentence repeated across chunks: once
    vectors = dict(zip(texts, _vectors_embed(model, texts), strict=True)) if texts else {}
    _vectors_write(list({(chunk_id, digest): (chunk_id, digest, vectors[sentence])
                         for chunk_id, sentence, digest in todo}.values()))
    return len(texts)


def sentence_vectors_purge(*, schema_name: str) -> int:
    """Forget the workspace's sentence vectors in this process; how many there were."""
    return sentence_vector_cache().purge(schema_name=schema_name)
