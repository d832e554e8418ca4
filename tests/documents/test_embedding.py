"""The local all-MiniLM-L6-v2 embedder (int8 ONNX from PyPI) and the OpenAI-compatible backend (fake server)."""
from __future__ import annotations

import json
import math
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from documents.embedding import (
    MINILM_DIMENSION,
    MINILM_MAX_TOKENS,
    EmbeddingUnavailable,
    MiniLMOnnxEmbedder,
    OpenAICompatibleEmbedder,
    embedder,
    length_batches,
)

REFERENCE = json.loads((Path(__file__).resolve().parent / "fixtures" / "minilm_fp32_reference.json").read_text())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


# --- local model ---------------------------------------------------------------------------------------------

def test_default_embedder_is_a_lazy_process_wide_singleton() -> None:
    first = embedder()
    assert first is embedder()
    assert isinstance(first, MiniLMOnnxEmbedder)
    assert (first.name, first.dimension, first.max_tokens) == ("all-MiniLM-L6-v2-int8", 384, 256)
    assert first.threads == len(os.sched_getaffinity(0))


def test_vectors_match_the_original_fp32_model() -> None:
    vectors = embedder().embed(REFERENCE["texts"])
    for vector, reference in zip(vectors, REFERENCE["vectors"], strict=True):
        assert len(vector) == MINILM_DIMENSION
        assert cosine(vector, reference) >= 0.998


def test_vectors_are_unit_length_float_lists_in_input_order() -> None:
    texts = ["short", "a somewhat longer sentence about billing and invoices", "x " * 300, "medium length text"]
    batched = embedder().embed(texts)
    assert all(isinstance(value, float) for value in batched[0])
    for text, vector in zip(texts, batched, strict=True):
        assert abs(norm(vector) - 1.0) < 1e-4
        alone = embedder().embed([text])[0]
        assert cosine(vector, alone) > 0.9999  # batching and padding do not change a text's vector


def test_batches_group_texts_of_about_the_same_length_longest_first() -> None:
    lengths = [100, 256, 250, 30, 245, 200, 256, 99, 98]
    batches = length_batches(lengths, 3, 0.95)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # every text exactly once
    assert all(len(batch) <= 3 for batch in batches)
    for batch in batches:
        longest = lengths[batch[0]]
        assert all(lengths[i] <= longest and lengths[i] >= 0.95 * longest for i in batch)
    assert [[lengths[i] for i in batch] for batch in batches] == [[256, 256, 250], [245], [200], [100, 99, 98], [30]]


def test_similar_questions_are_closer_than_unrelated_text() -> None:
    reset, forgot, weather = embedder().embed(
        ["How do I reset my password?", "I forgot my password, how can I change it?", "It is sunny in Lisbon today."]
    )
    assert cosine(reset, forgot) > cosine(reset, weather) + 0.3


def test_the_model_reads_at_most_256_word_pieces() -> None:
    model = embedder()
    sentence = "the cat sat on a mat while dogs ran in the park and birds sang near old trees".split()
    words = [sentence[n % len(sentence)] for n in range(400)]  # every word is one word piece
    window = " ".join(words[:MINILM_MAX_TOKENS - 2])  # plus [CLS] and [SEP]: exactly what the model reads
    assert model.count_tokens(window) == MINILM_MAX_TOKENS - 2
    beyond = window + " " + " ".join(f"unrelated{n} matters" for n in range(60))
    shorter = " ".join(words[:MINILM_MAX_TOKENS - 40])
    full, cut, extended, short = model.embed([" ".join(words), window, beyond, shorter])
    assert cosine(full, cut) > 0.9999
    assert cosine(cut, extended) > 0.9999  # text past the window changes nothing
    assert cosine(cut, short) < 0.9999  # while text inside it does


def test_token_counts_leave_out_special_tokens() -> None:
    model = embedder()
    assert model.count_tokens("hello world") == 2
    assert model.count_tokens("") == 0
    assert model.count_tokens("tokenization") == 2  # word pieces, not words


def test_embedding_nothing_is_nothing() -> None:
    assert embedder().embed([]) == []


