"""`python -m bench.quality signals [NAME ...]`: the coverage signals of every non-sealed question, one JSON line
each, to bench/results/quality_signals.jsonl — what the refusal decision is fitted on (fit halves) and checked
against (eval halves). The sealed corpus is refused."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.quality.corpora import CORPORA, corpus_files, corpus_index, history_turns, questions_load

RESULTS = Path(__file__).resolve().parent.parent / "results"


def question_signals(item: dict[str, Any]) -> dict[str, Any]:
    from chat.answering import prompt_injection_detect, question_parts_split
    from documents import retrieval

    history = history_turns(item)
    query = retrieval.retrieval_query_build(question=item["question"], history=history)
    found = retrieval.knowledge_retrieve(query=query, limit=5)
    row: dict[str, Any] = {
        "id": item["id"], "kind": item["kind"], "category": item.get("category", ""), "split": item["split"],
        "question": item["question"], "covered": found.covered, "reason": found.reason,
        "top_similarity": found.top_similarity, "term_coverage": found.term_coverage,
        "injection": prompt_injection_detect(item["question"]),
        "parts": len(question_parts_split(item["question"])),
        **{f"s_{k}": v for k, v in found.signals.items() if k != "best_sentence"},
    }
    row.update(coverage_features(query=found.query, result=found))
    return row


def main(names: list[str]) -> int:
    from bench.quality.corpora import django_setup

    django_setup()
    out = RESULTS / "quality_signals.jsonl"
    with out.open("w") as handle:
        for name in names or [n for n, c in CORPORA.items() if not c.sealed]:
            corpus = CORPORA[name]
            if corpus.sealed:
                print(f"{name}: sealed, skipped")
                continue
            pages = corpus_files(corpus)
            items, _dropped = questions_load(corpus, pages)
            corpus_index(corpus, pages)
            for item in items:
                row = question_signals(item)
                row["corpus"] = name
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            print(f"{name}: {len(items)} questions", flush=True)
    return 0


def coverage_features(*, query: str, result: Any) -> dict[str, Any]:
    """Signals for the coverage decision, measured by bench/quality/signals.py (experimental)."""
    from documents.retrieval import query_terms

    terms = query_terms(query)
    total_idf = sum(t.idf for t in terms) or 1.0
    chunks = result.chunks
    top = chunks[0] if chunks else None
    top_terms = top.matched_terms if top else frozenset()
    top3: set[str] = set()
    for chunk in chunks[:3]:
        top3 |= chunk.matched_terms
    max_idf = max((t.idf for t in terms), default=0.0)
    missing = [t for t in terms if t.lexeme not in top3]
    dense = sorted((c.dense_score for c in result.candidates if c.dense_score is not None), reverse=True)
    return {
        "n_terms": len(terms),
        "idf_cov_top1": round(sum(t.idf for t in terms if t.lexeme in top_terms) / total_idf, 3),
        "idf_cov_top3": round(sum(t.idf for t in terms if t.lexeme in top3) / total_idf, 3),
        "unknown_terms": [t.lexeme for t in terms if t.df == 0],
        "missing_terms": [(t.lexeme, t.df) for t in missing],
        "missing_max_idf": round(max((t.idf for t in missing), default=0.0), 3),
        "max_idf": round(max_idf, 3),
        "dense_top5": [round(x, 4) for x in dense[:5]],
        **_focus_features(query=query, terms=terms, top3=top3),
        "dense_10th": round(dense[9], 4) if len(dense) > 9 else None,
        "dense_40th": round(dense[-1], 4) if dense else None,
    }


_GREETING = {"hi", "hello", "hey", "thank", "thanks", "morn", "good", "afternoon", "even", "dear", "cheer", "love",
             "pleas", "hope", "wonder", "quick", "question", "ask", "sorri", "help"}


def _focus_features(*, query: str, terms: list[Any], top3: set[str]) -> dict[str, Any]:
    """The question's own sentence (the last one asking), without a greeting or a story before it."""
    from documents.retrieval import asking_sentences, stems

    focus = stems(asking_sentences(query)) - _GREETING
    by_lexeme = {t.lexeme: t for t in terms}
    focus_terms = [by_lexeme[s] for s in focus if s in by_lexeme]
    total = sum(t.idf for t in focus_terms) or 1.0
    return {
        "focus_terms": len(focus_terms),
        "focus_unknown": [t.lexeme for t in focus_terms if t.df == 0],
        "focus_cov_top3": round(sum(t.idf for t in focus_terms if t.lexeme in top3) / total, 3),
        "focus_missing": [(t.lexeme, t.df) for t in focus_terms if t.lexeme not in top3],
    }
