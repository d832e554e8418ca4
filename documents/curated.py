"""Curated answers: the team writes the answer a question should have had, once; from then on a question that
matches it is answered with it, ahead of retrieval (chat.answering asks `curated_answer_match` first).

    curated_answer_create(question=..., answer=..., examples=[...], actor=user, source_message_id=None)
    curated_answer_update(curated=..., question=..., answer=..., examples=[...], actor=user)
    curated_answer_delete(curated=..., actor=user)
    curated_answer_match(question=...)          # the best match above the threshold, or None (a read)
    curated_answer_hit_record(curated_answer_id=...)   # count it as served

Matching (measured in bench/curated.py, docs/answers.md "Curated answers"): every phrasing of a curated answer (its
question and its examples) is embedded with the workspace's embedding model, once, when it is written. A new question
is embedded and compared with every phrasing; the score of a curated answer is its best phrasing's cosine, lowered by
the share of the question's content words that none of its phrasings uses (a near-miss asks about something else in
the same words: "cancel my order" against "cancel my subscription") and by a negation on one side only. The answer is
served when the score reaches `MATCH_THRESHOLD`, chosen on the bench's fit half.

All of it lives in the workspace's schema (the CuratedAnswer table): isolated, exported, imported and purged with it.
"""
from __future__ import annotations

import csv
import io
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, QuerySet
from django.utils import timezone

from config.errors import ApplicationError, ErrorCode, NotFound, ValidationFailed
from documents.models import CuratedAnswer

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 10_000
MAX_EXAMPLES = 20
MAX_CSV_ROWS = 2000
MAX_CSV_BYTES = 5 * 1024 * 1024
CSV_COLUMNS = ("question", "answer", "examples")
EXAMPLES_SEPARATOR = "|"


@dataclass(frozen=True)
class MatchParams:
    """The matching rule's knobs; the shipped values were chosen on the bench's fit half (bench/curated.py)."""

    unknown_weight: float = 0.10
    negation_weight: float = 0.0
    threshold: float = 0.84


MATCH_PARAMS = MatchParams()


# --- words ---------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_STOP = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as is are was were be been being am
do does did doing done have has had having i me my mine we us our ours you your yours he him his she her it its they
them their this that these those there here what which who whom whose when where why how can could would should will
shall may might must need please hi hello hey thanks thank just also any some all much many more most very really
get got getting s t d ll re ve m im i'm i've i'd you're it's what's there's can't won't isn't aren't don't doesn't
one way like know want wanted tell let anyone someone something anything possible okay ok
""".split())
_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "can't", "won't", "don't", "doesn't", "didn't",
                        "isn't", "aren't", "wasn't", "haven't", "hasn't", "nothing", "none", "n't"})
_local = threading.local()


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)  # snowball stemmers keep state: one per thread
    if stemmer is None:
        import snowballstemmer

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


def _words(text: str) -> list[str]:
    return [w.replace("’", "'").lower() for w in _WORD.findall(text or "")]


def content_stems(text: str) -> frozenset[str]:
    """The stemmed content words of `text` (stop words and negations left out)."""
    words = [w for w in _words(text) if w not in _STOP and w not in _NEGATIONS and (len(w) > 1 or w.isdigit())]
    return frozenset(_stemmer().stemWords(words))


def has_negation(text: str) -> bool:
    return any(w in _NEGATIONS or w.endswith("n't") for w in _words(text))


def _storable(text: str) -> str:
    """PostgreSQL text can't hold NUL, and UTF-8 can't encode a lone surrogate: drop both (pasted text has them)."""
    return text.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8") if text else ""


def question_clean(text: Any) -> str:
    return " ".join(_storable(str(text or "")).split())


# --- embedding -----------------------------------------------------------------------------------------------------
def _embed(texts: list[str]) -> tuple[np.ndarray, str]:
    from documents.embedding import embedder

    model = embedder()
    vectors = np.asarray(model.embed(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12), model.name


def _embedding_model_name() -> str:
    from documents.embedding import embedder

    return embedder().name


# --- the rule ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """What the rule knows of one curated answer: its phrasings' vectors, stems and negations."""

    curated_answer_id: int
    vectors: np.ndarray  # (phrasings, dimension), unit rows
    vocabulary: frozenset[str]
    negated: tuple[bool, ...]