def test_unknown_backend_is_a_configuration_error() -> None:
    with override_settings(EMBEDDING_BACKEND="word2vec"), pytest.raises(ImproperlyConfigured):
        embedder()


# --- OpenAI-compatible backend on a fake server ----------------------------------------------------------------

class FakeEmbeddings:
    """An /embeddings endpoint that answers deterministic, unnormalised vectors in shuffled order."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.dimension = 8
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if fake.status != 200:
                    payload = json.dumps({"error": {"message": "nope"}}).encode()
                    self.send_response(fake.status)
                else:
                    data = [{"object": "embedding", "index": i, "embedding": fake.vector(text)}
                            for i, text in enumerate(body["input"])]
                    answer = {"object": "list", "data": list(reversed(data)), "model": body["model"]}
                    payload = json.dumps(answer).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def vector(self, text: str) -> list[float]:
        return [float(len(text) + i) for i in range(self.dimension)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai() -> Iterator[FakeEmbeddings]:
    fake = FakeEmbeddings()
    yield fake
    fake.close()


def openai_settings(url: str, **extra: object) -> override_settings:
    values = {"EMBEDDING_BACKEND": "openai", "EMBEDDING_URL": url, "EMBEDDING_API_KEY": "sk-test",
              "EMBEDDING_MODEL": "text-embedding-test", "EMBEDDING_BATCH_SIZE": 3, "EMBEDDING_DIMENSION": 0}
    values.update(extra)
    return override_settings(**values)


def test_openai_backend_batches_authenticates_orders_and_normalises(fake_openai: FakeEmbeddings) -> None:
    texts = [f"text number {n}" * (n + 1) for n in range(7)]
    with openai_settings(fake_openai.url):
        model = embedder()
        assert isinstance(model, OpenAICompatibleEmbedder)
        assert model is embedder()
        vectors = model.embed(texts)
    assert [len(r["body"]["input"]) for r in fake_openai.requests] == [3, 3, 1]
    assert {r["path"] for r in fake_openai.requests} == {"/v1/embeddings"}
    assert {r["auth"] for r in fake_openai.requests} == {"Bearer sk-test"}
    assert {r["body"]["model"] for r in fake_openai.requests} == {"text-embedding-test"}
    for text, vector in zip(texts, vectors, strict=True):
        assert abs(norm(vector) - 1.0) < 1e-5
        assert cosine(vector, fake_openai.vector(text)) > 0.99999
    assert model.dimension == 8
    assert model.name == "openai:text-embedding-test"
    assert model.max_tokens == 256


def test_openai_backend_learns_its_dimension_when_asked(fake_openai: FakeEmbeddings) -> None:
    fake_openai.dimension = 5
    with openai_settings(fake_openai.url):
        assert embedder().dimension == 5
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (429, True), (401, False), (400, False)])
def test_openai_backend_errors_say_whether_to_retry(fake_openai: FakeEmbeddings, status: int, transient: bool) -> None:
    fake_openai.status = status
    with openai_settings(fake_openai.url), pytest.raises(EmbeddingUnavailable) as caught:
        embedder().embed(["hello"])
    assert caught.value.code == "embedding_unavailable"
    assert caught.value.transient is transient
    assert caught.value.details["status"] == status


def test_openai_backend_unreachable_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with openai_settings(f"http://127.0.0.1:{port}/v1"), pytest.raises(EmbeddingUnavailable) as caught:
        embedder().embed(["hello"])
    assert caught.value.transient is True


def test_openai_backend_refuses_vectors_of_the_wrong_size(fake_openai: FakeEmbeddings) -> None:
    with openai_settings(fake_openai.url, EMBEDDING_DIMENSION=16), pytest.raises(EmbeddingUnavailable) as caught:
        embedder().embed(["hello"])
    assert caught.value.transient is False


def test_openai_backend_needs_its_settings() -> None:
    with override_settings(EMBEDDING_BACKEND="openai", EMBEDDING_URL="", EMBEDDING_MODEL=""):
        with pytest.raises(ImproperlyConfigured):
            embedder()
