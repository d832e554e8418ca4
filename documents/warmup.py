"""What the first question (and the first upload) of a process would otherwise load on the request path: the
embedding model (onnxruntime session and its first run), the model's tokenizer and vocabulary, the vector
store's client, the parsers and LangChain's splitter. config/warmup.py runs it in a background thread when a web or worker process starts."""
from __future__ import annotations

import time


def knowledge_warm_up() -> dict[str, float]:
    """Load and exercise the knowledge floor's lazy parts; returns milliseconds per part. Touches no database."""
    from documents.embedding import embedder, wordpiece_counter, wordpiece_words
    from documents.vectors import vectors_client_warm

    timings: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        started = time.perf_counter()
        fn()
        timings[name] = round((time.perf_counter() - started) * 1000, 1)

    # What the first upload of a worker process needs too (issue #20: 1.8-2.6 s of a worker's first document).
    timed("parsers", lambda: __import__("documents.parsers.pdf", fromlist=["pdf_parse"]))
    timed("chunking", lambda: __import__("documents.chunking", fromlist=["document_chunk"]))  # LangChain's splitter
    timed("tokenizer", lambda: (wordpiece_counter()("warm up"), wordpiece_words()))
    # A first inference also allocates the session's buffers: embed a question-sized text once.
    timed("embedder", lambda: embedder().embed(["How long do I have to return an item?"]))
    timed("vector_client", vectors_client_warm)
    return timings