@dataclass(frozen=True)
class Scored:
    curated_answer_id: int
    score: float
    cosine: float
    unknown: float
    phrasing: int


def candidate_build(*, curated_answer_id: int, phrasings: Sequence[str], vectors: np.ndarray) -> Candidate:
    vocabulary: frozenset[str] = frozenset().union(*(content_stems(p) for p in phrasings)) if phrasings else frozenset()
    return Candidate(curated_answer_id=curated_answer_id, vectors=vectors, vocabulary=vocabulary,
                     negated=tuple(has_negation(p) for p in phrasings))


def candidates_score(*, question: str, vector: np.ndarray, candidates: Iterable[Candidate],
                     params: MatchParams = MATCH_PARAMS) -> list[Scored]:
    """Every candidate's score for `question` (whose unit vector is `vector`), best first."""
    stems = content_stems(question)
    negated = has_negation(question)
    scored: list[Scored] = []
    for candidate in candidates:
        if not len(candidate.vectors):
            continue
        cosines = candidate.vectors @ vector
        best = int(np.argmax(cosines))
        cosine = float(cosines[best])
        unknown = (sum(1 for s in stems if s not in candidate.vocabulary) / len(stems)) if stems else 0.0
        negation = 1.0 if negated != candidate.negated[best] else 0.0
        score = cosine - params.unknown_weight * unknown - params.negation_weight * negation
        scored.append(Scored(curated_answer_id=candidate.curated_answer_id, score=round(score, 4),
                             cosine=round(cosine, 4), unknown=round(unknown, 4), phrasing=best))
    scored.sort(key=lambda s: (-s.score, s.curated_answer_id))
    return scored


# --- reads ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CuratedMatch:
    curated_answer_id: int
    question: str
    answer: str
    score: float
    cosine: float

    def citation(self) -> dict[str, Any]:
        """Cited like any answer; the source is the team (no document)."""
        return {"document_id": None, "title": "Answer from the team", "filename": "", "section": "", "page": None,
                "snippet": self.question[:300], "score": self.score, "chunk_id": None,
                "curated_answer_id": self.curated_answer_id}


# Per process: (schema) -> (version, model name, candidates). The version is the table's row count and latest
# update, read with one aggregate query per question, so an edit anywhere is seen by the next question everywhere.
_cache: dict[str, tuple[tuple[int, Any], str, list[Candidate]]] = {}
_cache_lock = threading.Lock()
_CACHE_SCHEMAS = 256


def _require_workspace() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise ApplicationError("Curated answers belong to a workspace; no workspace is selected.",
                               code=ErrorCode.WRONG_SCHEMA)
    return schema


