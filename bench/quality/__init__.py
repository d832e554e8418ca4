"""`python -m bench quality [--corpus NAME]... [--quick]`: answer quality over several corpora, ours against the naive
LangChain baseline, in the same run (issue #15).

Corpora (bench/quality/corpora.py): `handbook` (Debian Administrator's Handbook), `gnucash` (GnuCash guide and help),
`gimp` (GIMP user manual), `git` (git's man pages and guides), `apache` (Apache HTTP Server manual, SEALED) and `shop`
(a fictional shop's help centre: Markdown, HTML, CSV, and DOCX / PDF made from Markdown sources at bench time). Each is
ingested into a bench workspace of its own through our real pipeline and kept between runs (`python -m bench.quality
prepare` indexes without asking anything). The bench runs in a database of its own, `<db>_bench_quality`, unless
DATABASE_URL is exported.

Questions: bench/quality/corpora/<name>/questions.jsonl, written before any tuning by people who did not tune: in-scope
questions (categories natural, typo, chatty, multi_part, follow_up with its `history`, identifier) with the page(s)
that answer them and the key terms a right answer holds, and out-of-scope ones (business, other_product, general,
injection). Each line is in the `fit` or the `eval` half; the sealed corpus's lines are `sealed`: its figures are
reported in aggregate only and its per-question results are never written anywhere (not to the results, not to the
log, not to quality_answers.jsonl).

Per corpus and half, ours: hit@1 / hit@5 / MRR@10 of the right page in knowledge_retrieve's ranking of the query the
answer path builds (follow-ups folded with their history); the right page among the citations of answer_once's
completed event (what the customer is shown); in-scope answered; out-of-scope declined (and per category); keyword
recall and the share of answers holding ALL key terms; the median answer length; hit@5 per category. The baseline:
hit@1 / hit@5 / MRR@10 of its top chunks, and the share whose top 5 chunks hold all key terms. Then the macro mean of
the non-sealed corpora's eval halves and the sealed corpus apart, each figure next to its issue #15 target.

Small knowledge bases (bench/small_kb.py, `small_kb` in the results) run in the same run, as before.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench.quality.corpora import CORPORA, Corpus, corpus_files, corpus_index, django_setup, history_turns, \
    questions_load

RESULTS = Path(__file__).resolve().parent.parent / "results"
TOP_K = 5
MRR_DEPTH = 10
IN_CATEGORIES = ("natural", "typo", "chatty", "multi_part", "follow_up", "identifier")
OUT_CATEGORIES = ("business", "other_product", "general", "injection")
# Issue #15's targets, on every corpus's eval half and on the sealed corpus. `vs_baseline`: also at least the
# baseline's figure.
TARGETS = {
    "hit@5": (0.95, True), "hit@1": (0.75, True), "mrr@10": (0.85, True),
    "declined_out_of_scope": (0.90, False), "answered_in_scope": (0.95, False), "all_key_terms": (0.75, False),
}


def _retrieval() -> Any:
    """The retrieval module, wherever it lives (issue #15 moves it from chat/ to documents/)."""
    try:
        from documents import retrieval
    except ImportError:
        from chat import retrieval
    return retrieval


# --- metrics ---------------------------------------------------------------------------------------------------------


def keyword_recall(text: str, keywords: list[str]) -> float:
    if not keywords:
        return 1.0
    lowered = text.lower()
    found = sum(1 for k in keywords if re.search(r"(?<![\w-])" + re.escape(k.lower()) + r"(?!\w)", lowered))
    return found / len(keywords)


def rank_of(expected: list[str], ranked: list[list[str]]) -> int | None:
    """1-based position of the first ranked item naming an expected page (each item: the pages it stands for)."""
    for position, names in enumerate(ranked, start=1):
        if any(name in expected for name in names):
            return position
    return None


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def ranking_figures(ranks: list[int | None]) -> dict[str, Any]:
    if not ranks:
        return {}
    return {"hit@1": _share([r == 1 for r in ranks]), "hit@5": _share([r is not None and r <= TOP_K for r in ranks]),
            "mrr@10": round(sum(1.0 / r for r in ranks if r is not None and r <= MRR_DEPTH) / len(ranks), 3)}


def ours_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    inside = [r for r in rows if r["kind"] == "in"]
    outside = [r for r in rows if r["kind"] == "out"]
    answered = [r for r in inside if r["answered"]]
    figures: dict[str, Any] = {"n_in": len(inside), "n_out": len(outside)}
    if inside:
        figures.update(ranking_figures([r["rank"] for r in inside]))
        figures.update({
            # Answers lost to a provider failure (the built-in answerer's deadline on a loaded machine), not a decline.
            "provider_failures": sum(r["reason"] == "provider_failure" for r in rows),
            "cited_right_page": _share([r["cited_hit"] for r in inside]),
            "answered_in_scope": _share([r["answered"] for r in inside]),
            "keyword_recall": round(statistics.mean(r["recall"] for r in inside), 3),
            "all_key_terms": _share([r["answered"] and r["recall"] == 1.0 for r in inside]),
            "answer_words_median": statistics.median([r["words"] for r in answered]) if answered else None,
            "hit@5_by_category": {c: {"n": len(group), "hit@5": ranking_figures([r["rank"] for r in group])["hit@5"]}
                                  for c in IN_CATEGORIES
                                  if (group := [r for r in inside if r["category"] == c])},
        })
    if outside:
        figures["declined_out_of_scope"] = _share([not r["answered"] for r in outside])
        figures["declined_by_category"] = {c: {"n": len(group), "declined": _share([not r["answered"] for r in group])}
                                           for c in sorted({r["category"] for r in outside})
                                           if (group := [r for r in outside if r["category"] == c])}
    return figures


def baseline_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    inside = [r for r in rows if r["kind"] == "in"]
    if not inside:
        return {}
    return {"n_in": len(inside), **ranking_figures([r["rank"] for r in inside]),
            "top5_all_key_terms": _share([r["top5_recall"] == 1.0 for r in inside]),
            "hit@5_by_category": {c: {"n": len(group), "hit@5": ranking_figures([r["rank"] for r in group])["hit@5"]}
                                  for c in IN_CATEGORIES if (group := [r for r in inside if r["category"] == c])}}


def targets_check(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (target, vs_baseline) in TARGETS.items():
        value = ours.get(name)
        if value is None:
            continue
        base = baseline.get(name) if vs_baseline else None
        met = value >= target and (base is None or value >= base)
        out[name] = {"value": value, "target": target, **({"baseline": base} if vs_baseline else {}),
                     "met": bool(met)}
    return out


def percentile(values: list[float], pct: int) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))], 1)


