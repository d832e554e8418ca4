"""The vector index: one Chroma collection per workspace, named from its schema.

Every function takes the workspace's schema name explicitly: there is no "current" collection, so code can
never query another workspace's vectors by accident. We always pass our own embeddings; Chroma's default
embedding function (which downloads a model) is never used. Scores are cosine similarities.

Embedded mode (no CHROMA_URL): a PersistentClient at CHROMA_PATH. Chroma keeps each collection's HNSW index in
the memory of the process that loaded it and does not notice writes made by other processes (measured: a web
process kept answering from the index it had loaded before a worker indexed new documents). So writes take a
per-collection file lock and bump a generation file next to the data, and a process that finds another
generation than the one it loaded reopens its client first (about 50 ms for 11,000 vectors). Server mode
(CHROMA_URL, `chroma run`) has one index for everybody and needs none of this.

Memory (embedded mode): every collection a process has queried or written stays loaded in it, and each one costs at
least ~2.6 MB however few vectors it holds (hnswlib allocates 65,536 locks per index): measured 2.6 MB per workspace
touched, never released. Chroma's own bound (the HNSW cache, sized RLIMIT_NOFILE / 5 by chromadb) cannot be used:
in chromadb 1.5 an index it evicted fails to load again in the same process ("Error creating hnsw segment reader:
Nothing found on disk", chroma-core/chroma#7765). So this module keeps the account itself: each collection loaded
by the current client is charged its estimated index size, and when loading one more would pass
CHROMA_MEMORY_BUDGET_MB (or reach Chroma's cache capacity) the client is closed (which frees every index it loaded,
and its files) and reopened first; freed memory is handed back to the OS with malloc_trim. docs/operations.md has
the measurements.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.client import SharedSystemClient
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError
from django.conf import settings

_SCHEMA = re.compile(r"^[a-z][a-z0-9_]{0,60}[a-z0-9]$")
COLLECTION_PREFIX = "kb_"
# What one loaded collection costs at least (measured with chromadb 1.5.9: 2.6 MB each for collections of 5 vectors),
# and per vector: the float32 values plus about 150 bytes of graph links and labels.
INDEX_FIXED_BYTES = 2_700_000
INDEX_BYTES_PER_VECTOR_OVERHEAD = 150


@dataclass(frozen=True)
class VectorHit:
    chunk_id: int
    document_id: int
    score: float  # cosine similarity, 1 = same direction


def vector_collection_name(schema_name: str) -> str:
    """The collection of one workspace. Refuses the public schema and anything that is not a schema name."""
    if not isinstance(schema_name, str) or not _SCHEMA.match(schema_name) or schema_name == "public":
        raise ValueError(f"not a workspace schema: {schema_name!r}")
    return COLLECTION_PREFIX + schema_name


def vectors_upsert(*, schema_name: str, ids: list[str], embeddings: list[list[float]],
                   metadatas: list[dict[str, Any]], documents: list[str]) -> None:
    """Add or replace vectors. Each metadata carries at least chunk_id and document_id (ints)."""
    if not (len(ids) == len(embeddings) == len(metadatas) == len(documents)):
        raise ValueError("ids, embeddings, metadatas and documents must have the same length")
    for metadata in metadatas:
        if not isinstance(metadata.get("chunk_id"), int) or not isinstance(metadata.get("document_id"), int):
            raise ValueError("every metadata needs integer chunk_id and document_id")
    if not ids:
        return
    with _store.collection(vector_collection_name(schema_name), write=True, create=True) as (client, collection):
        step = client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            collection.upsert(ids=[str(i) for i in ids[start:end]], embeddings=embeddings[start:end],
                              metadatas=metadatas[start:end], documents=documents[start:end])


def vectors_delete_document(*, schema_name: str, document_id: int) -> None:
    with _store.collection(vector_collection_name(schema_name), write=True) as (_client, collection):
        if collection is not None:
            collection.delete(where={"document_id": int(document_id)})


def vectors_get(*, schema_name: str, ids: list[str]) -> dict[str, list[float]]:
    """The stored embeddings of these vector ids (those that exist)."""
    if not ids:
        return {}
    with _store.collection(vector_collection_name(schema_name)) as (_client, collection):
        if collection is None:
            return {}
        found = collection.get(ids=[str(i) for i in ids], include=["embeddings"])
    embeddings = found.get("embeddings")
    if embeddings is None:
        return {}
    return {vector_id: [float(x) for x in vector] for vector_id, vector in zip(found["ids"], embeddings, strict=True)}


def vectors_get_with_metadata(*, schema_name: str, ids: list[str]) -> dict[str, tuple[list[float], dict[str, Any]]]:
    """The stored embeddings and metadata of these vector ids (those that exist)."""
    if not ids:
        return {}
    with _store.collection(vector_collection_name(schema_name)) as (_client, collection):
        if collection is None:
            return {}
        found = collection.get(ids=[str(i) for i in ids], include=["embeddings", "metadatas"])
    embeddings = found.get("embeddings")
    if embeddings is None:
        return {}
    return {vector_id: ([float(x) for x in vector], dict(metadata or {}))
            for vector_id, vector, metadata in zip(found["ids"], embeddings, found["metadatas"], strict=True)}


def vectors_delete_ids(*, schema_name: str, ids: list[str]) -> None:
    if not ids:
        return
    with _store.collection(vector_collection_name(schema_name), write=True) as (_client, collection):
        if collection is not None:
            collection.delete(ids=[str(i) for i in ids])


def vectors_query(*, schema_name: str, embedding: list[float], limit: int,
                  where: dict[str, Any] | None = None) -> list[VectorHit]:
    """The `limit` nearest chunks of this workspace, best first."""
    name = vector_collection_name(schema_name)
    if limit <= 0:
        return []
    with _store.collection(name) as (_client, collection):
        if collection is None:
            return []
        result = collection.query(query_embeddings=[list(embedding)], n_results=limit, where=where or None,
                                  include=["metadatas", "distances"])
    hits = []
    for metadata, distance in zip(result["metadatas"][0], result["distances"][0], strict=True):
        hits.append(VectorHit(chunk_id=int(metadata["chunk_id"]), document_id=int(metadata["document_id"]),
                              score=1.0 - float(distance)))
    return hits


def vectors_count(*, schema_name: str, document_id: int | None = None) -> int:
    with _store.collection(vector_collection_name(schema_name)) as (_client, collection):
        if collection is None:
            return 0
        if document_id is None:
            return collection.count()
        return len(collection.get(where={"document_id": int(document_id)}, include=[])["ids"])


def vectors_drop_collection(*, schema_name: str) -> bool:
    """Remove the workspace's whole collection; True when there was one."""
    name = vector_collection_name(schema_name)
    with _store.collection(name, write=True, drop=True) as (client, collection):
        if collection is None:
            return False
        client.delete_collection(name)
        return True


