"""Knowledge base reads, in the current workspace's schema: lists, detail, failed jobs, chunk search."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from config.errors import NotFound
from documents.models import Chunk, Document, DocumentStatus, chunk_vector_id_parse

# A job that reported nothing for this long is probably on a worker that died; say so instead of "processing".
STALL_AFTER = timedelta(minutes=3)
QUEUED_LONG_AFTER = timedelta(minutes=2)

# Plain words for each failure code a person may see. Codes not listed fall back to the stored message.
ERROR_HELP: dict[str, str] = {
    "empty_document": "No text was found in this file. If it is a scan, run it through OCR first.",
    "corrupt_file": "The file is damaged and could not be read. Export or save it again, then upload it.",
    "encrypted_file": "The file is password-protected. Remove the password, then upload it again.",
    "file_too_complex": "The file is too large or too complex to process safely. Split it into smaller files.",
    "unsupported_type": "This kind of file isn't supported. Upload PDF, Word (.docx), text, Markdown, HTML or CSV.",
    "url_invalid": "That web address isn't valid.",
    "url_forbidden": "That web address points to a private or local network, which we don't fetch from.",
    "url_unreachable": "The web page could not be reached.",
    "url_timeout": "The web page took too long to answer.",
    "url_too_large": "The web page is larger than the per-file limit.",
    "duplicate_document": "The same content is already in the knowledge base.",
    "time_limit": "Processing took longer than allowed. Split the document into smaller files.",
    "too_many_attempts": "Processing stopped several times without finishing. Check the file, then retry.",
    "file_missing": "The stored file is missing. Upload it again.",
    "queue_unavailable": "The job queue could not be reached. Retry in a moment.",
    "service_unavailable": "A service we depend on was unavailable. It will be retried.",
    "ingest_error": "Something unexpected went wrong. Retry, or contact support if it happens again.",
}


def document_list(
    *, search: str | None = None, status: str | None = None, source: str | None = None
) -> QuerySet[Document]:
    documents = Document.objects.select_related("uploaded_by").defer("text_preview")
    if search:
        term = search.strip()[:200]
        documents = documents.filter(
            Q(title__icontains=term) | Q(original_name__icontains=term) | Q(source_url__icontains=term)
        )
    if status:
        documents = documents.filter(status=status)
    if source:
        documents = documents.filter(source=source)
    return documents.order_by("-created_at", "-id")


def document_get(*, document_id: int) -> Document:
    document = Document.objects.select_related("uploaded_by").filter(pk=document_id).first()
    if document is None:
        raise NotFound("No such document.", details={"document_id": document_id})
    return document


def document_failed_list() -> QuerySet[Document]:
    """Failed jobs: documents whose ingestion ended in failure (retries exhausted or a permanent error)."""
    return Document.objects.filter(status=DocumentStatus.FAILED).defer("text_preview").order_by("-last_error_at", "-id")


def document_status_counts() -> dict[str, int]:
    counts = {status.value: 0 for status in DocumentStatus}
    for row in Document.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    counts["all"] = sum(counts.values())
    return counts


def document_usage() -> dict[str, int]:
    usage = Document.objects.aggregate(documents=Count("id"), bytes=Sum("size_bytes"), chunks=Sum("chunk_count"))
    return {key: value or 0 for key, value in usage.items()}


def document_chunks(*, document: Document, limit: int = 50, offset: int = 0) -> QuerySet[Chunk]:
    return Chunk.objects.filter(document=document).defer("search_vector").order_by("ordinal")[offset:offset + limit]


def document_state_note(document: Document, *, now: Any = None) -> str:
    """Where a document is and why, in plain words (never just "stuck")."""
    now = now or timezone.now()
    status = document.status
    if status == DocumentStatus.INDEXED:
        return f"Indexed: {document.chunk_count} chunks."
    if status == DocumentStatus.FAILED:
        help_text = ERROR_HELP.get(document.error_code, "")
        message = document.error_message or help_text or "Processing failed."
        return message if not help_text or help_text == message else f"{message} {help_text}"
    if status == DocumentStatus.RETRYING:
        when = document.next_retry_at
        if when and when > now:
            seconds = int((when - now).total_seconds())
            wait = f"in {seconds} s" if seconds < 120 else f"in {seconds // 60} min"
        else:
            wait = "shortly"
        return f"{document.error_message or 'A temporary problem.'} Trying again {wait}."
    if status == DocumentStatus.PROCESSING:
        beat = document.heartbeat_at or document.started_at
        if beat and now - beat > STALL_AFTER:
            return ("No progress for a few minutes: the worker may have stopped. The job is picked up again "
                    "automatically when the worker returns; or press Retry.")
        return f"{document.get_stage_display()}: {document.stage_progress}%."
    # queued
    since = document.queued_at or document.created_at
    if since and now - since > QUEUED_LONG_AFTER:
        return (f"Waiting in the “{document.queue}” queue for {int((now - since).total_seconds() // 60)} min. "
                "Jobs ahead of it are being processed; if nothing moves, check that a worker is running "
                "(`make run` starts one).")
    return f"Waiting for a worker (queue “{document.queue}”)."


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: int
    document_id: int
    ordinal: int
    title: str
    filename: str
    heading_path: str
    page: int | None
    text: str
    score: float


def _hits(rows: list[Chunk], scores: dict[int, float]) -> list[ChunkHit]:
    return [
        ChunkHit(
            chunk_id=chunk.pk, document_id=chunk.document_id, ordinal=chunk.ordinal, title=chunk.document.title,
            filename=chunk.document.original_name, heading_path=chunk.heading_path, page=chunk.page, text=chunk.text,
            score=float(scores[chunk.pk]),
        )
        for chunk in rows
    ]


def chunk_fulltext_search(*, query: str, limit: int = 10) -> list[ChunkHit]:
    """PostgreSQL full text over the workspace's indexed chunks (websearch syntax: "quoted phrases", -not, or)."""
    query = (query or "").strip()[:500]
    if not query:
        return []
    ts_query = SearchQuery(query, search_type="websearch", config="english")
    rows = list(
        Chunk.objects.filter(search_vector=ts_query, document__status=DocumentStatus.INDEXED)
        .annotate(rank=SearchRank(F("search_vector"), ts_query, cover_density=True))
        .select_related("document")
        .defer("search_vector", "document__text_preview")
        .order_by("-rank", "id")[:limit]
    )
    return _hits(rows, {chunk.pk: chunk.rank for chunk in rows})


