"""The ingestion pipeline of one document, run by a worker in the workspace's schema: fetch → parse → chunk →
embed → index.

Safe to run again at any point (acks_late redelivers a job whose worker died):
- a run carries the document's `run_token`; a newer run (retry, reindex, new version) supersedes it, and a run that
  finds itself superseded or its document deleted stops at the next progress report and writes nothing more;
- one run per document at a time (a PostgreSQL advisory lock; a second delivery waits its turn);
- vectors have ids derived from (document, ordinal), so writing them again overwrites; the chunk rows are replaced
  (delete, then insert) in the same transaction that marks the document indexed.
Failures: permanent ones (a ParseError, a forbidden URL, ...) fail the document at once with their code; transient
ones (a page that timed out, the database or vector store briefly away) retry with exponential backoff and jitter
until DOCUMENT_RETRY_MAX, then fail with the last reason.
"""
from __future__ import annotations

import hashlib
import logging
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import File
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from config.errors import ApplicationError, ErrorCode
from config.metrics import ingest_stages_observe
from documents import events, services
from documents.embedding import model_identity
from documents.models import Chunk, Document, DocumentSource, DocumentStage, DocumentStatus, chunk_vector_id

logger = logging.getLogger(__name__)

EMBED_BATCH = 64
UPSERT_BATCH = 512
PREVIEW_CHARS = 20_000
PROGRESS_EVERY_SECONDS = 0.5
RETRY_BACKOFF_FACTOR = 5
BUSY_COUNTDOWN = 5.0
URL_TIMEOUT_SECONDS = 20
# Codes of ApplicationErrors that may well succeed later (everything else with a code is permanent).
TRANSIENT_CODES = frozenset({"url_timeout", "url_unreachable", ErrorCode.SERVICE_UNAVAILABLE.value})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, ConnectionError,
                                                         TimeoutError)


class Superseded(Exception):
    """This run is no longer the document's current one (a newer run started, or the document was deleted)."""


class RetryLater(Exception):
    def __init__(self, countdown: float, code: str, message: str) -> None:
        super().__init__(message)
        self.countdown, self.code, self.message = countdown, code, message


class Busy(Exception):
    """Another run of this document holds its lock; try again shortly."""


@dataclass
class Run:
    """What a run knows about its document, so progress events need no read of the row."""

    document_id: int
    run_token: str
    schema_name: str
    title: str = ""
    version: int = 1
    stage: str = DocumentStage.UPLOAD
    stage_progress: int = 0
    status: str = DocumentStatus.PROCESSING
    chunk_count: int = 0
    error_code: str = ""
    error_message: str = ""
    next_retry_at: Any = None
    last_report: float = 0.0
    pending: dict[str, Any] = field(default_factory=dict)  # fields waiting for the next write
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0) + (time.perf_counter() - started) * 1000, 1)


def retry_max() -> int:
    return int(getattr(settings, "DOCUMENT_RETRY_MAX", 5))


def retry_countdown(retries: int) -> float:
    """Exponential backoff with jitter: about factor * 2^retries seconds (half fixed, half random), capped."""
    ceiling = min(float(getattr(settings, "DOCUMENT_RETRY_BACKOFF_MAX", 600)), RETRY_BACKOFF_FACTOR * 2**retries)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# --- reporting -------------------------------------------------------------------------------------------------
def _signal_on_commit(signal: Any, **kwargs: Any) -> None:
    """Tell the floors above (documents/events.py) once committed; a listener's failure never fails ingestion."""

    def send() -> None:
        try:
            signal.send(sender=Document, **kwargs)
        except Exception:
            logger.exception("documents: a receiver of %s failed", signal)

    transaction.on_commit(send)




