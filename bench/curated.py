"""Curated answers: does a stored answer come back for the questions it should answer, and only for those?

`python -m bench curated` → bench/results/curated.json (aggregates only: per-question rows of the eval half are not
written, so nobody tunes on them).

The set (bench/curated_data.py): 8 kinds of business × 5 curated answers, each with its question, 2 stored example
phrasings, 5 paraphrases to serve it for and 4 near-misses it must not answer. Each business is matched against its
own curated answers only (a workspace holds one business's answers). The rule and its embedding are the shipped ones
(documents.curated: candidate_build, candidates_score, the workspace embedder); no database is involved.

The matcher has two steps: candidates by cosine (the top 3 curated answers by their best phrasing), then a verifier, a
logistic model over a handful of features (documents.curated.Features). Everything is chosen on the FIT half only:
1. the verifier's coefficients are fitted on the fit half's (question, candidate) pairs (label: the paraphrase's own
   curated answer);
2. the threshold is the lowest one whose precision is ≥ PRECISION_FLOOR both in-sample on fit and in a 4-fold
   cross-validation inside fit (folds by curated answer), so the floor is not met by luck of the in-sample fit;
3. the feature set was chosen by that cross-validation ("ablation_fit_cv" shows the sets tried).
The coefficients in documents.curated.MATCH_PARAMS are the ones this bench fits (it says whether they still agree).
Then the shipped rule is evaluated once on the eval half (aggregates only).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PRECISION_FLOOR = 0.98
FEATURES = ("cosine", "cosine_mean", "align_min", "uncovered", "contrast", "type_clash")
ABLATION = {
    "cosine only": ("cosine",),
    "cosines": ("cosine", "cosine_mean"),
    "cosines + word alignment": ("cosine", "cosine_mean", "align_min", "uncovered"),
    "shipped without align_min": ("cosine", "cosine_mean", "uncovered", "contrast", "type_clash"),
    "shipped without contrast and type_clash": ("cosine", "cosine_mean", "align_min", "uncovered"),
    "shipped": FEATURES,
    "shipped + negation": (*FEATURES, "negation"),
}
THRESHOLDS = [round(0.30 + 0.01 * i, 2) for i in range(70)]
L2 = 0.1
FOLDS = 4


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()


def _prepare(learnt: int = 0) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Questions (read once: vector, words) and each business's candidates. With `learnt`, the first `learnt`
    paraphrases of each curated answer are stored as further examples (what the review queue's "add as an example"
    does after a question fell through) and are no longer asked."""
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
                questions.append({"text": text, "kind": "paraphrase" if kind == "paraphrases" else "near_miss",
                                  "target": item["id"], "business": item["business"], "split": item["split"]})
    q_vectors, _ = rule._embed([q["text"] for q in questions])
    for question, vector in zip(questions, q_vectors):
        question["read"] = rule.question_read(text=question["text"], vector=vector)
    return questions, candidates


def _pairs(questions: list[dict[str, Any]], candidates: dict[str, list[Any]]) -> None:
    """Each question's verified candidates (top 3 by cosine, features computed whatever the floor)."""
    from documents import curated as rule

    params = replace(rule.MATCH_PARAMS, cosine_floor=-1.0)
    for q in questions:
        scored = rule.candidates_score(question=q["read"], candidates=candidates[q["business"]], params=params)
        q["pairs"] = [{"id": s.curated_answer_id, "features": asdict(s.features), "cosine": s.cosine,
                       "unknown": s.unknown} for s in scored]


# --- the verifier's fit: logistic regression (Newton steps, L2 on the weights), numpy only ----------------------
def _matrix(pairs: list[dict[str, Any]], features: tuple[str, ...]) -> Any:
    import numpy as np

    return np.array([[1.0, *[float(p["features"][f]) for f in features]] for p in pairs])


def _fit(questions: list[dict[str, Any]], features: tuple[str, ...]) -> Any:
    import numpy as np

    pairs = [p for q in questions for p in q["pairs"]]
    labels = np.array([float(q["kind"] == "paraphrase" and p["id"] == q["target"])
                       for q in questions for p in q["pairs"]])
    x = _matrix(pairs, features)
    w = np.zeros(x.shape[1])
    ridge = L2 * np.diag(np.r_[0.0, np.ones(len(w) - 1)])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - labels) + ridge @ w
        hessian = (x.T * (p * (1 - p))) @ x + ridge
        w = w - np.linalg.solve(hessian, gradient)
    return w