def chunks_for_vector_ids(*, vector_ids: list[str]) -> dict[str, Chunk]:
    """Resolve what the vector index returns to indexed chunks, keyed by the ids given: a chunk id ("123", the
    `chunk_id` of a VectorHit) or a vector id ("<document_id>:<ordinal>"). Chunks of documents that aren't indexed
    (being rebuilt, deleted) are left out."""
    by_pk: dict[int, str] = {}
    by_key: dict[tuple[int, int], str] = {}
    for raw in vector_ids:
        value = str(raw)
        if value.isdigit():
            by_pk[int(value)] = value
        else:
            key = chunk_vector_id_parse(value)
            if key is not None:
                by_key[key] = value
    if not by_pk and not by_key:
        return {}
    condition = Q(pk__in=list(by_pk))
    for document_id, ordinal in by_key:
        condition |= Q(document_id=document_id, ordinal=ordinal)
    chunks = (Chunk.objects.filter(condition, document__status=DocumentStatus.INDEXED)
              .select_related("document").defer("search_vector", "document__text_preview"))
    found: dict[str, Chunk] = {}
    for chunk in chunks:
        if chunk.pk in by_pk:
            found[by_pk[chunk.pk]] = chunk
        key = (chunk.document_id, chunk.ordinal)
        if key in by_key:
            found[by_key[key]] = chunk
    return found


