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
- **Bounded**: least recently used entries go first beyond `RETRIEVAL_SENTENCE_CACHE_ENTRIES` (default 8,192
  entries: at most ~15 MB with 384-dimension float32 vectors and their keys; stems are smaller).
- **Purged with the workspace**: the purge signal drops the workspace's entries in the purging process; in other
  processes they are unreachable (the workspace id is gone) and age out.
- **Survives `reindex`** when the model stays (same text, same vector: the key is the text), and is never wrong
  after a model change (the model's identity is in the key).
Lazily built rather than at ingestion: every sentence of every chunk embedded at ingestion would roughly double its
embedding time and store ~10 vectors per chunk, for the few chunks that questions actually reach.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

DEFAULT_ENTRIES = 8192


class SentenceVectorCache:
    """An LRU map (schema, workspace id, digest) -> value (a sentence's vector, its stems), safe to share between
    threads."""

    def __init__(self, *, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[tuple[str, int, bytes], Any] = OrderedDict()
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
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def purge(self, *, schema_name: str) -> int:
        with self._lock:
            gone = [key for key in self._entries if key[0] == schema_name]
            for key in gone:
                del self._entries[key]
            return len(gone)

    def keys_for(self, *, schema_name: str) -> list[tuple[str, int, bytes]]:
        with self._lock:
            return [key for key in self._entries if key[0] == schema_name]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


_cache: SentenceVectorCache | None = None
_cache_lock = threading.Lock()


def sentence_vector_cache() -> SentenceVectorCache:
    """The process's cache (created on first use with the configured capacity)."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = SentenceVectorCache(capacity=getattr(settings, "RETRIEVAL_SENTENCE_CACHE_ENTRIES",
                                                              DEFAULT_ENTRIES))
    return _cache


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


def sentence_vectors_get(*, sentences: list[str]) -> np.ndarray:
    """The current workspace's vectors of these sentences, (n, dimension) float32, L2-normalised: cached ones as
    they are, the others embedded in one call and kept."""
    from documents.embedding import embedder
    from documents.pipeline import model_identity

    model = embedder()

    def embed(texts: list[str]) -> list[np.ndarray]:
        vectors = np.asarray(model.embed(texts), dtype=np.float32)
        vectors.flags.writeable = False
        return list(vectors)

    found = workspace_text_cached(kind=b"vector\0" + model_identity(model).encode(), texts=sentences, compute=embed)
    if not found:
        return np.zeros((0, model.dimension), dtype=np.float32)
    return np.vstack(found)


def sentence_vectors_purge(*, schema_name: str) -> int:
    """Forget the workspace's sentence vectors in this process; how many there were."""
    return sentence_vector_cache().purge(schema_name=schema_name)