def vectors_export(*, schema_name: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every vector of the workspace ({id, embedding, metadata, document}), for workspace export."""
    offset = 0
    while True:
        with _store.collection(vector_collection_name(schema_name)) as (_client, collection):
            if collection is None:
                return
            page = collection.get(limit=batch, offset=offset, include=["embeddings", "metadatas", "documents"])
        if not page["ids"]:
            return
        for index, vector_id in enumerate(page["ids"]):
            yield {"id": vector_id, "embedding": [float(x) for x in page["embeddings"][index]],
                   "metadata": page["metadatas"][index], "document": page["documents"][index]}
        offset += len(page["ids"])


class _Store:
    """The process's Chroma client for the current settings, kept fresh across processes in embedded mode."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._client: ClientAPI | None = None
        self._key: tuple | None = None
        self._seen: dict[str, str] = {}  # collection -> generation this process's client has loaded
        self._loaded: dict[str, int] = {}  # collection -> bytes charged for it, in the current client
        self._client_pid: int | None = None
        self.reopens = 0  # clients closed to stay within the budget (for tests and benches)

    @contextmanager
    def collection(self, name: str, *, write: bool = False, create: bool = False,
                   drop: bool = False) -> Iterator[tuple[ClientAPI, Any]]:
        with self._lock:
            client = self._current_client()
            if settings.CHROMA_URL:
                yield client, _collection(client, name, create=create)
                return
            with self._write_lock(name) if write else nullcontext():
                generation = self._generation(name)
                if name in self._seen and self._seen[name] != generation:
                    client = self._reopen()
                elif self._full(name):
                    self.reopens += 1
                    client = self._reopen()
                # Read before the client loads the index, so it holds at least this generation.
                self._seen.setdefault(name, generation)
                collection = None
                try:
                    collection = _collection(client, name, create=create)
                    yield client, collection
                finally:
                    if drop:  # leave nothing of the workspace behind; others see "" and reopen
                        (self._folder() / name).unlink(missing_ok=True)
                        (self._folder() / f".{name}.lock").unlink(missing_ok=True)
                        self._seen[name] = ""
                        self._loaded.pop(name, None)
                    else:
                        if write:
                            # We hold the write lock, so nobody wrote between our check and here: our client is
                            # current.
                            self._seen[name] = self._bump(name)
                        if collection is not None and (write or name not in self._loaded):
                            self._loaded[name] = _index_bytes(collection)

    def _current_client(self) -> ClientAPI:
        key = (settings.CHROMA_URL, str(settings.CHROMA_PATH), os.getpid())
        if self._client is not None and self._key == key:
            return self._client
        self._key, self._seen = key, {}
        if settings.CHROMA_URL:
            url = urlparse(settings.CHROMA_URL)
            self._client = chromadb.HttpClient(host=url.hostname or "localhost",
                                               port=url.port or (443 if url.scheme == "https" else 8000),
                                               ssl=url.scheme == "https", settings=_chroma_settings())
            return self._client
        self._folder().mkdir(parents=True, exist_ok=True)
        return self._reopen()

    def _full(self, name: str) -> bool:
        """Must the client be closed before `name` is used? When loading it would pass the budget or fill Chroma's own
        cache (whose evictions break), or when the collections loaded already pass the budget (they grew)."""
        others = len(self._loaded) - (name in self._loaded)
        if not others:
            return False
        charged = sum(self._loaded.values()) + (0 if name in self._loaded else INDEX_FIXED_BYTES)
        if name not in self._loaded and len(self._loaded) + 1 > _chroma_cache_capacity() // 2:
            return True
        budget = settings.CHROMA_MEMORY_BUDGET_MB * 2**20
        return budget > 0 and charged > budget

    def _reopen(self) -> ClientAPI:
        # Nothing is loaded in the new client: each collection's generation is recorded when it is first used (read
        # before Chroma loads it), so a write that lands meanwhile is noticed next time.
        self._seen, self._loaded = {}, {}
        if self._client is not None and self._client_pid == os.getpid():
            # close() stops the client's system, which frees its indexes and closes their files; a client inherited
            # across fork is only dropped (its Rust runtime's threads don't exist in this process).
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 — a client that can't close cleanly is dropped all the same
                pass
        self._client = None
        SharedSystemClient.clear_system_cache()  # the only way to make Chroma drop the indexes it loaded
        _memory_release()
        # Creating a client runs Chroma's SQLite migrations, which don't guard against another process doing the same:
        # two processes on a fresh folder failed with "table collections already exists" (measured: 4 of 48 starts
        # of 6 simultaneous processes). One client creation at a time per folder; later ones find nothing to migrate.
        with self._file_lock(self._folder() / ".client.lock"):
            self._client = chromadb.PersistentClient(path=str(settings.CHROMA_PATH), settings=_chroma_settings())
        self._client_pid = os.getpid()
        return self._client

    def _folder(self) -> Path:
        return Path(settings.CHROMA_PATH) / "generations"

    def _generation(self, name: str) -> str:
        try:
            return (self._folder() / name).read_text()
        except FileNotFoundError:
            return ""

    def _bump(self, name: str) -> str:
        generation = uuid.uuid4().hex
        temporary = self._folder() / f".{name}.{generation}"
        temporary.write_text(generation)
        os.replace(temporary, self._folder() / name)
        return generation

    def _write_lock(self, name: str) -> AbstractContextManager[None]:
        return self._file_lock(self._folder() / f".{name}.lock")

    @staticmethod
    @contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _chroma_settings() -> ChromaSettings:
    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def _index_bytes(collection: Any) -> int:
    """The estimated memory of a collection's index once loaded: a fixed part and one per vector."""
    try:
        count = collection.count()
        dimension = collection.get_model().dimension or 0
    except Exception:  # noqa: BLE001 — an estimate; the fixed part is charged whatever happens
        return INDEX_FIXED_BYTES
    return INDEX_FIXED_BYTES + count * (4 * dimension + INDEX_BYTES_PER_VECTOR_OVERHEAD)


def _chroma_cache_capacity() -> int:
    """How many HNSW indexes chromadb keeps before it evicts one (its RustBindingsAPI: RLIMIT_NOFILE // 5). We stay
    under half of it: a loaded index keeps 4 files open, and the process needs files for everything else too."""
    return max(2, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 5)


def _memory_release() -> None:
    """Hand the memory freed by closed indexes back to the OS. Without it glibc keeps it in its arenas, and a process
    that reopens its client keeps growing (measured: +490 MB over 900 loads with 50 loaded at a time, flat with it)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def _collection(client: ClientAPI, name: str, *, create: bool):
    if create:
        return client.get_or_create_collection(name, configuration={"hnsw": {"space": "cosine"}},
                                               embedding_function=None)
    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


_store = _Store()


def vectors_client_warm() -> None:
    """Create this process's vector-store client now (Chroma's start-up, its SQLite migrations check, the Rust
    bindings), so the first search does not pay for it (documents/warmup.py)."""
    with _store._lock:
        _store._current_client()