def _decide(questions: list[dict[str, Any]], score: Any) -> list[tuple[float, str, bool]]:
    """Per question: (the best candidate's score, the kind, whether that candidate is the right one)."""
    out = []
    for q in questions:
        scored = [(score(p), p) for p in q["pairs"]]
        best_score, best = max(scored, key=lambda t: (t[0], -t[1]["id"]))
        out.append((best_score, q["kind"], q["kind"] == "paraphrase" and best["id"] == q["target"]))
    return out


def _measure(decided: list[tuple[float, str, bool]], threshold: float) -> dict[str, Any]:
    served = [d for d in decided if d[0] >= threshold]
    right = sum(1 for d in served if d[2])
    paraphrases = sum(1 for d in decided if d[1] == "paraphrase")
    near = sum(1 for d in decided if d[1] == "near_miss")
    near_served = sum(1 for d in served if d[1] == "near_miss")
    return {"paraphrases": paraphrases, "near_misses": near, "served": len(served),
            "recall": round(right / paraphrases, 4) if paraphrases else None,
            "precision": round(right / len(served), 4) if served else None,
            "wrong_served": len(served) - right, "near_miss_served": near_served,
            "near_miss_rejected": round(1 - near_served / near, 4) if near else None}


def _logistic(w: Any, features: tuple[str, ...]) -> Any:
    import numpy as np

    return lambda p: float(1.0 / (1.0 + np.exp(-(_matrix([p], features)[0] @ w))))


def _cross_validated(fit_questions: list[dict[str, Any]], features: tuple[str, ...]) -> list[tuple[float, str, bool]]:
    ids = sorted({q["target"] for q in fit_questions})
    decided = []
    for fold in range(FOLDS):
        held = set(ids[fold::FOLDS])
        w = _fit([q for q in fit_questions if q["target"] not in held], features)
        decided += _decide([q for q in fit_questions if q["target"] in held], _logistic(w, features))
    return decided


def _choose(fit_questions: list[dict[str, Any]], features: tuple[str, ...]) -> dict[str, Any]:
    """Fit on fit; the lowest threshold with precision ≥ the floor in-sample and cross-validated (both on fit)."""
    w = _fit(fit_questions, features)
    in_sample = _decide(fit_questions, _logistic(w, features))
    cv = _cross_validated(fit_questions, features)
    chosen = None
    for threshold in THRESHOLDS:
        a, b = _measure(in_sample, threshold), _measure(cv, threshold)
        if all(m["precision"] is not None and m["precision"] >= PRECISION_FLOOR for m in (a, b)):
            chosen = threshold
            break
    chosen = chosen if chosen is not None else THRESHOLDS[-1]
    return {"features": list(features), "coefficients": {"bias": round(float(w[0]), 2),
                                                         **{f: round(float(v), 2) for f, v in zip(features, w[1:])}},
            "threshold": chosen, "fit": _measure(in_sample, chosen), "fit_cv": _measure(cv, chosen)}


def _previous_rule(questions: list[dict[str, Any]]) -> dict[str, Any]:
    """The rule this replaced (cosine − 0.1 × share of unknown words ≥ 0.84), on the same set, for before/after."""
    decided = _decide(questions, lambda p: p["cosine"] - 0.1 * p["unknown"])
    return _measure(decided, 0.84)


def _shipped(questions: list[dict[str, Any]]) -> list[tuple[float, str, bool]]:
    from documents.curated import MATCH_PARAMS, Features, features_score

    def score(p: dict[str, Any]) -> float:
        if p["cosine"] < MATCH_PARAMS.cosine_floor:
            return 0.0
        return features_score(Features(**p["features"]), MATCH_PARAMS)

    return _decide(questions, score)


