"""Knowledge base writes: add documents (upload, text, FAQ, URL), delete them, and (re)start their ingestion.

Every function runs in the current workspace's schema (HTTP: the tenant middleware; commands and tasks switch to it).
Pipeline jobs are sent with `transaction.on_commit`, so a worker never sees a document its transaction hasn't
committed yet. Reads live in selectors.py; the pipeline itself (parse → chunk → embed → index) in pipeline.py.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone
from django.utils.text import get_valid_filename

from config.channels_layer import GroupSender, workspace_group
from config.db import atomic_with_retry
from config.errors import ApplicationError, Conflict, ErrorCode, NotFound, ServiceUnavailable, ValidationFailed
from documents.models import Document, DocumentSource, DocumentStage, DocumentStatus

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
SNIFF_BYTES = 64 * 1024  # what documents.parsers.content_sniff wants to see
# Documents above this size go to the "ingest_large" queue, so a few big manuals don't hold up everyone's FAQs.
DEFAULT_LARGE_BYTES = 2 * 1024 * 1024
DEFAULT_QUEUE = "ingest"
DEFAULT_LARGE_QUEUE = "ingest_large"
# (soft, hard) time limits per queue, in seconds. The hard limit must stay below the broker's visibility timeout.
DEFAULT_TIME_LIMITS = {"ingest": (540, 600), "ingest_large": (3000, 3300)}
MAX_TEXT_CHARS = 2_000_000
MAX_TITLE = 300
MAX_URL = 2000
URL_CHECK_SECONDS = 3.0


# --- settings --------------------------------------------------------------------------------------------------


def max_upload_bytes() -> int:
    return int(getattr(settings, "DOCUMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def ingest_queues() -> tuple[str, str]:
    return (
        getattr(settings, "DOCUMENT_QUEUE", DEFAULT_QUEUE),
        getattr(settings, "DOCUMENT_LARGE_QUEUE", DEFAULT_LARGE_QUEUE),
    )


def queue_for_size(size_bytes: int) -> str:
    small, large = ingest_queues()
    return large if size_bytes > int(getattr(settings, "DOCUMENT_LARGE_BYTES", DEFAULT_LARGE_BYTES)) else small


def queue_time_limits(queue: str) -> tuple[int, int]:
    limits = {**DEFAULT_TIME_LIMITS, **getattr(settings, "DOCUMENT_TIME_LIMITS", {})}
    _small, large = ingest_queues()
    return limits.get(queue) or (limits["ingest_large"] if queue == large else limits["ingest"])


# --- helpers ---------------------------------------------------------------------------------------------------


def _workspace() -> Any:
    """The workspace whose schema this connection is in; documents never belong to the public schema."""
    tenant = getattr(connection, "tenant", None)
    if tenant is None or getattr(connection, "schema_name", "public") == "public":
        raise ApplicationError("Documents belong to a workspace; no workspace is selected.", code=ErrorCode.WRONG_SCHEMA)
    return tenant


_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def filename_sanitize(name: str | None) -> str:
    """A display-safe file name: no directories (either slash), no control or invisible characters, no leading dots."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if unicodedata.category(ch) not in _INVISIBLE else " " for ch in name)
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    name = name.rstrip(". ")
    if len(name) > 200:
        stem, ext = os.path.splitext(name)
        ext = ext[:20]
        name = stem[: 200 - len(ext)] + ext
    return name or "upload"


def title_from_filename(name: str) -> str:
    stem = os.path.splitext(name)[0] or name
    return re.sub(r"[_]+", " ", stem).strip()[:MAX_TITLE] or "Untitled"


def _storage_name(schema_name: str, filename: str) -> str:
    try:
        safe = get_valid_filename(filename)[:120]
    except SuspiciousFileOperation:
        safe = "file"
    return f"workspaces/{schema_name}/documents/{uuid.uuid4().hex}/{safe or 'file'}"


class _UploadTooLarge(Exception):
    pass