# --- one corpus --------------------------------------------------------------------------------------------------


def ours_run(items: list[dict[str, Any]], page_of: dict[int, list[str]]) -> tuple[list[dict[str, Any]], list[float]]:
    """Each question through retrieval (the ranking) and through answer_once (what the customer gets)."""
    from chat.answering import answer_once

    retrieval = _retrieval()
    retrieval.knowledge_retrieve(query="warm up", limit=MRR_DEPTH)  # the first call loads the workspace's indexes
    rows, latencies = [], []
    for item in items:
        history = history_turns(item)
        query = retrieval.retrieval_query_build(question=item["question"], history=history)
        started = time.perf_counter()
        found = retrieval.knowledge_retrieve(query=query, limit=MRR_DEPTH)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked = [page_of.get(chunk.document_id, []) for chunk in found.chunks]
        data = answer_once(question=item["question"], history=history)
        cited = [page for c in data["citations"] for page in page_of.get(c.get("document_id"), [])]
        expected = item.get("pages", [])
        answered = bool(data["answered"])
        rows.append({
            "id": item["id"], "kind": item["kind"], "category": item["category"], "split": item["split"],
            "question": item["question"], "rank": rank_of(expected, ranked), "answered": answered,
            "cited_hit": any(page in expected for page in cited),
            "recall": keyword_recall(data["answer"], item.get("keywords", [])) if answered else 0.0,
            "words": len(data["answer"].split()), "answer": data["answer"], "cited": cited,
            "top_similarity": round(found.top_similarity, 4), "reason": data.get("reason"),
        })
    return rows, latencies


def baseline_run(store: Any, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[float]]:
    from bench.quality.baseline import baseline_rank

    rows, latencies = [], []
    for item in items:
        if item["kind"] != "in":
            continue
        pages, texts, ms = baseline_rank(store, item["question"], depth=MRR_DEPTH)
        latencies.append(ms)
        rows.append({"id": item["id"], "kind": "in", "category": item["category"], "split": item["split"],
                     "rank": rank_of(item.get("pages", []), [[p] for p in pages]),
                     "top5_recall": keyword_recall(" ".join(texts[:TOP_K]), item.get("keywords", []))})
    return rows, latencies