def _publish(run: Run) -> None:
    services.document_event_send(schema_name=run.schema_name, payload={
        "type": "document.progress", "document_id": run.document_id, "title": run.title, "status": run.status,
        "stage": run.stage, "stage_progress": run.stage_progress,
        "progress": services.document_progress_overall(stage=run.stage, stage_progress=run.stage_progress,
                                                       status=run.status),
        "chunk_count": run.chunk_count, "version": run.version, "error_code": run.error_code,
        "error_message": run.error_message,
        "next_retry_at": run.next_retry_at.isoformat() if run.next_retry_at else None,
    })


def _write(run: Run, **fields: Any) -> bool:
    """Update this run's document (only while the run is current). Progress is not worth an fsync per write:
    these commits don't wait for the WAL flush (the final state of a run does)."""
    with transaction.atomic():
        if fields.get("status") not in (DocumentStatus.INDEXED, DocumentStatus.FAILED):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        return bool(Document.objects.filter(pk=run.document_id, run_token=run.run_token).update(**fields))


def _report(run: Run, *, stage: str, progress: int, force: bool = False, **fields: Any) -> None:
    """Note the stage and its progress; save them (with a heartbeat) and push them live at most every half second,
    or at once with `force`. Raises Superseded when the run is no longer the document's current one."""
    run.stage, run.stage_progress = stage, max(0, min(100, progress))
    run.pending.update(fields)
    now = time.monotonic()
    if not force and now - run.last_report < PROGRESS_EVERY_SECONDS:
        return
    pending, run.pending = run.pending, {}
    written = _write(run, status=DocumentStatus.PROCESSING, stage=run.stage, stage_progress=run.stage_progress,
                     heartbeat_at=timezone.now(), updated_at=timezone.now(), **pending)
    if not written:
        raise Superseded
    run.last_report = now
    _publish(run)


def _finish_failed(run: Run, *, code: str, message: str) -> None:
    now = timezone.now()
    run.status, run.error_code, run.error_message, run.next_retry_at = DocumentStatus.FAILED, str(code)[:60], \
        message[:2000], None
    pending = {k: v for k, v in run.pending.items() if k in ("title", "text_preview")}
    if _write(run, status=DocumentStatus.FAILED, timings=run.timings, stage=run.stage, error_code=run.error_code,
              error_message=run.error_message, last_error_at=now, next_retry_at=None, heartbeat_at=now,
              updated_at=now, **pending):
        _publish(run)
        document = Document.objects.filter(pk=run.document_id).first()
        if document is not None:
            _signal_on_commit(events.document_failed, document=document, error_code=run.error_code)
    logger.info("document failed", extra={"document": run.document_id, "code": code})


def _schedule_retry(run: Run, *, retries: int, code: str, message: str) -> RetryLater:
    countdown = retry_countdown(retries)
    now = timezone.now()
    run.status, run.error_code = DocumentStatus.RETRYING, str(code)[:60]
    run.error_message = f"Attempt {retries + 1} failed: {message}"[:2000]
    run.next_retry_at = now + timedelta(seconds=countdown)
    if _write(run, status=DocumentStatus.RETRYING, error_code=run.error_code, error_message=run.error_message,
              last_error_at=now, next_retry_at=run.next_retry_at, updated_at=now):
        _publish(run)
    return RetryLater(countdown, code, message)


# --- locking ---------------------------------------------------------------------------------------------------


