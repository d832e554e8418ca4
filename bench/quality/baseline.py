"""The naive baseline of `python -m bench quality`: the LangChain tutorial pipeline over the same pages.

Each page's plain text (HTML: text content without scripts and styles; the shop's Markdown, CSV and the DOCX / PDF
sources as written), RecursiveCharacterTextSplitter(1,000 characters, 200 overlap), langchain-chroma with the same
embedding model as ours (so only the pipeline differs), top-k by similarity. One persisted Chroma collection per
corpus under DATA_DIR/bench-quality-baseline-chroma/<name> (one folder each, so corpora can be prepared in parallel
processes), rebuilt only when the corpus's chunks changed.
"""
from __future__ import annotations

import fcntl
import hashlib
import time
from pathlib import Path
from typing import Any

from bench.quality.corpora import Corpus, page_text


def _embeddings() -> Any:
    from langchain_core.embeddings import Embeddings

    from documents.embedding import embedder

    class SameModelEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder().embed(list(texts))

        def embed_query(self, text: str) -> list[float]:
            return embedder().embed([text])[0]

    return SameModelEmbeddings()


def baseline_index(corpus: Corpus, pages: dict[str, Path]) -> tuple[Any, int]:
    """(the corpus's Chroma store, its chunk count)."""
    from django.conf import settings
    from langchain_core.documents import Document as LCDocument
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    folder = Path(settings.DATA_DIR) / "bench-quality-baseline-chroma" / corpus.name
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    documents = [LCDocument(page_content=page_text(page, path), metadata={"source": page})
                 for page, path in pages.items()]
    chunks = splitter.split_documents(documents)
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk.metadata["source"].encode() + b"\0" + chunk.page_content.encode() + b"\0")
    # The collection's name carries the chunks' digest: the same chunks reuse the stored vectors.
    name = f"{corpus.name}-{digest.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{corpus.name}.lock", "w") as lock:  # one builder per corpus at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _store_fill(folder, name, chunks, corpus.name), len(chunks)


def _store_fill(folder: Path, name: str, chunks: list[Any], corpus_name: str) -> Any:
    from langchain_chroma import Chroma

    store = Chroma(collection_name=name, embedding_function=_embeddings(), persist_directory=str(folder),
                   collection_metadata={"hnsw:space": "cosine"})
    if store._collection.count() != len(chunks):
        store.delete_collection()
        store = Chroma(collection_name=name, embedding_function=_embeddings(), persist_directory=str(folder),
                       collection_metadata={"hnsw:space": "cosine"})
        for start in range(0, len(chunks), 256):
            store.add_documents(chunks[start:start + 256])
        client = store._client
        for collection in client.list_collections():  # older versions of this corpus's chunks
            other = getattr(collection, "name", collection)
            if other.startswith(f"{corpus_name}-") and other != name:
                client.delete_collection(other)
    return store


def baseline_rank(store: Any, question: str, *, depth: int) -> tuple[list[str], list[str], float]:
    """(pages of the top `depth` chunks in order, their texts, ms)."""
    started = time.perf_counter()
    hits = store.similarity_search(question, k=depth)
    ms = (time.perf_counter() - started) * 1000
    return [doc.metadata["source"] for doc in hits], [doc.page_content for doc in hits], ms