class _CappedHashingFile(File):
    """Streams another file in chunks while hashing and counting; stops as soon as the cap is passed."""

    def __init__(self, source: IO[bytes] | File, cap: int) -> None:
        super().__init__(source, name=getattr(source, "name", None))
        self.source = source
        self.cap = cap
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        size = chunk_size or 256 * 1024
        if hasattr(self.source, "seek"):
            self.source.seek(0)
        while True:
            chunk = self.source.read(size)
            if not chunk:
                return
            self.bytes_read += len(chunk)
            if self.bytes_read > self.cap:
                raise _UploadTooLarge
            self.sha256.update(chunk)
            yield chunk

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return True


def file_too_large_error(name: str, size: int | None = None) -> ApplicationError:
    cap = max_upload_bytes()
    return ApplicationError(
        f"“{name}” is larger than the {cap // (1024 * 1024)} MB limit per file.",
        code=ErrorCode.FILE_TOO_LARGE, status_code=413, details={"max_bytes": cap, "filename": name, "size": size},
    )


# Multipart framing around a file: boundaries, part headers (a long file name), a title field.
UPLOAD_BODY_ALLOWANCE = 64 * 1024


def upload_body_max_bytes(*, files: int = 1) -> int:
    """The largest upload request body that can hold `files` files within the cap (config.body_caps)."""
    return files * (max_upload_bytes() + UPLOAD_BODY_ALLOWANCE)


def upload_body_too_large_error() -> ApplicationError:
    """An upload refused from its size alone, before any of it is read: no file name is known yet."""
    cap = max_upload_bytes()
    return ApplicationError(
        f"The upload is larger than the {cap // (1024 * 1024)} MB limit per file.",
        code=ErrorCode.FILE_TOO_LARGE, status_code=413, details={"max_bytes": cap, "filename": None, "size": None},
    )


def _empty(name: str) -> ApplicationError:
    from documents.parsers import ParseError

    return ParseError(f"“{name}” is empty.", code=ErrorCode.EMPTY_DOCUMENT, details={"filename": name})


def _plan_limits_check(*, adding_documents: int, adding_bytes: int, locked: bool = True,
                       replacing: Document | None = None) -> None:
    """Refuse what would take the workspace past its plan's document count or storage (402 plan_limit, from
    tenants.billing; the limits are the workspace's Plan row).

    `locked` (the default): call inside transaction.atomic(), right before the row is written. The billing advisory
    locks (documents, then storage_bytes — always in that order, so two writers never deadlock) are held until the
    transaction ends, so two uploads can't both take the last slot: the second counts after the first committed.
    `locked=False` is the early check before a file is streamed to storage (no work for a request that can't
    succeed); it is advisory only, the locked check decides. `replacing`: a new version takes its document's place
    (its old size is not counted, and the document count doesn't grow).
    """
    from tenants import billing

    workspace = _workspace()
    if locked:
        billing.plan_limit_lock(workspace=workspace, meter="documents")
        billing.plan_limit_lock(workspace=workspace, meter="storage_bytes")
    rows = Document.objects.all() if replacing is None else Document.objects.exclude(pk=replacing.pk)
    usage = rows.aggregate(count=Count("id"), bytes=Sum("size_bytes"))
    # Over the limit after a downgrade: what exists stays, only additions are refused (docs/billing.md).
    if adding_documents:
        billing.plan_limit_check(workspace=workspace, meter="documents", adding=adding_documents,
                                 used=usage["count"] or 0)
    billing.plan_limit_check(workspace=workspace, meter="storage_bytes", adding=adding_bytes,
                             used=usage["bytes"] or 0)


def _duplicate(existing: Document) -> Conflict:
    return Conflict(
        f"The same content is already in the knowledge base as “{existing.title}”.",
        code=ErrorCode.DUPLICATE_DOCUMENT, details={"document_id": existing.pk, "title": existing.title},
    )


@dataclass
class StoredFile:
    name: str
    size: int
    sha256: str


