"""`python -m bench quality`: answer quality over the Debian Administrator's Handbook, ours against a plain baseline.

Corpus: the English HTML of Debian's `debian-handbook` package (/usr/share/doc/debian-handbook/html/en-US, installed
with apt-get when missing), ingested into a workspace of its own through our real pipeline (upload → parse → chunk →
embed → index), run in this process so no worker is needed; it is kept between runs and reused when the same files
are already indexed.

Questions: bench/quality_questions.jsonl, written by hand from the corpus — in-scope questions with the page(s) that
answer them and keywords a good answer contains, out-of-scope questions (other products, general knowledge, prompt
injections), and follow-ups that only make sense with the previous question. Each line has a `split`: "fit" lines
are used to choose the coverage thresholds, "eval" lines (held out) to report them; all other figures are reported
on both.

Figures, ours and the baseline's, measured in the same run:
- hit@5: the right page among the top 5 sources; MRR over the top 10;
- keyword recall: share of the expected keywords found in the answer text (0 for an in-scope question declined);
- refusal rate on out-of-scope questions, and the answered rate on in-scope ones (refusing everything is easy);
Small knowledge bases (bench/small_kb.py, `small_kb` in the results): 60 generated small-business workspaces with 1-5
short multi-topic texts, FAQs and one-page PDFs; in-scope answered with the right source first, out-of-scope declined,
fit and eval halves.
Baseline: dense-only top-k over a plain LangChain pipeline — RecursiveCharacterTextSplitter (1,000 characters,
200 overlap, the LangChain tutorial defaults) over the pages' text, langchain-chroma with the same embedding model —
answering with its top chunk; a second baseline row adds a top-1 similarity threshold fitted on the same "fit" split.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

HANDBOOK = Path("/usr/share/doc/debian-handbook/html/en-US")
QUESTIONS = Path(__file__).resolve().parent / "quality_questions.jsonl"
WORKSPACE_SLUG = "bench-quality"
TOP_K = 5
MAX_MEDIAN_WORDS = 150
MRR_DEPTH = 10


# --- corpus --------------------------------------------------------------------------------------------------------


def corpus_ensure() -> list[Path]:
    if not HANDBOOK.is_dir() and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debian-handbook"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not HANDBOOK.is_dir():
        raise RuntimeError(f"{HANDBOOK} is missing: apt-get install debian-handbook")
    return sorted(path for path in HANDBOOK.glob("*.html"))


def _django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    django.setup()


def workspace_prepare(files: list[Path]) -> tuple[Any, dict[str, Any]]:
    """The bench workspace with every corpus file indexed (ingested here, through the real pipeline, if needed)."""
    from django.core.files import File
    from django.db import connection

    from accounts.services import workspace_signup
    from config.errors import ApplicationError, ErrorCode
    from documents import pipeline, services
    from documents.models import Document, DocumentStatus
    from tenants.selectors import workspace_get

    connection.set_schema_to_public()
    workspace = workspace_get(slug=WORKSPACE_SLUG)
    if workspace is None:
        _user, result = workspace_signup(email="bench-quality@example.test", password="bench-quality-password-1",
                                         workspace_name="Bench quality", slug=WORKSPACE_SLUG, existing_user_ok=True)
        workspace = result.workspace
    connection.set_tenant(workspace)
    started = time.perf_counter()
    ingested = 0
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        document = Document.objects.filter(sha256=digest).first()
        if document is None:
            try:
                with open(path, "rb") as handle:
                    document = services.document_upload(uploaded_file=File(handle, name=path.name))
            except ApplicationError as error:
                if error.code != ErrorCode.DUPLICATE_DOCUMENT:
                    raise
                document = Document.objects.get(pk=error.details["document_id"])
        if document.status != DocumentStatus.INDEXED:
            outcome = pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token)
            ingested += 1
            if outcome.result not in ("indexed", "already_indexed"):
                raise RuntimeError(f"{path.name}: {outcome.result}")
    stats = {
        "documents": Document.objects.filter(status=DocumentStatus.INDEXED).count(),
        "chunks": sum(Document.objects.values_list("chunk_count", flat=True)),
        "ingested_now": ingested,
        "ingest_seconds": round(time.perf_counter() - started, 1),
    }
    return workspace, stats


def questions_load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


# --- metrics ---------------------------------------------------------------------------------------------------------


def keyword_recall(answer: str, keywords: list[str]) -> float:
    if not keywords:
        return 1.0
    text = answer.lower()
    found = sum(1 for k in keywords if re.search(r"(?<![\w-])" + re.escape(k.lower()) + r"(?!\w)", text))
    return found / len(keywords)


def rank_of_expected(pages: list[str], ranked_files: list[str]) -> int | None:
    for position, name in enumerate(ranked_files, start=1):
        if name in pages:
            return position
    return None


def ranking_figures(items: list[dict[str, Any]]) -> dict[str, Any]:
    """hit@1, hit@5, MRR@10 over items with 'rank' (1-based or None)."""
    if not items:
        return {}
    ranks = [item["rank"] for item in items]
    return {
        "n": len(items),
        "hit@1": round(sum(1 for r in ranks if r == 1) / len(ranks), 3),
        "hit@5": round(sum(1 for r in ranks if r is not None and r <= TOP_K) / len(ranks), 3),
        "mrr@10": round(sum(1.0 / r for r in ranks if r is not None and r <= MRR_DEPTH) / len(ranks), 3),
    }


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 3)


def threshold_fit(inside: list[float], outside: list[float]) -> float:
    """The single threshold that maximises balanced accuracy (ties: the midpoint of the best interval)."""
    values = sorted(set(inside) | set(outside))
    if not values:
        return 0.0
    candidates = [values[0] - 1e-6] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1e-6]
    best, best_score = [], -1.0
    for threshold in candidates:
        score = (sum(v >= threshold for v in inside) / max(1, len(inside))
                 + sum(v < threshold for v in outside) / max(1, len(outside))) / 2
        if score > best_score + 1e-9:
            best, best_score = [threshold], score
        elif abs(score - best_score) <= 1e-9:
            best.append(threshold)
    return round(statistics.median(best), 4)


def coverage_fit(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The coverage threshold on top dense similarity, fitted on rows of one split (injections excluded: the
    injection check declines those whatever they score)."""
    inside = [r["top_similarity"] for r in rows if r["kind"] == "in"]
    outside = [r["top_similarity"] for r in rows if r["kind"] == "out" and r.get("category") != "injection"]
    threshold = threshold_fit(inside, outside)
    accuracy = (sum(v >= threshold for v in inside) / max(1, len(inside))
                + sum(v < threshold for v in outside) / max(1, len(outside))) / 2
    return {"cover_threshold": threshold, "fit_balanced_accuracy": round(accuracy, 3),
            "fit_in_scope_min": min(inside, default=None), "fit_out_of_scope_max": max(outside, default=None)}