def corpus_run(corpus: Corpus, *, quick: bool, log: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the corpus's figures, its per-question rows — empty for the sealed corpus)."""
    from django.db import connection

    from bench.quality.baseline import baseline_index

    pages = corpus_files(corpus)
    items, dropped = questions_load(corpus, pages)
    if quick:  # every third line: both halves (lines alternate fit / eval) and most categories
        items = items[::3]
    sizes = corpus_index(corpus, pages, log=log)
    page_of = sizes.pop("page_of")
    result: dict[str, Any] = {"sealed": corpus.sealed, "language": corpus.language, "root": str(corpus.root),
                              "sizes": sizes, "questions": {
                                  "in": sum(i["kind"] == "in" for i in items),
                                  "out": sum(i["kind"] == "out" for i in items),
                                  "dropped_missing_page": dropped if not corpus.sealed else len(dropped)}}
    if not items:
        result["note"] = f"no questions ({corpus.questions_path.relative_to(RESULTS.parent.parent)} is missing)"
        connection.set_schema_to_public()
        return result, []
    started = time.perf_counter()
    rows, ours_ms = ours_run(items, page_of)
    ours_seconds = time.perf_counter() - started
    connection.set_schema_to_public()
    started = time.perf_counter()
    store, baseline_chunks = baseline_index(corpus, pages)
    result["sizes"]["baseline_chunks"] = baseline_chunks
    result["sizes"]["baseline_index_seconds"] = round(time.perf_counter() - started, 1)
    base_rows, base_ms = baseline_run(store, items)
    halves = ("sealed",) if corpus.sealed else ("fit", "eval")
    result["ours"], result["baseline"], result["targets"] = {}, {}, {}
    for half in halves:
        pick = (lambda xs: xs) if corpus.sealed else (lambda xs, h=half: [x for x in xs if x["split"] == h])
        result["ours"][half] = ours_figures(pick(rows))
        result["baseline"][half] = baseline_figures(pick(base_rows))
        result["targets"][half] = targets_check(result["ours"][half], result["baseline"][half])
    result["latency_ms"] = {"retrieval_p50": percentile(ours_ms, 50), "retrieval_p95": percentile(ours_ms, 95),
                            "baseline_p50": percentile(base_ms, 50), "baseline_p95": percentile(base_ms, 95)}
    result["seconds"] = {"ours_questions": round(ours_seconds, 1)}
    if corpus.sealed:
        return result, []
    result["misses"] = {
        "not_in_top5": [r["id"] for r in rows if r["kind"] == "in" and not (r["rank"] and r["rank"] <= TOP_K)],
        "declined_in_scope": [r["id"] for r in rows if r["kind"] == "in" and not r["answered"]],
        "answered_out_of_scope": [r["id"] for r in rows if r["kind"] == "out" and r["answered"]],
    }
    by_id = {b["id"]: b for b in base_rows}
    for row in rows:
        row["corpus"] = corpus.name
        row["baseline_rank"] = by_id.get(row["id"], {}).get("rank")
    return result, rows


# --- the run ---------------------------------------------------------------------------------------------------


MACRO_FIGURES = ("hit@1", "hit@5", "mrr@10", "cited_right_page", "answered_in_scope", "declined_out_of_scope",
                 "keyword_recall", "all_key_terms")
SMALL_KB = "small_kb"  # `--corpus small_kb`: the small-knowledge-base family (bench/small_kb.py)
BASELINE_MACRO = ("hit@1", "hit@5", "mrr@10", "top5_all_key_terms")


def macro(corpora: dict[str, Any]) -> dict[str, Any]:
    """The mean over the non-sealed corpora's eval halves, each figure next to its target."""
    evals = [c for c in corpora.values() if not c["sealed"] and c.get("ours", {}).get("eval")]
    if not evals:
        return {}

    def mean(side: str, name: str) -> float | None:
        values = [c[side]["eval"].get(name) for c in evals if c[side]["eval"].get(name) is not None]
        return round(statistics.mean(values), 3) if values else None

    ours = {name: mean("ours", name) for name in MACRO_FIGURES}
    baseline = {name: mean("baseline", name) for name in BASELINE_MACRO}
    return {"corpora": [name for name, c in corpora.items() if c in evals], "ours": ours, "baseline": baseline,
            "targets": targets_check(ours, baseline)}


def table(corpora: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per corpus and half (what docs/answers.md shows)."""
    rows = []
    for name, c in corpora.items():
        for half, ours in c.get("ours", {}).items():
            base = c["baseline"][half]
            rows.append({"corpus": name, "half": half, "pages": c["sizes"]["pages"], "chunks": c["sizes"]["chunks"],
                         "baseline_chunks": c["sizes"].get("baseline_chunks"), "n_in": ours.get("n_in"),
                         "n_out": ours.get("n_out"),
                         **{f"ours_{k}": ours.get(k) for k in MACRO_FIGURES},
                         **{f"baseline_{k}": base.get(k) for k in BASELINE_MACRO},
                         "retrieval_p50_ms": c["latency_ms"]["retrieval_p50"],
                         "retrieval_p95_ms": c["latency_ms"]["retrieval_p95"],
                         "targets_met": sum(t["met"] for t in c["targets"][half].values()),
                         "targets": len(c["targets"][half])})
    return rows


def run(quick: bool = False, corpora: list[str] | None = None) -> dict[str, Any]:
    load_before = os.getloadavg()
    names = corpora or [*CORPORA, SMALL_KB]
    unknown = [n for n in names if n not in CORPORA and n != SMALL_KB]
    if unknown:
        raise ValueError(f"unknown corpus {unknown}; one of {[*CORPORA, SMALL_KB]}")
    database = django_setup()

    def log(line: str) -> None:
        print(f"   {line}", flush=True)

    results: dict[str, Any] = {}
    details: list[dict[str, Any]] = []
    for name in [n for n in names if n in CORPORA]:
        started = time.perf_counter()
        log(f"corpus {name}")
        try:
            figures, rows = corpus_run(CORPORA[name], quick=quick, log=log)
        except Exception as exc:  # one corpus failing must not hide the others
            if CORPORA[name].sealed:  # an error message could quote a sealed question
                figures, rows = {"sealed": True, "error": type(exc).__name__}, []
            else:
                figures, rows = {"sealed": False, "error": f"{type(exc).__name__}: {exc}"}, []
            from django.db import connection

            connection.set_schema_to_public()
        figures.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 1)
        results[name] = figures
        details.extend(rows)
        log(f"corpus {name} done in {figures['seconds']['total']} s")
    ok = {n: c for n, c in results.items() if "error" not in c}
    result: dict[str, Any] = {
        "database": database,
        "macro_eval": macro(ok),
        "sealed": {n: {"ours": c["ours"]["sealed"], "baseline": c["baseline"]["sealed"],
                       "targets": c["targets"]["sealed"]} for n, c in ok.items() if c["sealed"] and "ours" in c},
        "table": table(ok),
        "corpora": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    if SMALL_KB in names:
        # The small-knowledge-base family (bench/small_kb.py): generated workspaces, answered in the same run.
        from django.db import connection

        from bench.small_kb import WORKSPACES, small_kb_answers, small_kb_figures

        started = time.perf_counter()
        small_rows = small_kb_answers(count=20 if quick else WORKSPACES)
        connection.set_schema_to_public()
        result["small_kb"] = small_kb_figures(small_rows)
        result["small_kb"]["seconds"] = round(time.perf_counter() - started, 1)
        with (RESULTS / "quality_small_kb.jsonl").open("w") as handle:
            for row in small_rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    # Per-question results of the non-sealed corpora only (corpus_run returns none for the sealed one).
    with (RESULTS / "quality_answers.jsonl").open("w") as handle:
        for row in details:
            handle.write(json.dumps({k: row.get(k) for k in (
                "corpus", "id", "split", "category", "question", "answered", "rank", "baseline_rank", "cited_hit",
                "recall", "reason", "answer", "cited")}, ensure_ascii=False) + "\n")
    result["load_average"] = {"before": [round(x, 2) for x in load_before],
                              "after": [round(x, 2) for x in os.getloadavg()],
                              "note": "other engineers' processes share the 2 cores; latencies move with the load"}
    return result