def _store_stream(*, source: IO[bytes] | File, filename: str) -> StoredFile:
    """Stream `source` into storage (never whole in memory), hashing it; refuses past the cap and empty files."""
    schema = _workspace().schema_name
    name = _storage_name(schema, filename)
    capped = _CappedHashingFile(source, max_upload_bytes())
    try:
        stored = default_storage.save(name, capped)
    except _UploadTooLarge:
        _storage_delete(name)
        raise file_too_large_error(filename) from None
    except BaseException:
        _storage_delete(name)
        raise
    if capped.bytes_read == 0:
        _storage_delete(stored)
        raise _empty(filename)
    return StoredFile(name=stored, size=capped.bytes_read, sha256=capped.sha256.hexdigest())


def _storage_delete(name: str) -> None:
    if not name:
        return
    try:
        default_storage.delete(name)
        folder = os.path.dirname(name)
        # Each upload has a folder of its own; remove it when it's empty (local storage only).
        try:
            path = default_storage.path(folder)
        except NotImplementedError:
            return
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    except OSError:
        logger.warning("could not delete stored file %s", name)


def _read_head(source: IO[bytes] | File) -> bytes:
    source.seek(0)
    head = source.read(SNIFF_BYTES) or b""
    source.seek(0)
    return head


def _sniff_head(head: bytes, filename: str) -> str | None:
    """The kind from the first bytes, or None for a ZIP (a DOCX is told by its central directory, after storing)."""
    from documents.parsers import content_sniff

    if head.startswith(b"PK\x03\x04"):
        return None
    return content_sniff(head=head, filename=filename)


def _sniff_stored(name: str, filename: str) -> str:
    from documents.parsers.sniff import content_sniff_path

    with stored_file_local(name) as path:
        return content_sniff_path(path=path, filename=filename)