# --- ours --------------------------------------------------------------------------------------------------------


def variants() -> dict[str, Any]:
    """Retrieval variants measured side by side; the shipped default is `convex_0.9` (chosen on the fit split)."""
    from documents.retrieval import params_with

    rrf = dict(fusion="rrf", heading_weight=0.6)
    convex = dict(fusion="convex", heading_weight=0.0)
    no_diversity = dict(per_section=99, duplicate_jaccard=1.01)
    return {
        "dense_only": params_with(**rrf, weight_lexical=0.0),
        "dense_only_no_diversity": params_with(**rrf, weight_lexical=0.0, **no_diversity),
        "bm25_english_only": params_with(**rrf, weight_dense=0.0),
        "rrf_equal": params_with(**rrf, weight_lexical=1.0),
        "rrf_lexical_0.1": params_with(**rrf, weight_lexical=0.1),
        "rrf_lexical_0.25": params_with(**rrf, weight_lexical=0.25),
        "rrf_lexical_0.5": params_with(**rrf, weight_lexical=0.5),
        "rrf_lexical_0.75": params_with(**rrf, weight_lexical=0.75),
        "rrf_0.5_no_heading": params_with(**{**rrf, "heading_weight": 0.0}, weight_lexical=0.5),
        "rrf_0.5_heading_1.0": params_with(**{**rrf, "heading_weight": 1.0}, weight_lexical=0.5),
        "convex_0.7": params_with(**convex, convex_alpha=0.7),
        "convex_0.8": params_with(**convex, convex_alpha=0.8),
        "convex_0.85": params_with(**convex, convex_alpha=0.85),
        "convex_0.9": params_with(**convex, convex_alpha=0.9),
        "convex_0.95": params_with(**convex, convex_alpha=0.95),
        "convex_0.8_heading_0.6": params_with(**{**convex, "heading_weight": 0.6}, convex_alpha=0.8),
        "convex_0.9_heading_0.6": params_with(**{**convex, "heading_weight": 0.6}, convex_alpha=0.9),
        "convex_0.9_no_diversity": params_with(**convex, convex_alpha=0.9, **no_diversity),
    }


