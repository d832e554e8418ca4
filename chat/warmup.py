"""Warm the answer path of a fresh process (issue #22: the first question after a start took 2 s, the next ones
were fast): the knowledge floor's model, tokenizer and vector client (documents/warmup.py), the modules an answer
imports on first use (retrieval, answering, providers with LangChain), and the stemmer. Run in a background thread by
config/warmup.py; it touches no database and no workspace."""
from __future__ import annotations

import importlib
import time

ANSWER_MODULES = ("documents.retrieval", "chat.answering", "chat.providers", "chat.streaming", "snowballstemmer")


def answer_path_warm_up() -> dict[str, float]:
    from documents.warmup import knowledge_warm_up

    started = time.perf_counter()
    for name in ANSWER_MODULES:
        importlib.import_module(name)
    timings = {"imports": round((time.perf_counter() - started) * 1000, 1)}
    timings.update(knowledge_warm_up())
    started = time.perf_counter()
    from documents.retrieval import stems

    stems("Warming up the stemmer: returns, shipping and warranties")
    timings["stemmer"] = round((time.perf_counter() - started) * 1000, 1)
    return timings