@contextmanager
def stored_file_local(name: str) -> Iterator[Path]:
    """A local path for a stored file: the file itself on local storage, else a temporary copy (streamed)."""
    try:
        local = default_storage.path(name)
    except NotImplementedError:
        local = None
    if local is not None:
        if not os.path.exists(local):
            raise ApplicationError("The stored file of this document is missing; upload it again.",
                                   code=ErrorCode.FILE_MISSING, status_code=410)
        yield Path(local)
        return
    with tempfile.TemporaryDirectory(prefix="ccgpt-doc-") as folder:
        target = Path(folder) / "file"
        with default_storage.open(name, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        yield target


# --- events ----------------------------------------------------------------------------------------------------

STAGE_SPAN = {  # share of the whole job each stage covers, for one overall progress bar
    DocumentStage.UPLOAD: (0, 0), DocumentStage.FETCH: (0, 5), DocumentStage.PARSE: (5, 15),
    DocumentStage.CHUNK: (15, 20), DocumentStage.EMBED: (20, 90), DocumentStage.INDEX: (90, 100),
    DocumentStage.DONE: (100, 100),
}


def document_progress_overall(*, stage: str, stage_progress: int, status: str) -> int:
    if status == DocumentStatus.INDEXED:
        return 100
    start, end = STAGE_SPAN.get(stage, (0, 0))
    return int(start + (end - start) * max(0, min(stage_progress, 100)) / 100)


def document_event_payload(document: Document, event_type: str = "document.progress") -> dict[str, Any]:
    return {
        "type": event_type,
        "document_id": document.pk,
        "title": document.title,
        "status": document.status,
        "stage": document.stage,
        "stage_progress": document.stage_progress,
        "progress": document_progress_overall(
            stage=document.stage, stage_progress=document.stage_progress, status=document.status
        ),
        "chunk_count": document.chunk_count,
        "version": document.version,
        "error_code": document.error_code,
        "error_message": document.error_message,
        "next_retry_at": document.next_retry_at.isoformat() if document.next_retry_at else None,
    }


_events = GroupSender("document-events")


def document_event_send(*, schema_name: str, payload: dict[str, Any]) -> None:
    """Push a knowledge-base event to the workspace's dashboards; a failure to push never fails the caller."""
    try:
        _events.send(workspace_group(schema_name, "events"), {"type": "workspace.event", "payload": payload})
    except Exception:
        logger.warning("could not push a document event", exc_info=True)


def _send_on_commit(document: Document, event_type: str = "document.progress") -> None:
    schema = connection.schema_name
    payload = document_event_payload(document, event_type)
    transaction.on_commit(lambda: document_event_send(schema_name=schema, payload=payload))


# --- the pipeline's entry --------------------------------------------------------------------------------------


def _new_run(document: Document, *, queue: str | None = None) -> list[str]:
    """Reset a document for a fresh pipeline run (a new run token supersedes any run still going)."""
    document.run_token = secrets.token_hex(16)
    document.status = DocumentStatus.QUEUED
    document.stage = DocumentStage.FETCH if (document.source == DocumentSource.URL and not document.file) else DocumentStage.UPLOAD
    document.stage_progress = 0
    document.attempts = 0
    document.error_code = ""
    document.error_message = ""
    document.next_retry_at = None
    document.queued_at = timezone.now()
    document.started_at = None
    document.heartbeat_at = None
    if queue:
        document.queue = queue
    return ["run_token", "status", "stage", "stage_progress", "attempts", "error_code", "error_message",
            "next_retry_at", "queued_at", "started_at", "heartbeat_at", "queue", "updated_at"]


def pipeline_send(*, document_id: int, run_token: str, queue: str, countdown: float | None = None) -> None:
    """Send the ingestion job (call in the workspace's schema: the schema travels in the message's headers)."""
    from documents.tasks import document_ingest

    soft, hard = queue_time_limits(queue)
    document_ingest.apply_async(
        args=[document_id, run_token], queue=queue, soft_time_limit=soft, time_limit=hard, countdown=countdown
    )


def _enqueue_on_commit(document: Document) -> None:
    # Callers register the document's event (_send_on_commit) BEFORE this: on commit, callbacks run in the order
    # registered, and a worker that takes the job at once must not report progress before the event that
    # announced the document (a live list would get "progress" for a row it hasn't got).
    document_id, run_token, queue = document.pk, document.run_token, document.queue

    def send() -> None:
        try:
            pipeline_send(document_id=document_id, run_token=run_token, queue=queue)
        except Exception:
            logger.exception("could not queue document %s", document_id)
            failed = {"status": DocumentStatus.FAILED, "error_code": ErrorCode.QUEUE_UNAVAILABLE.value,
                      "last_error_at": timezone.now(),
                      "error_message": "The job queue could not be reached. Retry in a moment."}
            Document.objects.filter(pk=document_id, run_token=run_token).update(**failed)
            # The caller answers with this instance (e.g. the upload's 201): it must not still say "queued".
            for name, value in failed.items():
                setattr(document, name, value)

    transaction.on_commit(send)


def _audit(action: str, *, actor: Any, document: Document | None = None, data: dict[str, Any] | None = None) -> None:
    from accounts.services import audit_record

    user = actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None
    audit_record(
        workspace=_workspace(), actor=user, action=action,
        target=f"document:{document.pk} {document.title}" if document else "", data=data or {},
    )


# --- create ----------------------------------------------------------------------------------------------------


def document_upload(*, uploaded_file: IO[bytes] | File, uploaded_by: Any = None, title: str | None = None) -> Document:
    """Add a file: checks (size, plan, type from content), streams it to storage, records it, queues its ingestion.

    Raises ApplicationError: file_too_large (413), empty_document, unsupported_type, plan_limit (402),
    duplicate_document (409, details.document_id is the document that already has this content).
    """
    workspace = _workspace()
    filename = filename_sanitize(getattr(uploaded_file, "name", None))
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > max_upload_bytes():
        raise file_too_large_error(filename, size)
    if size == 0:
        raise _empty(filename)
    _plan_limits_check(adding_documents=1, adding_bytes=size or 0, locked=False)
    head = _read_head(uploaded_file)
    if not head:
        raise _empty(filename)
    kind = _sniff_head(head, filename)
    stored = _store_stream(source=uploaded_file, filename=filename)
    try:
        kind = kind or _sniff_stored(stored.name, filename)
        existing = Document.objects.filter(sha256=stored.sha256).first()
        if existing is not None:
            raise _duplicate(existing)
        clean_title = (title or "").strip()[:MAX_TITLE]
        document = Document(
            title=clean_title or title_from_filename(filename), title_is_custom=bool(clean_title),
            source=DocumentSource.UPLOAD, original_name=filename, content_type=kind, size_bytes=stored.size,
            sha256=stored.sha256, file=stored.name,
            uploaded_by=uploaded_by if getattr(uploaded_by, "is_authenticated", False) and uploaded_by.pk else None,
        )
        _new_run(document, queue=queue_for_size(stored.size))
        try:
            with transaction.atomic():
                _plan_limits_check(adding_documents=1, adding_bytes=stored.size)
                document.save()
                _audit("document.uploaded", actor=uploaded_by, document=document,
                       data={"filename": filename, "size": stored.size, "type": kind})
                _send_on_commit(document, "document.created")
                _enqueue_on_commit(document)
        except IntegrityError:  # the same content uploaded at the same moment
            existing = Document.objects.filter(sha256=stored.sha256).first()
            if existing is None:
                raise
            raise _duplicate(existing) from None
    except BaseException:
        _storage_delete(stored.name)
        raise
    logger.info("document uploaded", extra={"workspace": workspace.slug, "document": document.pk, "type": kind})
    return document


def _create_from_text(
    *, title: str, body: str, kind: str, source: str, uploaded_by: Any, original_name: str
) -> Document:
    data = body.encode("utf-8")
    if len(data) > max_upload_bytes():
        raise file_too_large_error(original_name, len(data))
    _plan_limits_check(adding_documents=1, adding_bytes=len(data), locked=False)
    stored = _store_stream(source=ContentFile(data, name=original_name), filename=original_name)
    try:
        existing = Document.objects.filter(sha256=stored.sha256).first()
        if existing is not None:
            raise _duplicate(existing)
        document = Document(
            title=title[:MAX_TITLE], title_is_custom=True, source=source, original_name=original_name,
            content_type=kind, size_bytes=stored.size, sha256=stored.sha256, file=stored.name,
            uploaded_by=uploaded_by if getattr(uploaded_by, "is_authenticated", False) and uploaded_by.pk else None,
        )
        _new_run(document, queue=ingest_queues()[0])
        try:
            with transaction.atomic():
                _plan_limits_check(adding_documents=1, adding_bytes=stored.size)
                document.save()
                _audit(f"document.{source}_created", actor=uploaded_by, document=document)
                _send_on_commit(document, "document.created")
                _enqueue_on_commit(document)
        except IntegrityError:
            existing = Document.objects.filter(sha256=stored.sha256).first()
            if existing is None:
                raise
            raise _duplicate(existing) from None
    except BaseException:
        _storage_delete(stored.name)
        raise
    return document


def _text_clean(value: str | None, field: str, *, max_chars: int) -> str:
    text = (value or "").replace("\r\n", "\n").replace("\x00", "")
    if not text.strip():
        raise ValidationFailed(f"The {field} is empty.", code="empty_document", details={"field": field})
    if len(text) > max_chars:
        raise ValidationFailed(
            f"The {field} is longer than {max_chars} characters.", details={"field": field, "max_chars": max_chars}
        )
    return text


def document_create_text(
    *, title: str, text: str, uploaded_by: Any = None, markdown: bool = False
) -> Document:
    """A document typed in (plain text or Markdown)."""
    clean_title = _text_clean(title, "title", max_chars=MAX_TITLE).strip()
    body = _text_clean(text, "text", max_chars=MAX_TEXT_CHARS)
    kind = "md" if markdown else "txt"
    return _create_from_text(
        title=clean_title, body=body, kind=kind, source=DocumentSource.TEXT, uploaded_by=uploaded_by,
        original_name=f"{title_from_filename(filename_sanitize(clean_title))[:80]}.{kind}",
    )


def document_create_faq(
    *, question: str, answer: str, uploaded_by: Any = None, title: str | None = None
) -> Document:
    """One FAQ entry: the question becomes the heading of its answer (so both are searched and cited)."""
    q = " ".join(_text_clean(question, "question", max_chars=1000).split())
    a = _text_clean(answer, "answer", max_chars=100_000).strip()
    body = f"## {q}\n\n{a}\n"
    return _create_from_text(
        title=(title or "").strip()[:MAX_TITLE] or q[:MAX_TITLE], body=body, kind="md", source=DocumentSource.FAQ,
        uploaded_by=uploaded_by, original_name="faq.md",
    )


_URL_RE = re.compile(r"^https?://[^\s/?#]+", re.IGNORECASE)


def document_import_url(*, url: str, uploaded_by: Any = None, title: str | None = None) -> Document:
    """Queue a web page for import; it is fetched by the pipeline (http/https only; private addresses refused)."""
    from documents.fetch import url_addresses, url_validate

    url = (url or "").strip()
    if not url or len(url) > MAX_URL or not _URL_RE.match(url) or any(ch.isspace() for ch in url):
        raise ValidationFailed("Enter a web address that starts with http:// or https://.", code="url_invalid",
                               details={"field": "url"})
    url = url_validate(url)
    try:
        # Refuse private targets now, with a 4xx; the fetch checks again (every hop, every address) in the worker.
        url_addresses(url, deadline=time.monotonic() + URL_CHECK_SECONDS)
    except ApplicationError as error:
        if error.code == "url_forbidden":
            raise
        # Not resolvable right now: the pipeline tries (and retries) the fetch and says what happened.
    existing = Document.objects.filter(source=DocumentSource.URL, source_url=url).first()
    if existing is not None:
        raise _duplicate(existing)
    _plan_limits_check(adding_documents=1, adding_bytes=0, locked=False)
    clean_title = (title or "").strip()[:MAX_TITLE]
    document = Document(
        title=clean_title or url[:MAX_TITLE], title_is_custom=bool(clean_title), source=DocumentSource.URL,
        source_url=url, original_name="",
        uploaded_by=uploaded_by if getattr(uploaded_by, "is_authenticated", False) and uploaded_by.pk else None,
    )
    _new_run(document, queue=ingest_queues()[0])
    with transaction.atomic():
        # The page's size is known only after the fetch: the pipeline checks storage again before keeping it.
        _plan_limits_check(adding_documents=1, adding_bytes=0)
        document.save()
        _audit("document.url_imported", actor=uploaded_by, document=document, data={"url": url})
        _send_on_commit(document, "document.created")
        _enqueue_on_commit(document)
    return document


def document_new_version(*, document: Document, uploaded_file: IO[bytes] | File, uploaded_by: Any = None) -> Document:
    """Replace a document's file with a new version (same id, version + 1) and rebuild it from the new file."""
    filename = filename_sanitize(getattr(uploaded_file, "name", None))
    size = getattr(uploaded_file, "size", None)
    if size is not None and size > max_upload_bytes():
        raise file_too_large_error(filename, size)
    if size == 0:
        raise _empty(filename)
    _plan_limits_check(adding_documents=0, adding_bytes=size or 0, locked=False, replacing=document)
    head = _read_head(uploaded_file)
    if not head:
        raise _empty(filename)
    kind = _sniff_head(head, filename)
    stored = _store_stream(source=uploaded_file, filename=filename)
    old_file = document.file
    try:
        kind = kind or _sniff_stored(stored.name, filename)
        existing = Document.objects.filter(sha256=stored.sha256).first()
        if existing is not None:
            raise _duplicate(existing)
        with transaction.atomic():
            # The billing locks before the row lock, in the same order as the pipeline's fetch stage (no deadlock).
            _plan_limits_check(adding_documents=0, adding_bytes=stored.size, replacing=document)
            locked = Document.objects.select_for_update().filter(pk=document.pk).first()
            if locked is None:
                raise NotFound("No such document.")
            locked.version += 1
            locked.file, locked.sha256, locked.size_bytes = stored.name, stored.sha256, stored.size
            locked.content_type, locked.original_name = kind, filename
            if locked.source == DocumentSource.URL:
                locked.source = DocumentSource.UPLOAD
            if not locked.title_is_custom:
                locked.title = title_from_filename(filename)
            fields = _new_run(locked, queue=queue_for_size(stored.size))
            try:
                with transaction.atomic():
                    locked.save(update_fields=[*fields, "version", "file", "sha256", "size_bytes", "content_type",
                                               "original_name", "source", "title"])
            except IntegrityError:
                existing = Document.objects.filter(sha256=stored.sha256).first()
                raise _duplicate(existing) if existing else Conflict("Could not save the new version.") from None
            _audit("document.new_version", actor=uploaded_by, document=locked, data={"version": locked.version})
            _send_on_commit(locked)
            _enqueue_on_commit(locked)
            transaction.on_commit(lambda: _storage_delete(old_file))
    except BaseException:
        _storage_delete(stored.name)
        raise
    return locked


# --- lifecycle ---------------------------------------------------------------------------------------------------


def document_delete(*, document: Document, actor: Any = None) -> None:
    """Remove a document everywhere: its vectors, its chunks and row, its stored file."""
    from documents.vectors import vectors_delete_document

    schema = _workspace().schema_name
    document_id, stored, title = document.pk, document.file, document.title
    try:
        vectors_delete_document(schema_name=schema, document_id=document_id)
    except Exception as exc:
        logger.exception("vector store refused to delete document %s", document_id)
        raise ServiceUnavailable("The search index is unavailable; nothing was deleted. Try again.") from exc

    def delete_rows() -> None:
        # The row first, then its chunks: the same order as the pipeline's index step, so the two never deadlock.
        # Anything else holding them in the other order may; PostgreSQL then aborts one side and this runs again.
        if Document.objects.select_for_update().filter(pk=document_id).first() is None:
            return
        _audit("document.deleted", actor=actor, document=document)
        Document.objects.filter(pk=document_id).delete()  # chunks cascade
        payload = {"type": "document.deleted", "document_id": document_id, "title": title}
        transaction.on_commit(lambda: document_event_send(schema_name=schema, payload=payload))
        transaction.on_commit(lambda: _storage_delete(stored))

    atomic_with_retry(delete_rows)


def _restart(document: Document, *, action: str, actor: Any) -> Document:
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document.pk).first()
        if locked is None:
            raise NotFound("No such document.")
        fields = _new_run(locked)
        locked.save(update_fields=fields)
        _audit(action, actor=actor, document=locked)
        _send_on_commit(locked)
        _enqueue_on_commit(locked)
    return locked