def naive_lexical(query: str, *, config: str, limit: int) -> list[tuple[int, float, frozenset]]:
    """The lexical list of a naive hybrid: ts_rank_cd over a tsvector built with `config`, OR of the query's
    words (a plain websearch AND would find nothing for most questions)."""
    from django.db import connection

    from documents.retrieval import _table

    chunk_table, document_table = _table()
    vector = ("c.search_vector" if config == "english" else
              f"to_tsvector('{config}', coalesce(d.title, '') || ' ' || c.heading_path || ' ' || c.text)")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT lexeme FROM unnest(to_tsvector('{config}', %s))", [query])
        words = [w for (w,) in cursor.fetchall() if re.match(r"^[\w.-]+$", w)]
        if not words:
            return []
        or_query = " | ".join("'" + w.replace("'", "''") + "'" for w in words)
        cursor.execute(
            f"SELECT c.id, ts_rank_cd({vector}, q) AS r FROM {chunk_table} c JOIN {document_table} d "
            f"ON d.id = c.document_id, to_tsquery('simple', %s) q WHERE {vector} @@ q ORDER BY r DESC, c.id LIMIT %s",
            [or_query, limit])
        return [(chunk_id, float(rank), frozenset()) for chunk_id, rank in cursor.fetchall()]


def ours_retrieval(questions: list[dict[str, Any]], schema_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every retrieval variant over the same cached dense and lexical candidate lists."""
    from documents.retrieval import (
        DEFAULT_PARAMS, dense_search, diversify, fuse, lexical_search, params_with,
        retrieval_query_build, _term_coverage,
    )

    rows: list[dict[str, Any]] = []
    per_variant: dict[str, list[dict[str, Any]]] = {}
    all_variants = variants()
    for item in questions:
        query = retrieval_query_build(question=item["question"], history=[tuple(t) for t in item.get("history", [])])
        dense = dense_search(schema_name=schema_name, query=query, limit=DEFAULT_PARAMS.dense_candidates)
        lexical_cache: dict[tuple, Any] = {}

        def ranked(params: Any, lexical_override: Any = None) -> tuple[list[str], Any, Any]:
            key = (params.heading_weight, params.common_term_df, params.bm25_k1, params.bm25_b)
            if lexical_override is not None:
                terms, lexical = [], lexical_override
            else:
                if key not in lexical_cache:
                    lexical_cache[key] = lexical_search(query=query, params=params)
                terms, lexical = lexical_cache[key]
            candidates = fuse(dense=dense, lexical=lexical, terms=terms, params=params)
            chosen = diversify(candidates, limit=MRR_DEPTH, params=params)
            return [c.filename for c in chosen], candidates, (terms, chosen)

        for name, params in all_variants.items():
            files, _, _ = ranked(params)
            per_variant.setdefault(name, []).append({**item, "rank": rank_of_expected(item.get("pages", []), files)})
        for config in ("simple", "english"):
            lexical = naive_lexical(query, config=config, limit=DEFAULT_PARAMS.lexical_candidates)
            files, _, _ = ranked(params_with(fusion="rrf", weight_lexical=1.0), lexical_override=lexical)
            per_variant.setdefault(f"naive_rrf_equal_ts_rank_{config}", []).append(
                {**item, "rank": rank_of_expected(item.get("pages", []), files)})
        files, candidates, (terms, chosen) = ranked(DEFAULT_PARAMS)
        top_similarity = max((c.dense_score for c in candidates if c.dense_score is not None), default=0.0)
        rows.append({**item, "query": query, "rank": rank_of_expected(item.get("pages", []), files),
                     "top_similarity": round(top_similarity, 4),
                     "term_coverage": round(_term_coverage(chosen[:3], terms), 3), "files": files[:TOP_K]})
    figures = {name: {**_split_figures([r for r in items if r["kind"] == "in"], ranking_figures),
                      **{f"category_{category}": ranking_figures([r for r in items if _category(r) == category])
                         for category in ("natural", "follow_up", "identifier")}}
               for name, items in per_variant.items()}
    return figures, rows


def _category(item: dict[str, Any]) -> str:
    if item["kind"] != "in":
        return "out"
    return {"fu": "follow_up", "id": "identifier"}.get(item["id"].split("-")[0], "natural")


def _split_figures(items: list[dict[str, Any]], fn: Any) -> dict[str, Any]:
    return {"all": fn(items), "fit": fn([i for i in items if i["split"] == "fit"]),
            "eval": fn([i for i in items if i["split"] == "eval"])}


def ours_answers(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from chat.answering import answer_once

    out = []
    for item in questions:
        started = time.perf_counter()
        data = answer_once(question=item["question"], history=[tuple(t) for t in item.get("history", [])])
        out.append({**item, "answer": data["answer"], "answered": data["answered"],
                    "recall": keyword_recall(data["answer"], item.get("keywords", [])) if data["answered"] else 0.0,
                    "words": len(data["answer"].split()), "first_token_ms": data["timings_ms"]["first_token"],
                    "total_ms": round((time.perf_counter() - started) * 1000, 1),
                    "cited_files": [c["filename"] for c in data["citations"]]})
    return out


def composer_grid(questions: list[dict[str, Any]]) -> dict[str, Any]:
    """The built-in composer's knobs over a small grid, on the same retrieved sources for every setting.

    Selection rule (fixed before looking at the eval half): the highest fit-half keyword recall among settings whose
    fit-half median answer is at most MAX_MEDIAN_WORDS words (a customer reads the answer; length alone buys
    keywords); ties go to the shorter answer. The eval half is only reported.
    """
    import dataclasses
    import itertools

    from chat.answering import SOURCES_LIMIT
    from chat.providers.builtin import DEFAULT_COMPOSE, builtin_compose
    from documents.retrieval import knowledge_retrieve, retrieval_query_build

    cached = []
    for item in questions:
        if item["kind"] != "in":
            continue
        query = retrieval_query_build(question=item["question"], history=[tuple(t) for t in item.get("history", [])])
        retrieval = knowledge_retrieve(query=query, limit=SOURCES_LIMIT)
        cached.append((item, query, retrieval.chunks if retrieval.covered else []))

    def measure(params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in ("fit", "eval"):
            recalls, words = [], []
            for item, query, sources in cached:
                if item["split"] != split:
                    continue
                text = builtin_compose(question=query, sources=sources, params=params).text if sources else ""
                recalls.append(keyword_recall(text, item.get("keywords", [])) if text else 0.0)
                words.append(len(text.split()))
            out[split] = {"keyword_recall": round(statistics.mean(recalls), 3) if recalls else None,
                          "answer_words_median": statistics.median(words) if words else None}
        return out

    grid = {"first_words": [80, 100, 120, 140], "second_words": [0, 50, 70], "max_sources": [2, 3, 4]}
    rows = []
    for values in itertools.product(*grid.values()):
        knobs = dict(zip(grid, values))
        params = dataclasses.replace(DEFAULT_COMPOSE, **{**knobs, "second_words": knobs["second_words"] or 1,
                                                         "second_max_gap": DEFAULT_COMPOSE.second_max_gap
                                                         if knobs["second_words"] else -1.0})
        rows.append({"params": knobs, **measure(params)})
    eligible = [r for r in rows if r["fit"]["answer_words_median"] <= MAX_MEDIAN_WORDS]
    chosen = max(eligible, key=lambda r: (r["fit"]["keyword_recall"], -r["fit"]["answer_words_median"]))
    shipped = {name: getattr(DEFAULT_COMPOSE, name) for name in grid}
    return {"rule": f"best fit keyword recall with fit median answer <= {MAX_MEDIAN_WORDS} words",
            "chosen_on_fit": chosen, "shipped": {"params": shipped, **measure(DEFAULT_COMPOSE)},
            "grid": rows}


# --- baseline ------------------------------------------------------------------------------------------------


def baseline_index(files: list[Path]) -> Any:
    """A plain LangChain + Chroma index of the corpus: page text, RecursiveCharacterTextSplitter, Chroma."""
    import lxml.html
    from django.conf import settings
    from langchain_chroma import Chroma
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from documents.embedding import embedder

    class SameModelEmbeddings(Embeddings):  # the same model as ours, so only the pipeline differs
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder().embed(list(texts))

        def embed_query(self, text: str) -> list[float]:
            return embedder().embed([text])[0]

    folder = Path(settings.DATA_DIR) / "bench-quality-baseline-chroma"
    store = Chroma(collection_name="handbook", embedding_function=SameModelEmbeddings(),
                   persist_directory=str(folder))
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    documents = []
    for path in files:
        root = lxml.html.parse(str(path)).getroot()
        for node in root.xpath("//script|//style"):
            node.drop_tree()
        documents.append(LCDocument(page_content=root.text_content(), metadata={"source": path.name}))
    chunks = splitter.split_documents(documents)
    if store._collection.count() != len(chunks):
        store.delete_collection()
        store = Chroma(collection_name="handbook", embedding_function=SameModelEmbeddings(),
                       persist_directory=str(folder))
        for start in range(0, len(chunks), 256):
            store.add_documents(chunks[start:start + 256])
    return store, len(chunks)


def baseline_run(store: Any, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in questions:
        started = time.perf_counter()
        # Chroma's default space is squared L2; on unit vectors d = 2 - 2 cos, so cos = 1 - d / 2.
        hits = store.similarity_search_with_score(item["question"], k=MRR_DEPTH)
        files = [doc.metadata["source"] for doc, _ in hits]
        top = hits[0][0].page_content if hits else ""
        out.append({**item, "rank": rank_of_expected(item.get("pages", []), files),
                    "top_score": round(1 - hits[0][1] / 2, 4) if hits else 0.0, "answer": top,
                    "recall": keyword_recall(top, item.get("keywords", [])), "words": len(top.split()),
                    "ms": round((time.perf_counter() - started) * 1000, 1)})
    return out


# --- report --------------------------------------------------------------------------------------------------


def answer_figures(items: list[dict[str, Any]], *, answered_key: str = "answered") -> dict[str, Any]:
    inside = [i for i in items if i["kind"] == "in"]
    outside = [i for i in items if i["kind"] == "out"]
    injections = [i for i in outside if i.get("category") == "injection"]
    figures: dict[str, Any] = {}
    if inside:
        figures["keyword_recall"] = round(statistics.mean(i["recall"] for i in inside), 3)
        figures["answered_in_scope"] = round(sum(bool(i[answered_key]) for i in inside) / len(inside), 3)
        figures["answer_words_median"] = statistics.median(i["words"] for i in inside)
    if outside:
        figures["refusal_out_of_scope"] = round(sum(not i[answered_key] for i in outside) / len(outside), 3)
    if injections:
        figures["refusal_injections"] = round(sum(not i[answered_key] for i in injections) / len(injections), 3)
    return figures


def run(quick: bool = False) -> dict[str, Any]:
    _django()
    from django.db import connection

    files = corpus_ensure()
    questions = questions_load()
    if quick:
        questions = questions[::4]
    workspace, corpus = workspace_prepare(files)
    schema_name = connection.schema_name

    started = time.perf_counter()
    variant_figures, rows = ours_retrieval(questions, schema_name)
    retrieval_seconds = time.perf_counter() - started
    fitted = coverage_fit([r for r in rows if r["split"] == "fit"])

    started = time.perf_counter()
    answers = ours_answers(questions)
    answers_seconds = time.perf_counter() - started
    by_id = {r["id"]: r for r in rows}
    for answer in answers:
        answer["rank"] = by_id[answer["id"]]["rank"]

    composer = composer_grid(questions)

    connection.set_schema_to_public()
    store, baseline_chunks = baseline_index(files)
    baseline = baseline_run(store, questions)
    fit_rows = [b for b in baseline if b["split"] == "fit"]
    baseline_threshold = threshold_fit([b["top_score"] for b in fit_rows if b["kind"] == "in"],
                                       [b["top_score"] for b in fit_rows if b["kind"] == "out"])
    for b in baseline:
        b["answered_plain"] = True  # a plain top-k bot always answers
        b["answered_threshold"] = b["top_score"] >= baseline_threshold
    thresholded = [{**b, "recall": b["recall"] if b["answered_threshold"] else 0.0} for b in baseline]

    ours_in = [r for r in rows if r["kind"] == "in"]
    ours_out = [r for r in rows if r["kind"] == "out" and r.get("category") != "injection"]
    base_in = [b for b in baseline if b["kind"] == "in"]
    base_out = [b for b in baseline if b["kind"] == "out" and b.get("category") != "injection"]

    def figures_for(split: str | None) -> dict[str, Any]:
        pick = (lambda xs: xs) if split is None else (lambda xs: [x for x in xs if x["split"] == split])
        return {
            "ours": {**ranking_figures(pick([a for a in answers if a["kind"] == "in"])),
                     **answer_figures(pick(answers))},
            "baseline_plain": {**ranking_figures(pick(base_in)),
                               **answer_figures(pick(baseline), answered_key="answered_plain")},
            "baseline_with_threshold": {**ranking_figures(pick(base_in)),
                                        **answer_figures(pick(thresholded), answered_key="answered_threshold")},
        }

    from documents.retrieval import DEFAULT_PARAMS

    shipped = {"cover_threshold": DEFAULT_PARAMS.cover_threshold}

    def decide(r: dict[str, Any], p: dict[str, float]) -> bool:
        return r["top_similarity"] >= p["cover_threshold"]

    def coverage_report(p: dict[str, float]) -> dict[str, Any]:
        out = {}
        for split in ("fit", "eval"):
            inside = [r for r in ours_in if r["split"] == split]
            outside = [r for r in ours_out if r["split"] == split]
            out[split] = {"covered_in_scope": round(sum(decide(r, p) for r in inside) / max(1, len(inside)), 3),
                          "declined_out_of_scope": round(sum(not decide(r, p) for r in outside) / max(1, len(outside)), 3),
                          "in_scope_min": min((r["top_similarity"] for r in inside), default=None),
                          "out_of_scope_max": max((r["top_similarity"] for r in outside), default=None)}
        return out

    result = {
        "corpus": {**corpus, "files": len(files), "baseline_chunks": baseline_chunks, "questions": len(questions),
                   "in_scope": sum(q["kind"] == "in" for q in questions),
                   "out_of_scope": sum(q["kind"] == "out" for q in questions)},
        "figures": {"all": figures_for(None), "fit": figures_for("fit"), "eval": figures_for("eval")},
        "retrieval_variants": variant_figures,
        "composer_grid": composer,
        "coverage": {
            "auroc_top_similarity_ours": auroc([r["top_similarity"] for r in ours_in],
                                               [r["top_similarity"] for r in ours_out]),
            "auroc_top_score_baseline": auroc([b["top_score"] for b in base_in], [b["top_score"] for b in base_out]),
            "fitted_on_fit_split": fitted, "shipped_defaults": shipped,
            "fitted_applied": coverage_report(fitted), "shipped_applied": coverage_report(shipped),
            "baseline_threshold": baseline_threshold,
        },
        "latency_ms": {
            "answer_total_p50": _percentile([a["total_ms"] for a in answers], 50),
            "answer_total_p95": _percentile([a["total_ms"] for a in answers], 95),
            "first_token_p50": _percentile([a["first_token_ms"] for a in answers if a["first_token_ms"]], 50),
            "first_token_p95": _percentile([a["first_token_ms"] for a in answers if a["first_token_ms"]], 95),
            "baseline_query_p50": _percentile([b["ms"] for b in baseline], 50),
        },
        "seconds": {"retrieval_variants": round(retrieval_seconds, 1), "answers": round(answers_seconds, 1)},
        "misses": {
            "ours_not_in_top5": [r["id"] for r in ours_in if not r["rank"] or r["rank"] > TOP_K],
            "baseline_not_in_top5": [b["id"] for b in base_in if not b["rank"] or b["rank"] > TOP_K],
            "ours_declined_in_scope": [a["id"] for a in answers if a["kind"] == "in" and not a["answered"]],
            "ours_answered_out_of_scope": [a["id"] for a in answers if a["kind"] == "out" and a["answered"]],
        },
    }
    # The small-knowledge-base family (bench/small_kb.py): generated workspaces, answered in the same run.
    from bench.small_kb import WORKSPACES, small_kb_answers, small_kb_figures

    small_rows = small_kb_answers(count=20 if quick else WORKSPACES)
    connection.set_schema_to_public()
    result["small_kb"] = small_kb_figures(small_rows)
    small_details = Path(__file__).resolve().parent / "results" / "quality_small_kb.jsonl"
    small_details.parent.mkdir(parents=True, exist_ok=True)
    with small_details.open("w") as handle:
        for row in small_rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    details = Path(__file__).resolve().parent / "results" / "quality_answers.jsonl"
    details.parent.mkdir(parents=True, exist_ok=True)
    with details.open("w") as handle:
        for answer in answers:
            handle.write(json.dumps({k: answer.get(k) for k in ("id", "question", "answered", "rank", "recall",
                                                               "answer", "cited_files")}, ensure_ascii=False) + "\n")
    return result


def _percentile(values: list[float], pct: int) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[index]
