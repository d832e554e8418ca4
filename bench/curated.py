"""Curated answers: does a stored answer come back for the questions it should answer, and only for those?

`python -m bench curated` → bench/results/curated.json (and bench/results/curated_questions.jsonl, one line per
question with its best candidate and score).

The set (bench/curated_data.py): 8 kinds of business × 4 curated answers, each with its question, 2 stored example
phrasings, 5 paraphrases to serve it for and 4 near-misses it must not answer. Each business is matched against its
own 4 curated answers only (a workspace holds one business's answers). The rule and its embedding are the shipped
ones (documents.curated: candidate_build, candidates_score, the workspace embedder); no database is involved.

Chosen on the fit half, stated before looking at eval: among settings whose fit precision is ≥ 0.99 (every served
answer, paraphrases and near-misses together), the best fit paraphrase recall; ties to the higher threshold. The
same grid with the lexical weights at 0 is reported as the cosine-only baseline.
"""
from __future__ import annotations

import json
import os
import time
from itertools import product
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PRECISION_FLOOR = 0.98


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()


def _prepare(learnt: int = 0) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Questions (with their vectors) and each business's candidates. With `learnt`, the first `learnt` paraphrases
    of each curated answer are stored as further examples (what the review queue's "add as an example" does after a
    question fell through) and are no longer asked."""
    import numpy as np

    from bench.curated_data import curated_items
    from documents import curated as rule

    items = curated_items()
    for number, item in enumerate(items, start=1):
        item["id"] = number
        item["examples"] = [*item["examples"], *item["paraphrases"][:learnt]]
        item["paraphrases"] = item["paraphrases"][learnt:]
    phrasings = [p for item in items for p in [item["question"], *item["examples"]]]
    vectors, _name = rule._embed(phrasings)
    candidates: dict[str, list[Any]] = {}
    at = 0
    for item in items:
        n = 1 + len(item["examples"])
        candidates.setdefault(item["business"], []).append(rule.candidate_build(
            curated_answer_id=item["id"], phrasings=[item["question"], *item["examples"]],
            vectors=np.asarray(vectors[at:at + n])))
        at += n
    questions = []
    for item in items:
        for kind in ("paraphrases", "near_misses"):
            for text in item[kind]:
                questions.append({"text": text, "kind": kind[:-1] if kind == "paraphrases" else "near_miss",
                                  "target": item["id"], "business": item["business"], "split": item["split"]})
    q_vectors, _ = rule._embed([q["text"] for q in questions])
    for question, vector in zip(questions, q_vectors):
        question["vector"] = vector
    return questions, candidates


def _evaluate(questions: list[dict[str, Any]], candidates: dict[str, list[Any]], params: Any,
              split: str | None) -> dict[str, Any]:
    from documents import curated as rule

    served = right = paraphrases = recalled = near = near_served = 0
    rows = []
    for q in questions:
        if split and q["split"] != split:
            continue
        scored = rule.candidates_score(question=q["text"], vector=q["vector"], candidates=candidates[q["business"]],
                                       params=params)
        best = scored[0]
        hit = best.curated_answer_id if best.score >= params.threshold else None
        correct = q["kind"] == "paraphrase" and hit == q["target"]
        if hit is not None:
            served += 1
            right += int(correct)
        if q["kind"] == "paraphrase":
            paraphrases += 1
            recalled += int(correct)
        else:
            near += 1
            near_served += int(hit is not None)
        rows.append({"question": q["text"], "kind": q["kind"], "split": q["split"], "business": q["business"],
                     "target": q["target"], "served": hit, "best": best.curated_answer_id, "score": best.score,
                     "cosine": best.cosine, "unknown": best.unknown, "correct": correct or (
                         q["kind"] == "near_miss" and hit is None)})
    return {
        "paraphrases": paraphrases, "near_misses": near, "served": served,
        "recall": round(recalled / paraphrases, 4) if paraphrases else None,
        "precision": round(right / served, 4) if served else None,
        "near_miss_served": near_served,
        "near_miss_rejected": round(1 - near_served / near, 4) if near else None,
        "rows": rows,
    }


def _grid(lexical: bool) -> list[Any]:
    from documents.curated import MatchParams

    thresholds = [round(0.40 + 0.01 * i, 2) for i in range(56)]
    unknown = [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6] if lexical else [0.0]
    negation = [0.0, 0.1, 0.15, 0.2] if lexical else [0.0]
    return [MatchParams(unknown_weight=u, negation_weight=n, threshold=t)
            for u, n, t in product(unknown, negation, thresholds)]


def _choose(questions: list[dict[str, Any]], candidates: dict[str, list[Any]], lexical: bool) -> tuple[Any, dict]:
    best: tuple[Any, dict] | None = None
    for params in _grid(lexical):
        fit = _evaluate(questions, candidates, params, "fit")
        if fit["precision"] is None or fit["precision"] < PRECISION_FLOOR:
            continue
        key = (fit["recall"], params.threshold)
        if best is None or key > (best[1]["recall"], best[0].threshold):
            best = (params, fit)
    assert best is not None, "no setting reaches the precision floor on fit"
    return best


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "rows"}


def run(quick: bool = False) -> dict[str, Any]:
    _setup()
    from dataclasses import asdict, replace

    from documents.curated import MATCH_PARAMS

    started = time.perf_counter()
    questions, candidates = _prepare()
    prepared_s = time.perf_counter() - started
    chosen, chosen_fit = _choose(questions, candidates, lexical=True)
    baseline, baseline_fit = _choose(questions, candidates, lexical=False)
    shipped_eval = _evaluate(questions, candidates, MATCH_PARAMS, "eval")
    result = {
        "set": {"businesses": len(candidates), "curated_answers": sum(len(c) for c in candidates.values()),
                "questions": len(questions),
                "paraphrases": sum(1 for q in questions if q["kind"] == "paraphrase"),
                "near_misses": sum(1 for q in questions if q["kind"] == "near_miss")},
        "rule": "best fit recall with fit precision >= %.2f; ties to the higher threshold" % PRECISION_FLOOR,
        "chosen": {"params": asdict(chosen), "fit": _summary(chosen_fit),
                   "eval": _summary(_evaluate(questions, candidates, chosen, "eval"))},
        "cosine_only": {"params": asdict(baseline), "fit": _summary(baseline_fit),
                        "eval": _summary(_evaluate(questions, candidates, baseline, "eval"))},
        "shipped": {"params": asdict(MATCH_PARAMS), "fit": _summary(_evaluate(questions, candidates, MATCH_PARAMS, "fit")),
                    "eval": _summary(shipped_eval), "all": _summary(_evaluate(questions, candidates, MATCH_PARAMS, None))},
        "seconds_embedding": round(prepared_s, 2),
    }
    result["curve_eval"] = [  # the trade-off the threshold makes, shipped weights, on the eval half
        {"threshold": t, **{k: v for k, v in _summary(_evaluate(
            questions, candidates, replace(MATCH_PARAMS, threshold=t), "eval")).items()
            if k in ("recall", "precision", "near_miss_rejected", "served")}}
        for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.84, 0.9, 0.95)]
    learnt_questions, learnt_candidates = _prepare(learnt=2)
    result["learnt_2_examples"] = {
        "what": "2 of each curated answer's paraphrases stored as examples; the other 3 asked; shipped rule",
        "eval": _summary(_evaluate(learnt_questions, learnt_candidates, MATCH_PARAMS, "eval")),
        "fit": _summary(_evaluate(learnt_questions, learnt_candidates, MATCH_PARAMS, "fit")),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "curated_questions.jsonl", "w", encoding="utf-8") as handle:
        for row in _evaluate(questions, candidates, MATCH_PARAMS, None)["rows"]:
            handle.write(json.dumps(row) + "\n")
    print(json.dumps({k: result[k] for k in ("chosen", "cosine_only", "shipped", "learnt_2_examples", "curve_eval")},
                     indent=1))
    return result