def document_retry(*, document: Document, actor: Any = None) -> Document:
    """Start a failed (or waiting-to-retry, or stalled) document's ingestion again, from the start."""
    if document.status == DocumentStatus.INDEXED:
        raise Conflict("This document is indexed; use reindex to rebuild it.", code=ErrorCode.CONFLICT,
                       details={"status": document.status})
    return _restart(document, action="document.retried", actor=actor)


def document_reindex(*, document: Document, actor: Any = None) -> Document:
    """Rebuild a document's chunks and vectors from its stored file (e.g. after changing the embedding model)."""
    return _restart(document, action="document.reindexed", actor=actor)


def workspace_lexical_reindex(*, actor: Any = None) -> dict[str, int]:
    """Rebuild the workspace's lexical index (BM25 statistics, documents/lexical.py) from its chunks as they are,
    without re-parsing or re-embedding anything; returns its size."""
    from documents.lexical import lexical_index_rebuild

    summary = lexical_index_rebuild()
    with transaction.atomic():
        _audit("knowledge.lexical_reindexed", actor=actor, data=summary)
    return summary


def workspace_reindex(*, actor: Any = None) -> int:
    """Reindex every document of the workspace; returns how many were queued. The lexical index is rebuilt from the
    chunks first (exact from there on: every document's new chunks replace their old ones in it)."""
    from documents.lexical import lexical_index_rebuild

    lexical_index_rebuild()
    count = 0
    ids = list(Document.objects.order_by("id").values_list("id", flat=True))
    for start in range(0, len(ids), 200):
        with transaction.atomic():
            for document in Document.objects.select_for_update().filter(id__in=ids[start:start + 200]):
                fields = _new_run(document)
                document.save(update_fields=fields)
                _send_on_commit(document)
                _enqueue_on_commit(document)
                count += 1
    with transaction.atomic():
        _audit("knowledge.reindexed", actor=actor, data={"documents": count})
    return count