def _cost_ms(questions: list[dict[str, Any]], candidates: dict[str, list[Any]]) -> dict[str, float]:
    """Milliseconds per question for the matching step alone (embedding the question, reading its words, scoring
    every candidate), with 0, 10 and 200 curated answers in the workspace. Word vectors are cached per process, as in
    production; the first pass warms them and is not counted."""
    import numpy as np

    from documents import curated as rule

    pool = [c for business in candidates.values() for c in business]
    sample = [q["text"] for q in questions[::7]][:40]
    out: dict[str, float] = {}
    for size in (0, 10, 200):
        chosen = [replace(pool[i % len(pool)], curated_answer_id=i + 1) for i in range(size)]
        for text in sample:  # warm the word cache
            if chosen:
                vector = np.asarray(rule._embed([text])[0][0])
                rule.candidates_score(question=text, vector=vector, candidates=chosen)
        started = time.perf_counter()
        for text in sample:
            if not chosen:  # what curated_answer_match does with no curated answer: nothing to embed
                continue
            vector = np.asarray(rule._embed([text])[0][0])
            rule.candidates_score(question=text, vector=vector, candidates=chosen)
        out[str(size)] = round(1000 * (time.perf_counter() - started) / len(sample), 2)
    started = time.perf_counter()
    for text in sample:  # the part every size shares: embedding the question (its words are cached by now)
        rule._embed([text])
    out["embedding_the_question_alone"] = round(1000 * (time.perf_counter() - started) / len(sample), 2)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    _setup()
    from documents.curated import MATCH_PARAMS

    started = time.perf_counter()
    questions, candidates = _prepare()
    _pairs(questions, candidates)
    prepared_s = time.perf_counter() - started
    fit = [q for q in questions if q["split"] == "fit"]
    evaluation = [q for q in questions if q["split"] == "eval"]

    chosen = _choose(fit, FEATURES)
    shipped = {"bias": MATCH_PARAMS.bias, **{f: getattr(MATCH_PARAMS, f"w_{f}") for f in FEATURES}}
    agrees = (all(abs(chosen["coefficients"][k] - v) <= 0.01 for k, v in shipped.items())
              and chosen["threshold"] == MATCH_PARAMS.threshold)
    cosine_only = _choose(fit, ("cosine",))
    cosine_w = [cosine_only["coefficients"]["bias"], cosine_only["coefficients"]["cosine"]]
    import numpy as np

    result: dict[str, Any] = {
        "set": {"businesses": len(candidates), "curated_answers": sum(len(c) for c in candidates.values()),
                "questions": len(questions),
                "paraphrases": sum(1 for q in questions if q["kind"] == "paraphrase"),
                "near_misses": sum(1 for q in questions if q["kind"] == "near_miss"),
                "fit_curated_answers": len({q["target"] for q in fit}),
                "eval_curated_answers": len({q["target"] for q in evaluation})},
        "rule": ("verifier fitted on fit; threshold = lowest with precision >= %.2f in-sample and in a %d-fold "
                 "cross-validation inside fit" % (PRECISION_FLOOR, FOLDS)),
        "fitted": chosen,
        "shipped": {"params": asdict(MATCH_PARAMS), "agrees_with_fitted": agrees,
                    "fit": _measure(_shipped(fit), MATCH_PARAMS.threshold),
                    "eval": _measure(_shipped(evaluation), MATCH_PARAMS.threshold)},
        "cosine_only": {**cosine_only, "eval": _measure(_decide(evaluation, _logistic(np.array(cosine_w),
                                                                                      ("cosine",))),
                                                        cosine_only["threshold"])},
        "previous_rule": {"what": "cosine - 0.1 x unknown-word share >= 0.84 (before this change)",
                          "fit": _previous_rule(fit), "eval": _previous_rule(evaluation)},
        "ablation_fit_cv": {name: {k: v for k, v in _choose(fit, feats).items() if k in ("threshold", "fit_cv")}
                            for name, feats in ABLATION.items()},
        "seconds_preparing": round(prepared_s, 2),
    }
    result["curve_eval"] = [  # the trade-off the threshold makes, shipped coefficients, eval half (aggregates)
        {"threshold": t, **{k: v for k, v in _measure(_shipped(evaluation), t).items()
                            if k in ("recall", "precision", "near_miss_rejected", "served")}}
        for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)]
    learnt_questions, learnt_candidates = _prepare(learnt=2)
    _pairs(learnt_questions, learnt_candidates)
    result["learnt_2_examples"] = {
        "what": "2 of each curated answer's paraphrases stored as examples; the other 3 asked; shipped rule",
        "fit": _measure(_shipped([q for q in learnt_questions if q["split"] == "fit"]), MATCH_PARAMS.threshold),
        "eval": _measure(_shipped([q for q in learnt_questions if q["split"] == "eval"]), MATCH_PARAMS.threshold),
    }
    result["ms_per_question"] = _cost_ms(questions, candidates)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stale = RESULTS / "curated_questions.jsonl"
    if stale.exists():  # per-question rows (eval included) are no longer written: nobody should tune on them
        stale.unlink()
    print(json.dumps({k: result[k] for k in ("fitted", "shipped", "cosine_only", "previous_rule", "ablation_fit_cv",
                                             "learnt_2_examples", "ms_per_question")}, indent=1))
    return result