def _candidates() -> list[Candidate]:
    schema = _require_workspace()
    version = CuratedAnswer.objects.aggregate(n=Count("id"), at=Max("updated_at"))
    key = (version["n"], version["at"])
    if not key[0]:
        return []
    model_name = _embedding_model_name()
    cached = _cache.get(schema)
    if cached is not None and cached[0] == key and cached[1] == model_name:
        return cached[2]
    stale = list(CuratedAnswer.objects.exclude(embedding_model=model_name))
    for curated in stale:  # written under another model (an import, a changed setting): embed again, once
        _embeddings_refresh(curated)
        CuratedAnswer.objects.filter(pk=curated.pk).update(embeddings=curated.embeddings,
                                                           embedding_model=curated.embedding_model)
    candidates = []
    for pk, question, examples, embeddings in CuratedAnswer.objects.values_list("pk", "question", "examples",
                                                                              "embeddings"):
        phrasings = [question, *[str(e) for e in examples or []]]
        vectors = np.asarray(embeddings or [], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(phrasings):
            continue
        candidates.append(candidate_build(curated_answer_id=pk, phrasings=phrasings, vectors=vectors))
    with _cache_lock:
        if len(_cache) >= _CACHE_SCHEMAS:
            _cache.clear()
        _cache[schema] = (key, model_name, candidates)
    return candidates


def curated_answer_match(*, question: str, params: MatchParams = MATCH_PARAMS) -> CuratedMatch | None:
    """The curated answer to serve for `question`, or None. Never raises for a failing embedding service: the
    question then goes to retrieval as if no curated answer matched."""
    question = question_clean(question)[:MAX_QUESTION_CHARS]
    if not question:
        return None
    try:
        candidates = _candidates()
        if not candidates:
            return None
        vectors, _name = _embed([question])
    except ApplicationError as error:
        if error.code == ErrorCode.WRONG_SCHEMA:
            raise
        logger.warning("curated answers: no match attempted (%s)", error.code)
        return None
    scored = candidates_score(question=question, vector=vectors[0], candidates=candidates, params=params)
    if not scored or scored[0].score < params.threshold:
        return None
    best = scored[0]
    row = CuratedAnswer.objects.filter(pk=best.curated_answer_id).values_list("question", "answer").first()
    if row is None:  # deleted since the candidates were read
        return None
    return CuratedMatch(curated_answer_id=best.curated_answer_id, question=row[0], answer=row[1], score=best.score,
                        cosine=best.cosine)


def curated_answers_similar(*, question: str, limit: int = 3) -> list[tuple[CuratedAnswer, float]]:
    """The curated answers closest to `question`, above the threshold or not (for "add it as a phrasing")."""
    question = question_clean(question)[:MAX_QUESTION_CHARS]
    if not question:
        return []
    try:
        candidates = _candidates()
        if not candidates:
            return []
        vectors, _name = _embed([question])
    except ApplicationError as error:
        if error.code == ErrorCode.WRONG_SCHEMA:
            raise
        return []
    scored = candidates_score(question=question, vector=vectors[0], candidates=candidates)[:max(0, limit)]
    found = CuratedAnswer.objects.in_bulk([s.curated_answer_id for s in scored])
    return [(found[s.curated_answer_id], s.score) for s in scored if s.curated_answer_id in found]


def curated_answer_list(*, search: str | None = None) -> QuerySet[CuratedAnswer]:
    queryset = CuratedAnswer.objects.select_related("created_by", "updated_by").order_by("-updated_at", "-id")
    if search:
        queryset = queryset.filter(Q(question__icontains=search) | Q(answer__icontains=search))
    return queryset


def curated_answer_get(*, curated_answer_id: int) -> CuratedAnswer:
    curated = CuratedAnswer.objects.filter(pk=curated_answer_id).first()
    if curated is None:
        raise NotFound("No such curated answer.")
    return curated


# --- writes --------------------------------------------------------------------------------------------------------
def _examples_clean(examples: Any, question: str) -> list[str]:
    if examples is None:
        return []
    if isinstance(examples, str):
        examples = examples.splitlines()
    if not isinstance(examples, (list, tuple)):
        raise ValidationFailed("Examples are a list of questions.", details={"field": "examples"})
    cleaned: list[str] = []
    seen = {question.lower()}
    for example in examples:
        text = question_clean(example)
        if not text or text.lower() in seen:
            continue
        if len(text) > MAX_QUESTION_CHARS:
            raise ValidationFailed(f"An example is longer than {MAX_QUESTION_CHARS} characters.",
                                   details={"field": "examples", "max_chars": MAX_QUESTION_CHARS})
        seen.add(text.lower())
        cleaned.append(text)
    if len(cleaned) > MAX_EXAMPLES:
        raise ValidationFailed(f"At most {MAX_EXAMPLES} examples per curated answer.",
                               details={"field": "examples", "max_items": MAX_EXAMPLES})
    return cleaned


def _fields_clean(*, question: Any, answer: Any, examples: Any) -> tuple[str, str, list[str]]:
    question = question_clean(question)
    if not question:
        raise ValidationFailed("The question is empty.", details={"field": "question"})
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationFailed(f"The question is longer than {MAX_QUESTION_CHARS} characters.",
                               details={"field": "question", "max_chars": MAX_QUESTION_CHARS})
    answer = _storable(str(answer or "")).strip()
    if not answer:
        raise ValidationFailed("The answer is empty.", details={"field": "answer"})
    if len(answer) > MAX_ANSWER_CHARS:
        raise ValidationFailed(f"The answer is longer than {MAX_ANSWER_CHARS} characters.",
                               details={"field": "answer", "max_chars": MAX_ANSWER_CHARS})
    return question, answer, _examples_clean(examples, question)


def _embeddings_refresh(curated: CuratedAnswer) -> None:
    vectors, name = _embed(curated.phrasings)
    curated.embeddings = [[round(float(x), 6) for x in row] for row in vectors]
    curated.embedding_model = name


def _actor(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None


def _audit(action: str, *, actor: Any, curated: CuratedAnswer, data: dict[str, Any] | None = None) -> None:
    from accounts.services import audit_record

    audit_record(workspace=connection.tenant, actor=_actor(actor), action=action,
                 target=f"curated_answer:{curated.pk} {curated.question[:80]}", data=data or {})


def curated_answer_create(*, question: Any, answer: Any, examples: Any = None, actor: Any = None,
                          source_message_id: int | None = None) -> CuratedAnswer:
    """Store an answer the team wrote; served from the next question on. The phrasings are embedded here (before
    the transaction), so the answer path never embeds stored text."""
    _require_workspace()
    question, answer, examples = _fields_clean(question=question, answer=answer, examples=examples)
    curated = CuratedAnswer(question=question, answer=answer, examples=examples,
                            source_message_id=source_message_id if source_message_id else None,
                            created_by=_actor(actor), updated_by=_actor(actor))
    _embeddings_refresh(curated)
    with transaction.atomic():
        curated.save()
        _audit("curated_answer.created", actor=actor, curated=curated)
    return curated


def curated_answer_update(*, curated: CuratedAnswer, question: Any = None, answer: Any = None, examples: Any = None,
                          actor: Any = None) -> CuratedAnswer:
    """Change any of question, answer, examples (None keeps it); phrasings are embedded again when they change."""
    _require_workspace()
    question, answer, examples = _fields_clean(
        question=curated.question if question is None else question,
        answer=curated.answer if answer is None else answer,
        examples=curated.examples if examples is None else examples,
    )
    phrasings_changed = [question, *examples] != curated.phrasings
    curated.question, curated.answer, curated.examples = question, answer, examples
    curated.updated_by = _actor(actor)
    if phrasings_changed or not curated.embeddings:
        _embeddings_refresh(curated)
    with transaction.atomic():
        curated.save()
        _audit("curated_answer.updated", actor=actor, curated=curated)
    return curated


def curated_answer_delete(*, curated: CuratedAnswer, actor: Any = None) -> None:
    _require_workspace()
    with transaction.atomic():
        _audit("curated_answer.deleted", actor=actor, curated=curated)
        curated.delete()


def curated_answer_hit_record(*, curated_answer_id: int) -> None:
    """Count one serving (one UPDATE; a curated answer deleted meanwhile counts nothing)."""
    CuratedAnswer.objects.filter(pk=curated_answer_id).update(hits=F("hits") + 1, last_hit_at=timezone.now())


# --- CSV -----------------------------------------------------------------------------------------------------------
def _csv_safe(value: str) -> str:
    """Spreadsheets run a cell that starts with = + - @ as a formula; a quote in front keeps it text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def curated_answers_csv_export() -> str:
    """Every curated answer as CSV: question, answer, examples (joined with " | ")."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "hits", "last_hit_at"])
    for curated in CuratedAnswer.objects.order_by("id"):
        writer.writerow([_csv_safe(curated.question), _csv_safe(curated.answer),
                         _csv_safe(f" {EXAMPLES_SEPARATOR} ".join(curated.examples or [])), curated.hits,
                         curated.last_hit_at.isoformat() if curated.last_hit_at else ""])
    return out.getvalue()


def _csv_unsafe(value: str) -> str:
    return value[1:] if value[:2] in ("'=", "'+", "'-", "'@") else value


@dataclass
class CsvImportReport:
    created: int
    updated: int
    errors: list[dict[str, Any]]


def curated_answers_csv_import(*, data: bytes, actor: Any = None) -> CsvImportReport:
    """Rows with `question` and `answer` (and optionally `examples`, separated by "|"). A row whose question equals
    an existing curated answer's question (case aside) updates it. Every row is checked before anything is written:
    one bad row refuses the whole file (400 with the rows and their problems)."""
    _require_workspace()
    if len(data) > MAX_CSV_BYTES:
        raise ValidationFailed("The CSV file is too large.", details={"max_bytes": MAX_CSV_BYTES})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("The CSV file is not UTF-8 text.", code=ErrorCode.INVALID) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [str(name or "").strip().lower() for name in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [name for name in ("question", "answer") if name not in header]
        if missing:
            raise ValidationFailed("The CSV file needs a header row with the columns question and answer.",
                                   details={"missing_columns": missing})
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) > MAX_CSV_ROWS:
                raise ValidationFailed(f"At most {MAX_CSV_ROWS} rows per file.", details={"max_rows": MAX_CSV_ROWS})
    except csv.Error as error:
        raise ValidationFailed("The CSV file could not be read.", details={"reason": str(error)[:200]}) from None
    cleaned: list[tuple[str, str, list[str]]] = []
    errors: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=2):
        examples = [_csv_unsafe(e.strip()) for e in str(row.get("examples") or "").split(EXAMPLES_SEPARATOR)]
        try:
            cleaned.append(_fields_clean(question=_csv_unsafe(str(row.get("question") or "")),
                                         answer=_csv_unsafe(str(row.get("answer") or "")), examples=examples))
        except ValidationFailed as error:
            errors.append({"row": number, "message": error.message, **error.details})
    if errors:
        raise ValidationFailed("Some rows of the CSV file are not valid; nothing was imported.",
                               details={"rows": errors[:50]})
    if not cleaned:
        raise ValidationFailed("The CSV file has no rows.", details={"rows": []})
    existing = {q.lower(): pk for pk, q in CuratedAnswer.objects.values_list("pk", "question")}
    created = updated = 0
    prepared: list[CuratedAnswer] = []
    last_of = {question.lower(): (question, answer, examples) for question, answer, examples in cleaned}
    for question, answer, examples in last_of.values():  # a question twice in one file: its last row counts
        pk = existing.get(question.lower())
        curated = (CuratedAnswer.objects.get(pk=pk) if pk else
                   CuratedAnswer(created_by=_actor(actor)))
        curated.question, curated.answer, curated.examples = question, answer, examples
        curated.updated_by = _actor(actor)
        prepared.append(curated)
    vectors, name = _embed([p for curated in prepared for p in curated.phrasings])
    at = 0
    for curated in prepared:
        n = len(curated.phrasings)
        curated.embeddings = [[round(float(x), 6) for x in row] for row in vectors[at:at + n]]
        curated.embedding_model = name
        at += n
    with transaction.atomic():
        for curated in prepared:
            if curated.pk:
                updated += 1
            else:
                created += 1
            curated.save()
        from accounts.services import audit_record

        audit_record(workspace=connection.tenant, actor=_actor(actor), action="curated_answer.imported",
                     target="csv", data={"created": created, "updated": updated})
    return CsvImportReport(created=created, updated=updated, errors=[])