def failed_documents_retry(*, actor: Any = None) -> list[int]:
    """Retry every failed document; returns their ids."""
    retried = []
    for document in Document.objects.filter(status=DocumentStatus.FAILED).order_by("id"):
        retried.append(_restart(document, action="document.retried", actor=actor).pk)
    return retried


def stalled_after_seconds() -> float:
    return float(getattr(settings, "DOCUMENT_STALLED_AFTER", 900))


def documents_stalled(*, older_than: float | None = None) -> list[Document]:
    """Documents whose job seems lost: queued, processing or waiting to retry, and nothing has happened to them
    (no queueing, heartbeat or due retry) for `older_than` seconds. A broker that restarts without persistence
    loses the messages it held; nothing else would ever send them again."""
    from datetime import UTC, datetime, timedelta

    from django.db.models.functions import Coalesce, Greatest

    now = timezone.now()
    threshold = stalled_after_seconds() if older_than is None else older_than
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    candidates = (
        Document.objects.filter(status__in=[DocumentStatus.QUEUED, DocumentStatus.PROCESSING, DocumentStatus.RETRYING])
        .annotate(last_sign=Greatest(Coalesce("queued_at", epoch), Coalesce("heartbeat_at", epoch),
                                     Coalesce("next_retry_at", epoch)))
        .filter(last_sign__lt=now - timedelta(seconds=threshold))
        .order_by("id")
    )
    # A run may legitimately go quiet inside one long step (parsing a huge PDF), but never past its queue's hard
    # time limit: only then is a processing document's job surely gone.
    return [d for d in candidates if d.status != DocumentStatus.PROCESSING
            or d.last_sign < now - timedelta(seconds=max(threshold, queue_time_limits(d.queue)[1]))]