def chunk_vector_search(*, query: str, limit: int = 10) -> list[ChunkHit]:
    """Nearest chunks by embedding, in this workspace's own collection, resolved to indexed chunks."""
    from documents.embedding import embedder
    from documents.vectors import vectors_query

    query = (query or "").strip()
    if not query:
        return []
    embedding = embedder().embed([query])[0]
    hits = vectors_query(schema_name=connection.schema_name, embedding=list(embedding), limit=limit)
    chunks = chunks_for_vector_ids(vector_ids=[str(hit.chunk_id) for hit in hits])
    rows, scores = [], {}
    for hit in hits:
        chunk = chunks.get(str(hit.chunk_id))
        if chunk is not None:
            rows.append(chunk)
            scores[chunk.pk] = hit.score
    return _hits(rows, scores)


def chunk_source_url(*, document: Document, chunk: Chunk) -> str:
    """Where a citation of this chunk links: the page a crawled or imported document came from, at the chunk's
    heading when the page gave it an id; "" for uploads and typed-in text."""
    return source_url_make(source=document.source, source_url=document.source_url, anchor=chunk.anchor)


def source_url_make(*, source: str, source_url: str, anchor: str) -> str:
    """chunk_source_url from the column values (retrieval reads them without model instances)."""
    if not source_url or source not in ("crawl", "url"):
        return ""
    return f"{source_url}#{quote(anchor, safe='-._~')}" if anchor else source_url


# --- website sources ------------------------------------------------------------------------------------------------


def source_list() -> QuerySet[Any]:
    from documents.models import Source

    return Source.objects.select_related("created_by").annotate(page_count=Count("pages")).order_by("-created_at",
                                                                                                      "-id")


def source_get(*, source_id: int) -> Any:
    from documents.models import Source

    source = source_list().filter(pk=source_id).first()
    if source is None:
        raise NotFound("No such source.", details={"source_id": source_id})
    return source


def source_last_run(*, source: Any) -> Any:
    return source.runs.order_by("-queued_at", "-id").first()


def source_runs(*, source: Any) -> QuerySet[Any]:
    return source.runs.order_by("-queued_at", "-id")


def source_run_get(*, source: Any, run_id: int) -> Any:
    run = source.runs.filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such run of this source.", details={"run_id": run_id})
    return run


def source_run_pages(*, run: Any, state: str | None = None) -> QuerySet[Any]:
    """What a run did with each URL it found (its report), sitemaps left out; failures and skips first."""
    from django.db.models import Case, IntegerField, Value, When

    pages = run.pages.filter(is_sitemap=False)
    if state:
        pages = pages.filter(state=state)
    order = Case(When(state="failed", then=Value(0)), When(state="skipped", then=Value(1)),
                 When(state="pending", then=Value(2)), default=Value(3), output_field=IntegerField())
    return pages.annotate(rank=order).order_by("rank", "id")


def source_run_note(run: Any) -> str:
    """Where a run is and why, in plain words (never "stuck" without a reason)."""
    now = timezone.now()
    if run.status == "queued":
        waited = (now - run.queued_at).total_seconds()
        return ("Waiting for a worker." if waited < 120 else
                f"Waiting for a worker for {int(waited // 60)} minutes: the workers are busy or not running.")
    if run.status in ("running", "cancelling"):
        quiet = (now - (run.heartbeat_at or run.started_at or run.queued_at)).total_seconds()
        if quiet > 180:
            return (f"No progress for {int(quiet // 60)} minutes: the worker may have restarted. The run is sent "
                    "again automatically and continues where it stopped.")
        return "Stopping after the page in hand." if run.status == "cancelling" else "Crawling."
    if run.status == "completed":
        return "Finished."
    return run.stop_message or run.get_status_display()