def _lock_key(schema_name: str, document_id: int) -> int:
    digest = hashlib.blake2b(f"documents:{schema_name}:{document_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _document_lock(schema_name: str, document_id: int) -> Iterator[None]:
    """One run per document at a time (advisory locks are database-wide, so the key carries the schema). The lock
    belongs to the database session: a worker that dies releases it with its connection."""
    key = _lock_key(schema_name, document_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            raise Busy
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        except Exception:  # the connection is gone, and the lock with it
            pass


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    result: str  # indexed | failed | superseded | gone | already_indexed | rerouted
    chunks: int = 0
    reroute_queue: str | None = None


def document_ingest_run(*, document_id: int, run_token: str, retries: int = 0, queue: str = "") -> Outcome:
    """Run the pipeline for one document. Raises RetryLater (transient failure) or Busy (locked); the task turns
    those into a delayed retry."""
    schema = connection.schema_name
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        return Outcome("gone")
    if document.run_token != run_token:
        return Outcome("superseded")
    if document.status == DocumentStatus.INDEXED and document.indexed_run_token == run_token:
        return Outcome("already_indexed", chunks=document.chunk_count)
    run = Run(document_id=document.pk, run_token=run_token, schema_name=schema, title=document.title,
              version=document.version)
    with _document_lock(schema, document.pk):
        document.refresh_from_db()
        if document.run_token != run_token:
            return Outcome("superseded")
        if document.status == DocumentStatus.INDEXED and document.indexed_run_token == run_token:
            return Outcome("already_indexed", chunks=document.chunk_count)
        # Every delivery counts, including redeliveries after a crash: a file that kills its worker every time
        # must end as failed, not loop forever.
        attempts = document.attempts + 1
        now = timezone.now()
        run.stage = DocumentStage.FETCH if (document.source == DocumentSource.URL and not document.file) \
            else DocumentStage.PARSE
        # `queue`: where this delivery came from (the dashboard shows it; large documents have a queue of their own).
        if not _write(run, attempts=attempts, started_at=now, heartbeat_at=now, updated_at=now,
                      status=DocumentStatus.PROCESSING, stage=run.stage, stage_progress=0,
                      **({"queue": queue[:40]} if queue else {})):
            return Outcome("superseded")
        run.last_report = time.monotonic()
        if document.queued_at:
            run.timings["queue_wait"] = round(max(0.0, (now - document.queued_at).total_seconds()) * 1000, 1)
        _publish(run)
        if attempts > retry_max() + 3:
            _finish_failed(run, code=ErrorCode.TOO_MANY_ATTEMPTS, message=(
                f"Processing stopped {attempts - 1} times without finishing (the worker may have crashed on this "
                "file). Check the file, then retry."))
            return Outcome("failed")
        try:
            return _run_stages(run, document, retries=retries)
        except Superseded:
            if not Document.objects.filter(pk=document_id).exists():
                _vectors_cleanup(schema, document_id)  # deleted while we ran: take back what we wrote
                return Outcome("gone")
            return Outcome("superseded")
        except RetryLater:
            raise
        except SoftTimeLimitExceeded:
            soft, _hard = services.queue_time_limits(document.queue)
            _finish_failed(run, code=ErrorCode.TIME_LIMIT, message=(
                f"Processing took longer than the {soft // 60}-minute limit. Split the document into smaller files, "
                "or retry when the system is less busy."))
            return Outcome("failed")
        except ApplicationError as error:
            if _is_transient(error):
                return _transient(run, retries=retries, code=error.code, message=error.message)
            _finish_failed(run, code=error.code, message=error.message)
            return Outcome("failed")
        except TRANSIENT_EXCEPTIONS as exc:
            logger.warning("transient failure ingesting document %s", document_id, exc_info=True)
            _reset_connection_if_broken()
            return _transient(run, retries=retries, code=ErrorCode.SERVICE_UNAVAILABLE,
                              message=f"A service we depend on was briefly unavailable ({type(exc).__name__}).")
        except MemoryError:
            _finish_failed(run, code="file_too_complex", message="This document needs more memory than we allow.")
            return Outcome("failed")
        except Exception as exc:
            logger.exception("unexpected failure ingesting document %s", document_id)
            _finish_failed(run, code=ErrorCode.INGEST_ERROR, message=(
                f"Something unexpected went wrong while processing this document ({type(exc).__name__}). "
                "We logged it; retry, or contact support if it happens again."))
            return Outcome("failed")


def _is_transient(error: ApplicationError) -> bool:
    """Errors say whether trying again can help (`transient`); ParseErrors are permanent; else by code."""
    if getattr(error, "permanent", False):
        return False
    flag = getattr(error, "transient", None)
    if flag is not None:
        return bool(flag)
    return error.code in TRANSIENT_CODES


def _transient(run: Run, *, retries: int, code: str, message: str) -> Outcome:
    if retries >= retry_max():
        _finish_failed(run, code=code, message=f"Gave up after {retries + 1} attempts: {message}")
        return Outcome("failed")
    raise _schedule_retry(run, retries=retries, code=code, message=message)


def _reset_connection_if_broken() -> None:
    if connection.connection is not None and not connection.is_usable():
        connection.close()


def _vectors_cleanup(schema_name: str, document_id: int) -> None:
    from documents.vectors import vectors_delete_document

    try:
        vectors_delete_document(schema_name=schema_name, document_id=document_id)
    except Exception:
        logger.warning("could not remove vectors of deleted document %s", document_id, exc_info=True)


def _run_stages(run: Run, document: Document, *, retries: int) -> Outcome:
    from documents.chunking import document_chunk
    from documents.parsers import document_parse

    if document.source == DocumentSource.URL and not document.file:
        with run.timed("fetch"):
            document = _stage_fetch(run, document)
        target = services.queue_for_size(document.size_bytes)
        if target != document.queue:  # the page turned out big: continue on the large queue
            Document.objects.filter(pk=document.pk, run_token=run.run_token).update(
                queue=target, status=DocumentStatus.QUEUED, stage=DocumentStage.PARSE, stage_progress=0)
            return Outcome("rerouted", reroute_queue=target)

    _report(run, stage=DocumentStage.PARSE, progress=0)
    anchors: dict[str, str] = {}
    with run.timed("parse"), services.stored_file_local(document.file) as path:
        parsed = document_parse(path=path, kind=document.content_type, filename=document.original_name or "document")
        if document.source == DocumentSource.URL and document.content_type == "html":
            # A citation links to the page at the heading its passage sits under, as for crawled pages.
            from documents.crawler import page_anchors

            anchors = page_anchors(Path(path).read_bytes())
    title = document.title
    if not document.title_is_custom and parsed.title and parsed.title != "Untitled":
        title = parsed.title[:300]
    run.title = title
    preview = _preview(parsed)
    _report(run, stage=DocumentStage.PARSE, progress=100, title=title, text_preview=preview)

    _report(run, stage=DocumentStage.CHUNK, progress=0)
    with run.timed("chunk"):
        drafts = document_chunk(parsed=parsed, title=title)
    if not drafts:
        raise ApplicationError("No text was found in this document.", code="empty_document")
    run.chunk_count = len(drafts)
    _report(run, stage=DocumentStage.CHUNK, progress=100, chunk_count=len(drafts),
            token_count=sum(d.token_count for d in drafts))

    with run.timed("embed"):
        embeddings, model_name, digests = _stage_embed(run, drafts)
    _stage_index(run, document, drafts, embeddings, title=title, model_name=model_name, digests=digests,
                 anchors=anchors)
    return Outcome("indexed", chunks=len(drafts))


def _preview(parsed: Any) -> str:
    parts: list[str] = []
    size = 0
    last_heading: list[str] = []
    for section in parsed.sections:
        if section.heading_path and section.heading_path != last_heading:
            parts.append("\n" + " › ".join(section.heading_path) + "\n")
            last_heading = list(section.heading_path)
        parts.append(section.text)
        size += len(section.text)
        if size >= PREVIEW_CHARS:
            break
    return "\n".join(parts).strip()[:PREVIEW_CHARS]


def _stage_fetch(run: Run, document: Document) -> Document:
    from documents.fetch import url_fetch
    from documents.parsers.sniff import content_sniff_path

    _report(run, stage=DocumentStage.FETCH, progress=0)
    with tempfile.TemporaryDirectory(prefix="ccgpt-fetch-") as folder:
        dest = Path(folder) / "download"
        fetched = url_fetch(url=document.source_url, dest=dest, max_bytes=services.max_upload_bytes(),
                            timeout=int(getattr(settings, "DOCUMENT_URL_TIMEOUT", URL_TIMEOUT_SECONDS)),
                            max_redirects=3)
        _report(run, stage=DocumentStage.FETCH, progress=70)
        filename = services.filename_sanitize(fetched.filename or "page.html")
        kind = content_sniff_path(path=dest, filename=filename)
        digest = hashlib.sha256()
        with open(dest, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        sha = digest.hexdigest()
        existing = Document.objects.filter(sha256=sha).exclude(pk=document.pk).first()
        if existing is not None:
            raise ApplicationError(
                f"This page has the same content as “{existing.title}”, which is already in the knowledge base.",
                code=ErrorCode.DUPLICATE_DOCUMENT, details={"document_id": existing.pk})
        with open(dest, "rb") as handle:
            stored = services._store_stream(source=File(handle, name=filename), filename=filename)
    try:
        with transaction.atomic():
            # The page's size is known only now: storage is checked against the plan under the billing lock (a
            # refusal is a permanent plan_limit failure and keeps nothing).
            services._plan_limits_check(adding_documents=0, adding_bytes=stored.size, replacing=document)
            updated = Document.objects.filter(pk=document.pk, run_token=run.run_token).update(
                file=stored.name, sha256=stored.sha256, size_bytes=stored.size, content_type=kind,
                original_name=filename)
    except IntegrityError:
        services._storage_delete(stored.name)
        raise ApplicationError("The same content was just added to the knowledge base by someone else.",
                               code=ErrorCode.DUPLICATE_DOCUMENT) from None
    except BaseException:
        services._storage_delete(stored.name)
        raise
    if not updated:
        services._storage_delete(stored.name)
        raise Superseded
    _report(run, stage=DocumentStage.FETCH, progress=100)
    document.refresh_from_db()
    return document


def embed_digest(*, model_name: str, text: str) -> str:
    """What a vector depends on, hashed: the model (`documents.embedding.model_identity`: name, and for a remote one
    its server, dimension and window) and the exact text it read."""
    return hashlib.blake2b(f"{model_name}\n{text}".encode(), digest_size=16).hexdigest()


def _stage_embed(run: Run, drafts: list[Any]) -> tuple[np.ndarray, str, list[str]]:
    """The drafts' vectors, their model's name and their digests. A text this workspace has embedded before with the
    same model (a new version of a file, the same paragraph in two documents, a repeated chunk) reuses that vector:
    only the texts seen for the first time go to the model."""
    from documents.embedding import embedder

    model = embedder()
    # What the model reads: the chunk's "title › heading" line and its text (documents/chunking.py).
    texts = [getattr(draft, "embed_text", "") or draft.text for draft in drafts]
    digests = [embed_digest(model_name=model_identity(model), text=text) for text in texts]
    vectors = np.empty((len(texts), model.dimension), dtype=np.float32)
    _report(run, stage=DocumentStage.EMBED, progress=0)
    known = _vectors_reusable(run.schema_name, set(digests))
    todo: dict[str, int] = {}  # digest -> the first row with that text
    for row, digest in enumerate(digests):
        if digest in known:
            vectors[row] = known[digest]
        else:
            todo.setdefault(digest, row)
    rows = list(todo.values())
    for start in range(0, len(rows), EMBED_BATCH):
        batch = rows[start:start + EMBED_BATCH]
        vectors[batch] = np.asarray(model.embed([texts[row] for row in batch]), dtype=np.float32)
        _report(run, stage=DocumentStage.EMBED, progress=int(100 * (start + len(batch)) / len(rows)))
    for row, digest in enumerate(digests):  # repeats within the document
        if digest not in known and todo[digest] != row:
            vectors[row] = vectors[todo[digest]]
    if len(rows) < len(texts):
        logger.info("embedding reused", extra={"document": run.document_id, "reused": len(texts) - len(rows)})
    _report(run, stage=DocumentStage.EMBED, progress=100)
    return vectors, model.name, digests


REUSE_CANDIDATES_PER_TEXT = 2


def _vectors_reusable(schema_name: str, digests: set[str]) -> dict[str, np.ndarray]:
    """Vectors of this workspace already embedded from these digests. The chunk rows say where one may be (one indexed
    query, so a text never seen costs no vector-store read); a vector is used only when its own metadata carries the
    same digest, since rows and vectors are written apart (a chunk row may not have its vector yet, or an older one)."""
    from documents.vectors import vectors_get_with_metadata

    if not digests:
        return {}
    wanted: dict[str, str] = {}
    per_digest: dict[str, int] = {}
    rows = Chunk.objects.filter(embed_digest__in=list(digests)).order_by().values_list(
        "embed_digest", "document_id", "ordinal")
    for digest, document_id, ordinal in rows.iterator():
        if per_digest.get(digest, 0) < REUSE_CANDIDATES_PER_TEXT:
            per_digest[digest] = per_digest.get(digest, 0) + 1
            wanted[chunk_vector_id(document_id, ordinal)] = digest
    if not wanted:
        return {}
    try:
        found = vectors_get_with_metadata(schema_name=schema_name, ids=list(wanted))
    except Exception:  # reuse saves time, it is never needed: embed instead
        logger.warning("could not read vectors to reuse", exc_info=True)
        return {}
    known: dict[str, np.ndarray] = {}
    for vector_id, (embedding, metadata) in found.items():
        if metadata.get("embed_digest") == wanted[vector_id]:
            known[wanted[vector_id]] = np.asarray(embedding, dtype=np.float32)
    return known


FULLTEXT_SQL = """
UPDATE {table} AS c SET search_vector =
    setweight(to_tsvector('english', %s), 'A')
    || setweight(to_tsvector('english', coalesce(c.heading_path, '')), 'A')
    || setweight(to_tsvector('english', c.text), 'B')
WHERE c.document_id = %s
"""


def _sentence_vectors_store_if_small(chunks: list[Chunk]) -> None:
    """A small knowledge base gets the vectors of its chunks' sentences now, before its document turns indexed
    (documents/sentence_vectors.py): its first questions then embed nothing but themselves. A large one stays lazy
    (its questions store the sentences they embed). Failing here fails nothing: questions embed what is missing."""
    limit = settings.RETRIEVAL_SENTENCE_VECTORS_AT_INGESTION_MAX_CHUNKS
    if limit <= 0 or not chunks:
        return
    from documents.sentence_vectors import sentence_vectors_store

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce((SELECT chunks FROM documents_lexicaltotals), 0)")
            if cursor.fetchone()[0] > limit:
                return
        sentence_vectors_store(chunks=[(chunk.pk, chunk.text) for chunk in chunks])
    except (SoftTimeLimitExceeded, Superseded):
        raise
    except Exception:  # noqa: BLE001 — an optimisation; the document is indexed all the same
        logger.warning("sentence vectors not stored at ingestion", exc_info=True)


def _heading_anchor(heading_path: str | None, anchors: dict[str, str]) -> str:
    """The page anchor of a chunk's innermost heading (documents/sources.py does the same for crawled pages)."""
    from documents.chunking import HEADING_SEPARATOR

    last = (heading_path or "")[:1000].split(HEADING_SEPARATOR)[-1] if heading_path else ""
    return anchors.get(last, "")[:200] if last else ""


def _stage_index(run: Run, document: Document, drafts: list[Any], embeddings: np.ndarray, *, title: str,
                 model_name: str, digests: list[str], anchors: dict[str, str] | None = None) -> None:
    """Chunk rows first (replaced in one transaction, so a re-run never doubles them), then their vectors (all of
    the document's old vectors go first; ids come from (document, ordinal), so a re-run overwrites), then the
    document turns indexed. Search only sees chunks of indexed documents, so nothing half-written is ever found."""
    from documents.resident_vectors import resident_vectors_write
    from documents.vectors import vectors_delete_document, vectors_upsert

    started = time.perf_counter()
    _report(run, stage=DocumentStage.INDEX, progress=0)
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document.pk, run_token=run.run_token).first()
        if locked is None:
            raise Superseded
        # Chunk rows are committed before any vector is written, so no rows means no vectors to remove either.
        had_chunks = Chunk.objects.filter(document_id=document.pk).delete()[0] > 0
        chunks = Chunk.objects.bulk_create(
            [Chunk(document_id=document.pk, ordinal=draft.ordinal, text=draft.text, token_count=draft.token_count,
                   heading_path=(draft.heading_path or "")[:1000], page=draft.page, embed_digest=digest,
                   anchor=_heading_anchor(draft.heading_path, anchors or {}))
             for draft, digest in zip(drafts, digests, strict=True)],
            batch_size=1000,
        )
        with connection.cursor() as cursor:
            cursor.execute(FULLTEXT_SQL.format(table=connection.ops.quote_name(Chunk._meta.db_table)),
                           [title, document.pk])
        # The workspace's own copy of the vectors (documents/resident_vectors.py) changes with the chunk rows, in
        # their transaction: it can never describe other chunks than the rows do.
        resident_vectors_write(schema_name=run.schema_name, chunk_ids=[chunk.pk for chunk in chunks],
                               embeddings=embeddings.tolist())
        pending, run.pending = run.pending, {}
        pending.update(chunk_count=len(drafts), token_count=sum(d.token_count for d in drafts), title=title)
        run.stage_progress = 20
        Document.objects.filter(pk=document.pk).update(
            status=DocumentStatus.PROCESSING, stage=DocumentStage.INDEX, stage_progress=20,
            heartbeat_at=timezone.now(), updated_at=timezone.now(), **pending,
        )
    if had_chunks:
        vectors_delete_document(schema_name=run.schema_name, document_id=document.pk)
    for start in range(0, len(chunks), UPSERT_BATCH):
        batch = chunks[start:start + UPSERT_BATCH]
        vectors_upsert(
            schema_name=run.schema_name,
            ids=[chunk_vector_id(document.pk, chunk.ordinal) for chunk in batch],
            embeddings=embeddings[start:start + len(batch)].tolist(),
            metadatas=[{"chunk_id": chunk.pk, "document_id": document.pk, "ordinal": chunk.ordinal,
                        "version": run.version, "page": chunk.page if chunk.page is not None else -1,
                        "embed_digest": chunk.embed_digest}
                       for chunk in batch],
            documents=[chunk.text for chunk in batch],
        )
        _report(run, stage=DocumentStage.INDEX, progress=20 + int(75 * (start + len(batch)) / len(chunks)))
    _sentence_vectors_store_if_small(chunks)
    now = timezone.now()
    run.timings["index"] = round((time.perf_counter() - started) * 1000, 1)
    updated = _write(
        run, status=DocumentStatus.INDEXED, stage=DocumentStage.DONE, stage_progress=100, indexed_at=now,
        heartbeat_at=now, updated_at=now, indexed_run_token=run.run_token, error_code="", error_message="",
        next_retry_at=None, embedding_model=model_name[:200], timings=run.timings,
    )
    if not updated:
        raise Superseded
    run.status, run.stage, run.stage_progress = DocumentStatus.INDEXED, DocumentStage.DONE, 100
    _publish(run)
    ingest_stages_observe(timings_ms=run.timings, queue=document.queue)
    _signal_on_commit(events.document_ingested, document=document)
    logger.info("document indexed", extra={"document": document.pk, "chunks": len(drafts)})