def documents_stalled_resend(*, older_than: float | None = None) -> list[int]:
    """Send the job of every stalled document again (documents_stalled), with its current run token: if the first
    message was not lost after all, the second delivery finds the run done (already_indexed) or running (Busy) and
    does nothing. `queued_at` moves to now, so a document is re-sent at most once per threshold. Returns the ids."""
    resent = []
    for document in documents_stalled(older_than=older_than):
        now = timezone.now()
        # Conditional on the run and status still being what we saw: a worker that just took it wins.
        if not Document.objects.filter(pk=document.pk, run_token=document.run_token, status=document.status).update(
                status=DocumentStatus.QUEUED, queued_at=now, next_retry_at=None, updated_at=now):
            continue
        try:
            pipeline_send(document_id=document.pk, run_token=document.run_token, queue=document.queue)
        except Exception:
            logger.exception("could not re-send the job of stalled document %s", document.pk)
            continue
        logger.warning("re-sent the job of stalled document %s (was %s since %s)", document.pk, document.status,
                       document.last_sign.isoformat())
        resent.append(document.pk)
    return resent



SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def document_samples_add(*, uploaded_by: Any = None) -> list[Document]:
    """Add the sample documents (documents/samples/) to the current workspace; those already there are skipped."""
    added = []
    for path in sorted(SAMPLES_DIR.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        with open(path, "rb") as handle:
            try:
                added.append(document_upload(uploaded_file=File(handle, name=path.name), uploaded_by=uploaded_by))
            except ApplicationError as error:
                if error.code != ErrorCode.DUPLICATE_DOCUMENT:
                    raise
    return added
