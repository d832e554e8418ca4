"""Websites as sources: create a source, crawl it, re-sync it (on demand or on its schedule), cancel and resume runs,
remove it. Runs in the current workspace's schema; the worker's entry is `source_run_execute`.

How a run works (docs/knowledge.md "Websites"):
- Its frontier is persisted: every URL it finds is a SourceRunPage row, `pending` until handled. A run works in
  slices (SOURCE_SLICE_SECONDS) and sends itself again after each one, so a worker restart loses at most the page in
  hand: the next delivery (or the beat sweep, for a run whose heartbeat went quiet) continues from the rows.
- One runner per run at a time (a PostgreSQL advisory lock keyed by schema and run).
- Pages are fetched a few at a time (SOURCE_CONCURRENCY, requests at least SOURCE_DELAY apart, robots.txt's
  crawl-delay when larger), then handled one by one: conditional GET (ETag / Last-Modified) and a content hash decide
  "unchanged" before anything is parsed or embedded; a new or changed page is parsed, chunked and embedded while the
  old version stays searchable, then swapped in place in one transaction (same document id, chunk rows updated by
  ordinal, vectors overwritten by id) — there is no moment when the page is missing from answers.
- A page answering 404/410 on two runs in a row is removed from the knowledge base.
- Crawled pages are documents: a page that would pass the plan's document or storage limit stops the run
  (status `stopped`, code `plan_limit`); resume after lifting the limit.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from django.conf import settings
from django.core.files.base import File
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from config.errors import ApplicationError, Conflict, ErrorCode, NotFound, ValidationFailed
from documents import crawler, events, pipeline, services
from documents.models import (
    RUN_ACTIVE,
    Chunk,
    Document,
    DocumentSource,
    DocumentStage,
    DocumentStatus,
    PageState,
    Source,
    SourceKind,
    SourcePage,
    SourceRun,
    SourceRunKind,
    SourceRunPage,
    SourceRunStatus,
    SourceSchedule,
    chunk_vector_id,
)

logger = logging.getLogger(__name__)

MAX_PAGES_LIMIT = 10_000
MAX_DEPTH_LIMIT = 20
MAX_PATTERNS = 50
MAX_PATTERN_CHARS = 200
SCHEDULE_EVERY = {SourceSchedule.DAILY: timedelta(days=1), SourceSchedule.WEEKLY: timedelta(days=7)}
PROGRESS_EVERY_SECONDS = 0.5
MAX_PAGE_ATTEMPTS = 3
READABLE_KINDS = {"html", "md", "txt", "pdf", "docx", "csv"}
# Outcome codes a person may see per page (the run's report), in plain words.
REASONS = {
    "robots_txt": "robots.txt asks crawlers not to fetch this page.",
    "excluded": "The page's path matches an exclude pattern (or no include pattern).",
    "max_depth": "The page is deeper than the source's maximum depth.",
    "max_pages": "The source's maximum number of pages was reached.",
    "not_a_page": "The link points to a file type that is not a readable page (image, script, archive, ...).",
    "off_site_redirect": "The page redirects to another site.",
    "duplicate_content": "The same content is already in the knowledge base (another page or document).",
    "plan_limit": "The plan's document or storage limit was reached; the run stopped here.",
    "sitemap": "A sitemap: its pages were added to the run.",
    "max_sitemaps": "The run already read as many sitemap files as it may (SOURCE_MAX_SITEMAPS).",
    "gone_once": "The page answered 404/410; it is removed if the next sync finds it gone again.",
    "gone": "The page answered 404/410 twice in a row and was removed from the knowledge base.",
}


def slice_seconds() -> float:
    return float(getattr(settings, "SOURCE_SLICE_SECONDS", 30))


def stalled_after_seconds() -> float:
    return float(getattr(settings, "SOURCE_STALLED_AFTER", 300))


def source_queue() -> str:
    return str(getattr(settings, "SOURCE_QUEUE", "") or services.ingest_queues()[0])


# --- validation ----------------------------------------------------------------------------------------------------


def _patterns(value: Any, field: str) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [line for line in value.replace(",", "\n").splitlines()]
    if not isinstance(value, (list, tuple)):
        raise ValidationFailed(f"{field} must be a list of path patterns.", details={"field": field})
    patterns = [str(p).strip() for p in value if str(p).strip()]
    if len(patterns) > MAX_PATTERNS or any(len(p) > MAX_PATTERN_CHARS or not p.isprintable() for p in patterns):
        raise ValidationFailed(f"Give at most {MAX_PATTERNS} {field} patterns of at most {MAX_PATTERN_CHARS} "
                               "printable characters each.", details={"field": field})
    return [p if p.startswith(("/", "*")) else "/" + p for p in patterns]


def _bounded(value: Any, field: str, *, low: int, high: int, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(f"{field} must be a whole number.", details={"field": field}) from None
    if not low <= number <= high:
        raise ValidationFailed(f"{field} must be between {low} and {high}.",
                               details={"field": field, "min": low, "max": high})
    return number


def _schedule(value: Any) -> str:
    value = (value or SourceSchedule.OFF)
    if value not in SourceSchedule.values:
        raise ValidationFailed("schedule must be off, daily or weekly.", details={"field": "schedule"})
    return value


def _next_sync(schedule: str, *, after: Any = None) -> Any:
    every = SCHEDULE_EVERY.get(schedule)
    return None if every is None else (after or timezone.now()) + every


# --- sources -------------------------------------------------------------------------------------------------------


def source_create(*, url: str, sitemap: bool = False, max_pages: Any = None, max_depth: Any = None,
                  include: Any = None, exclude: Any = None, schedule: Any = None, created_by: Any = None,
                  trigger: str = "manual") -> Source:
    """Add a website and start its first crawl. The URL is checked now (http/https, not a private address unless
    URL_IMPORT_ALLOWED_NETWORKS allows it); the worker checks every hop again."""
    from documents.fetch import url_addresses

    services._workspace()
    url = (url or "").strip()
    clean = crawler.url_normalize(url) if url else None
    if clean is None or len(clean) > services.MAX_URL:
        raise ValidationFailed("Enter a web address that starts with http:// or https://.", code=ErrorCode.URL_INVALID,
                               details={"field": "url"})
    try:
        url_addresses(clean, deadline=time.monotonic() + services.URL_CHECK_SECONDS)
    except ApplicationError as error:
        if error.code == ErrorCode.URL_FORBIDDEN:
            raise
        # Not resolvable right now: the run says what happened.
    source = Source(
        url=clean, kind=SourceKind.SITEMAP if sitemap else SourceKind.SITE,
        max_pages=_bounded(max_pages, "max_pages", low=1, high=MAX_PAGES_LIMIT, default=100),
        max_depth=_bounded(max_depth, "max_depth", low=0, high=MAX_DEPTH_LIMIT, default=3),
        include=_patterns(include, "include"), exclude=_patterns(exclude, "exclude"),
        schedule=_schedule(schedule),
        created_by=created_by if getattr(created_by, "is_authenticated", False) and created_by.pk else None,
    )
    source.next_sync_at = _next_sync(source.schedule)
    # A full knowledge base is refused now, not after the first page was fetched.
    services._plan_limits_check(adding_documents=1, adding_bytes=0, locked=False)
    with transaction.atomic():
        source.save()
        services._audit("source.created", actor=created_by, data={"source_id": source.pk, "url": clean})
        _run_start(source=source, kind=SourceRunKind.CRAWL, trigger=trigger)
    return source


def source_update(*, source: Source, actor: Any = None, **changes: Any) -> Source:
    """Change a source's options (schedule, max_pages, max_depth, include, exclude); they apply from the next run."""
    fields = []
    if "schedule" in changes and changes["schedule"] is not None:
        source.schedule = _schedule(changes["schedule"])
        source.next_sync_at = _next_sync(source.schedule, after=source.last_synced_at) \
            if source.last_synced_at else _next_sync(source.schedule)
        fields += ["schedule", "next_sync_at"]
    if changes.get("max_pages") is not None:
        source.max_pages = _bounded(changes["max_pages"], "max_pages", low=1, high=MAX_PAGES_LIMIT, default=100)
        fields.append("max_pages")
    if changes.get("max_depth") is not None:
        source.max_depth = _bounded(changes["max_depth"], "max_depth", low=0, high=MAX_DEPTH_LIMIT, default=3)
        fields.append("max_depth")
    for name in ("include", "exclude"):
        if changes.get(name) is not None:
            setattr(source, name, _patterns(changes[name], name))
            fields.append(name)
    if fields:
        with transaction.atomic():
            source.save(update_fields=[*fields, "updated_at"])
            services._audit("source.updated", actor=actor, data={"source_id": source.pk, "fields": fields})
    return source


def source_sync(*, source: Source, actor: Any = None, trigger: str = "manual") -> SourceRun:
    """Start a re-sync: every known page is checked again (conditional GET), new links are followed."""
    with transaction.atomic():
        locked = Source.objects.select_for_update().filter(pk=source.pk).first()
        if locked is None:
            raise NotFound("No such source.")
        run = _run_start(source=locked, kind=SourceRunKind.SYNC, trigger=trigger)
        services._audit("source.synced", actor=actor, data={"source_id": source.pk, "run_id": run.pk})
    return run


def source_delete(*, source: Source, actor: Any = None) -> int:
    """Remove a source and every page it brought into the knowledge base; returns how many documents went."""
    SourceRun.objects.filter(source=source, status__in=RUN_ACTIVE).update(status=SourceRunStatus.CANCELLED,
                                                                        finished_at=timezone.now())
    removed = 0
    for document in Document.objects.filter(pk__in=SourcePage.objects.filter(source=source, document__isnull=False)
                                            .values("document_id")):
        services.document_delete(document=document, actor=actor)
        removed += 1
    with transaction.atomic():
        services._audit("source.deleted", actor=actor, data={"source_id": source.pk, "url": source.url,
                                                              "documents": removed})
        source.delete()
    return removed


def _run_start(*, source: Source, kind: str, trigger: str) -> SourceRun:
    """A new run of `source` (inside the caller's transaction), sent to a worker once committed."""
    active = SourceRun.objects.filter(source=source, status__in=RUN_ACTIVE).first()
    if active is not None:
        raise Conflict("This website is being crawled right now; wait for the run to end or cancel it.",
                       code=ErrorCode.SOURCE_BUSY, details={"source_id": source.pk, "run_id": active.pk})
    run = SourceRun.objects.create(source=source, kind=kind, trigger=trigger[:20])
    _frontier_seed(run, source)
    # The event first: on commit, callbacks run in the order registered, and a worker that takes the run at once
    # would otherwise tell its progress before anyone was told the run started.
    _event_on_commit(run, "source.run_started")
    _send_on_commit(run)
    return run


def source_run_cancel(*, run: SourceRun, actor: Any = None) -> SourceRun:
    """Ask a run to stop: a queued one stops at once, a running one after the page in hand."""
    with transaction.atomic():
        locked = SourceRun.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            raise NotFound("No such run.")
        if locked.status not in RUN_ACTIVE:
            raise Conflict("This run has already ended.", code=ErrorCode.CONFLICT, details={"status": locked.status})
        if locked.status == SourceRunStatus.QUEUED:
            locked.status, locked.finished_at = SourceRunStatus.CANCELLED, timezone.now()
            locked.stop_code, locked.stop_message = "cancelled", "Cancelled before it started."
        else:
            locked.status = SourceRunStatus.CANCELLING
        locked.save(update_fields=["status", "finished_at", "stop_code", "stop_message"])
        services._audit("source.run_cancelled", actor=actor, data={"source_id": locked.source_id, "run_id": locked.pk})
        _event_on_commit(locked)
    return locked


def source_run_resume(*, run: SourceRun, actor: Any = None) -> SourceRun:
    """Continue a cancelled or stopped run from its frontier (the pages it had not handled yet)."""
    with transaction.atomic():
        locked = SourceRun.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            raise NotFound("No such run.")
        if locked.status not in (SourceRunStatus.CANCELLED, SourceRunStatus.STOPPED, SourceRunStatus.FAILED):
            raise Conflict("Only a cancelled, stopped or failed run can be resumed.", code=ErrorCode.CONFLICT,
                           details={"status": locked.status})
        other = SourceRun.objects.filter(source_id=locked.source_id, status__in=RUN_ACTIVE).exclude(pk=locked.pk)
        if other.exists():
            raise Conflict("Another run of this website is going on.", code=ErrorCode.SOURCE_BUSY,
                           details={"source_id": locked.source_id})
        locked.status, locked.finished_at, locked.stop_code, locked.stop_message = SourceRunStatus.QUEUED, None, "", ""
        # Pages skipped because the plan was full get their chance again.
        SourceRunPage.objects.filter(run=locked, state=PageState.SKIPPED, reason_code="plan_limit").update(
            state=PageState.PENDING, reason_code="", reason="")
        locked.skipped = SourceRunPage.objects.filter(run=locked, state=PageState.SKIPPED).exclude(
            reason_code="sitemap").count()
        locked.save(update_fields=["status", "finished_at", "stop_code", "stop_message", "skipped"])
        services._audit("source.run_resumed", actor=actor, data={"source_id": locked.source_id, "run_id": locked.pk})
        _send_on_commit(locked)
        _event_on_commit(locked)
    return locked


def source_run_send(*, run_id: int, countdown: float | None = None) -> None:
    """Send a run's job (in the workspace's schema: the schema travels in the message's headers)."""
    from documents.tasks import source_run

    queue = source_queue()
    soft, hard = services.queue_time_limits(queue)
    source_run.apply_async(args=[run_id], queue=queue, soft_time_limit=soft, time_limit=hard, countdown=countdown)


def _send_on_commit(run: SourceRun) -> None:
    run_id = run.pk

    def send() -> None:
        try:
            source_run_send(run_id=run_id)
        except Exception:
            logger.exception("could not queue source run %s", run_id)
            SourceRun.objects.filter(pk=run_id, status=SourceRunStatus.QUEUED).update(
                status=SourceRunStatus.FAILED, stop_code=ErrorCode.QUEUE_UNAVAILABLE.value,
                stop_message="The job queue could not be reached. Resume in a moment.", finished_at=timezone.now())

    transaction.on_commit(send)


# --- events --------------------------------------------------------------------------------------------------------


def source_run_payload(run: SourceRun, event_type: str = "source.progress") -> dict[str, Any]:
    return {
        "type": event_type, "source_id": run.source_id, "run_id": run.pk, "kind": run.kind, "status": run.status,
        "discovered": run.discovered, "fetched": run.fetched, "indexed": run.indexed, "unchanged": run.unchanged,
        "failed": run.failed, "skipped": run.skipped, "added": run.added, "changed": run.changed,
        "removed": run.removed, "stop_code": run.stop_code, "stop_message": run.stop_message,
        "pending": SourceRunPage.objects.filter(run_id=run.pk, state=PageState.PENDING).count(),
    }


def _event_on_commit(run: SourceRun, event_type: str = "source.progress") -> None:
    schema = connection.schema_name
    payload = source_run_payload(run, event_type)
    transaction.on_commit(lambda: services.document_event_send(schema_name=schema, payload=payload))


# --- the frontier ----------------------------------------------------------------------------------------------------


def _frontier_seed(run: SourceRun, source: Source) -> None:
    rows = [SourceRunPage(run=run, url=source.url, depth=0, is_sitemap=source.kind == SourceKind.SITEMAP)]
    if run.kind == SourceRunKind.SYNC:
        # Every page already in the knowledge base is checked again, linked or not.
        rows += [SourceRunPage(run=run, url=url, depth=depth)
                 for url, depth in SourcePage.objects.filter(source=source).exclude(url=source.url)
                 .values_list("url", "depth")]
    SourceRunPage.objects.bulk_create(rows, ignore_conflicts=True)
    run.discovered = SourceRunPage.objects.filter(run=run, is_sitemap=False).count()
    run.save(update_fields=["discovered"])


@dataclass
class _Context:
    run: SourceRun
    source: Source
    robots: crawler.Robots
    folder: Path
    last_event: float = 0.0


def _frontier_add(ctx: _Context, urls: list[str], *, depth: int, sitemaps: bool = False) -> None:
    """Record what a page or sitemap links to: pending when it may be crawled, skipped with its reason if not."""
    source, run = ctx.source, ctx.run
    candidates: dict[str, None] = {}
    for raw in urls:
        url = crawler.url_normalize(raw)
        if url and len(url) <= services.MAX_URL and crawler.same_site(url, source.url):
            candidates[url] = None
    if not candidates:
        return
    # Bounds on what a site can make a run record (a sitemap index generated on the fly never ends): at most
    # SOURCE_MAX_SITEMAPS sitemap files, and at most SOURCE_MAX_ROWS_PER_PAGE addresses per page allowed.
    rows_cap = max(ctx.source.max_pages, 1) * settings.SOURCE_MAX_ROWS_PER_PAGE
    recorded = SourceRunPage.objects.filter(run=run).count()
    if recorded >= rows_cap:
        return
    candidates = dict.fromkeys(list(candidates)[: rows_cap - recorded])
    known = set(SourceRunPage.objects.filter(run=run, url__in=list(candidates)).values_list("url", flat=True))
    fresh = [url for url in candidates if url not in known]
    if not fresh:
        return
    taken = SourceRunPage.objects.filter(run=run, is_sitemap=False).exclude(state=PageState.SKIPPED).count()
    sitemaps_read = (SourceRunPage.objects.filter(run=run, is_sitemap=True).exclude(state=PageState.SKIPPED).count()
                     if sitemaps else 0)
    rows = []
    for url in fresh:
        row = SourceRunPage(run=run, url=url, depth=depth, is_sitemap=sitemaps)
        reason = _skip_reason(ctx, url, depth=depth, sitemap=sitemaps, taken=taken)
        if sitemaps and not reason:
            if sitemaps_read >= settings.SOURCE_MAX_SITEMAPS:
                reason = "max_sitemaps"
            else:
                sitemaps_read += 1
        if reason:
            row.state, row.reason_code, row.reason = PageState.SKIPPED, reason, REASONS[reason]
        elif not sitemaps:
            taken += 1
        rows.append(row)
    SourceRunPage.objects.bulk_create(rows)
    pages = [row for row in rows if not row.is_sitemap]
    SourceRun.objects.filter(pk=run.pk).update(
        discovered=F("discovered") + len(pages),
        skipped=F("skipped") + sum(1 for row in pages if row.state == PageState.SKIPPED))


def _skip_reason(ctx: _Context, url: str, *, depth: int, sitemap: bool, taken: int) -> str:
    if not ctx.robots.allows(url):
        return "robots_txt"
    if sitemap:
        return ""
    if not crawler.url_is_readable(url):
        return "not_a_page"
    if not crawler.path_allowed(url, include=ctx.source.include, exclude=ctx.source.exclude):
        return "excluded"
    if ctx.source.kind == SourceKind.SITE and depth > ctx.source.max_depth:
        return "max_depth"
    if taken >= ctx.source.max_pages:
        return "max_pages"
    return ""


# --- the worker's entry -------------------------------------------------------------------------------------------


def _lock_key(schema_name: str, run_id: int) -> int:
    digest = hashlib.blake2b(f"source-run:{schema_name}:{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _run_lock(schema_name: str, run_id: int) -> Iterator[bool]:
    key = _lock_key(schema_name, run_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = bool(cursor.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except Exception:  # the connection is gone, and the lock with it
                pass


def source_run_execute(*, run_id: int) -> str:
    """Work on a run for one slice. Returns "done" (ended: completed, stopped, cancelled, failed, or not ours),
    "continue" (send again: pages are left) or "busy" (another worker holds the run)."""
    schema = connection.schema_name
    with _run_lock(schema, run_id) as got:
        if not got:
            return "busy"
        run = SourceRun.objects.select_related("source").filter(pk=run_id).first()
        if run is None or run.status not in RUN_ACTIVE:
            return "done"
        if run.status == SourceRunStatus.CANCELLING:
            _run_finish(run, SourceRunStatus.CANCELLED, code="cancelled", message="Cancelled.")
            return "done"
        now = timezone.now()
        SourceRun.objects.filter(pk=run.pk).update(
            status=SourceRunStatus.RUNNING, started_at=run.started_at or now, heartbeat_at=now,
            attempts=F("attempts") + 1)
        run.refresh_from_db()
        _event(run)
        folder = Path(tempfile.mkdtemp(prefix="ccgpt-crawl-"))
        started = time.monotonic()
        try:
            try:
                robots = crawler.robots_load(root=run.source.url, folder=folder)
            except ApplicationError as error:
                _run_finish(run, SourceRunStatus.FAILED, code=error.code,
                            message=f"robots.txt could not be read ({error.message}), so nothing was crawled. "
                                    "Resume the run to try again.")
                return "done"
            ctx = _Context(run=run, source=run.source, robots=robots, folder=folder)
            return _slice(ctx, deadline=started + slice_seconds())
        finally:
            SourceRun.objects.filter(pk=run_id).update(seconds=F("seconds") + (time.monotonic() - started))
            shutil.rmtree(folder, ignore_errors=True)


def _slice(ctx: _Context, *, deadline: float) -> str:
    run, source = ctx.run, ctx.source
    delay = max(float(getattr(settings, "SOURCE_DELAY", 0.25)), min(ctx.robots.crawl_delay(), 30.0))
    concurrency = max(1, int(getattr(settings, "SOURCE_CONCURRENCY", 2)))
    politeness = crawler.Politeness(concurrency=concurrency, delay=delay)
    max_bytes = services.max_upload_bytes()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crawl") as pool:
        while True:
            status = SourceRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()
            if status is None:
                return "done"
            if status == SourceRunStatus.CANCELLING:
                run.refresh_from_db()
                _run_finish(run, SourceRunStatus.CANCELLED, code="cancelled",
                            message="Cancelled; resume to continue where it stopped.")
                return "done"
            if status != SourceRunStatus.RUNNING:
                return "done"
            if time.monotonic() > deadline:
                SourceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
                return "continue"
            batch = list(SourceRunPage.objects.filter(run=run, state=PageState.PENDING).order_by("id")[:concurrency])
            worn = [row for row in batch if row.attempts >= MAX_PAGE_ATTEMPTS]
            for row in worn:
                counters = {} if row.is_sitemap else {"failed": 1}
                _mark(row, PageState.FAILED, code=ErrorCode.TOO_MANY_ATTEMPTS, **counters, reason=(
                    f"Handling this page stopped {row.attempts} times without finishing (the worker may have "
                    "crashed on it); it was left out."))
            if worn:
                continue
            # Taken in hand (committed before any work): a run that dies here counts it when it comes back.
            SourceRunPage.objects.filter(pk__in=[row.pk for row in batch]).update(attempts=F("attempts") + 1)
            if not batch:
                run.refresh_from_db()
                _run_finish(run, SourceRunStatus.COMPLETED)
                return "done"
            known = {page.url: page for page in SourcePage.objects.filter(source=source,
                                                                         url__in=[r.url for r in batch])}
            futures = []
            for row in batch:
                page = known.get(row.url)
                # Validators only for a page whose document is still there (a 304 has nothing to index).
                conditional = page is not None and bool(page.document_id) and not row.is_sitemap
                futures.append(pool.submit(
                    crawler.page_fetch, url=row.url, folder=ctx.folder, max_bytes=max_bytes,
                    etag=page.etag if conditional else "", last_modified=page.last_modified if conditional else "",
                    politeness=politeness))
            for row, future in zip(batch, futures, strict=True):
                result = future.result()
                try:
                    stop = _handle(ctx, row, result, known.get(row.url))
                finally:
                    if result.path is not None:
                        result.path.unlink(missing_ok=True)
                if stop:
                    return "done"
            SourceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
            if time.monotonic() - ctx.last_event >= PROGRESS_EVERY_SECONDS:
                run.refresh_from_db()
                _event(run)
                ctx.last_event = time.monotonic()


def _mark(row: SourceRunPage, state: str, *, outcome: str = "", code: str = "", reason: str = "",
          document_id: int | None = None, **counters: int) -> None:
    SourceRunPage.objects.filter(pk=row.pk).update(state=state, outcome=outcome, reason_code=code[:60],
                                                   reason=(reason or REASONS.get(code, ""))[:500],
                                                   document_id=document_id, updated_at=timezone.now())
    if counters:
        SourceRun.objects.filter(pk=row.run_id).update(**{name: F(name) + value for name, value in counters.items()})


def _handle(ctx: _Context, row: SourceRunPage, result: crawler.FetchResult, page: SourcePage | None) -> bool:
    """Handle one fetched URL; True when the run had to stop (its end is recorded)."""
    source = ctx.source
    if row.is_sitemap:
        return _handle_sitemap(ctx, row, result)
    if result.error is not None:
        return _handle_error(ctx, row, result, page)
    fetched = result.fetched
    assert fetched is not None
    if not crawler.same_site(fetched.final_url, source.url):
        _mark(row, PageState.SKIPPED, code="off_site_redirect", fetched=1, skipped=1)
        return False
    if fetched.not_modified:
        if page is not None and page.document_id:
            _unchanged(ctx, row, page, etag=fetched.etag or page.etag,
                       last_modified=fetched.last_modified or page.last_modified)
        else:  # a 304 we did not ask for
            _mark(row, PageState.FAILED, code=ErrorCode.URL_UNREACHABLE,
                  reason="The server answered 304 Not Modified to a plain request.", fetched=1, failed=1)
        return False
    assert result.path is not None
    digest = hashlib.sha256()
    with open(result.path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    sha = digest.hexdigest()
    if page is not None and page.document_id and page.content_sha256 == sha:
        _unchanged(ctx, row, page, etag=fetched.etag, last_modified=fetched.last_modified)
        return False
    try:
        return _index(ctx, row, result, page, sha=sha)
    except ApplicationError as error:
        if error.code == ErrorCode.PLAN_LIMIT:
            _mark(row, PageState.SKIPPED, code="plan_limit", fetched=1, skipped=1)
            ctx.run.refresh_from_db()
            _run_finish(ctx.run, SourceRunStatus.STOPPED, code=ErrorCode.PLAN_LIMIT,
                        message=f"{error.message} The crawl stopped; raise the plan or remove documents, then resume.")
            return True
        if error.code == ErrorCode.DUPLICATE_DOCUMENT:
            _mark(row, PageState.SKIPPED, code="duplicate_content", fetched=1, skipped=1,
                  document_id=(error.details or {}).get("document_id"))
            return False
        _mark(row, PageState.FAILED, code=error.code, reason=error.message, fetched=1, failed=1)
        return False
    except (OperationalError, InterfaceError):
        raise  # the database is away: the slice ends, the run is sent again and retries this page
    except Exception as exc:  # a bug or an odd page must not stop the run again and again
        logger.exception("unexpected failure indexing %s", row.url)
        _mark(row, PageState.FAILED, code=ErrorCode.INGEST_ERROR, fetched=1, failed=1,
              reason=f"Something unexpected went wrong while indexing this page ({type(exc).__name__}).")
        return False


def _handle_sitemap(ctx: _Context, row: SourceRunPage, result: crawler.FetchResult) -> bool:
    if result.error is not None:
        _mark(row, PageState.FAILED, code=result.error.code, reason=f"Sitemap: {result.error.message}")
        if row.url == ctx.source.url:
            ctx.run.refresh_from_db()
            _run_finish(ctx.run, SourceRunStatus.FAILED, code=result.error.code,
                        message=f"The sitemap could not be read: {result.error.message}")
            return True
        return False
    try:
        sitemap = crawler.sitemap_parse(result.path) if result.path is not None else crawler.Sitemap(False, [])
    except ApplicationError as error:
        _mark(row, PageState.FAILED, code=error.code, reason=f"Sitemap: {error.message}")
        return False
    _frontier_add(ctx, sitemap.urls, depth=0, sitemaps=sitemap.is_index)
    _mark(row, PageState.SKIPPED, code="sitemap", reason=f"Sitemap read: {len(sitemap.urls)} addresses.")
    return False


def _handle_error(ctx: _Context, row: SourceRunPage, result: crawler.FetchResult, page: SourcePage | None) -> bool:
    error = result.error
    assert error is not None
    if result.status in (404, 410) and page is not None:
        gone = page.gone_count + 1
        if gone >= 2 or not page.document_id:
            document = Document.objects.filter(pk=page.document_id).first() if page.document_id else None
            if document is not None:
                services.document_delete(document=document)
            page.delete()
            _mark(row, PageState.REMOVED, outcome="removed", code="gone", fetched=1, removed=1)
        else:
            SourcePage.objects.filter(pk=page.pk).update(gone_count=gone, last_checked_at=timezone.now())
            _mark(row, PageState.FAILED, outcome="gone_once", code="gone_once", fetched=1, failed=1,
                  document_id=page.document_id)
        return False
    if result.status is not None:
        reason = f"The server answered {result.status}."
    else:
        reason = error.message
    _mark(row, PageState.FAILED, code=error.code, reason=reason, failed=1,
          **({"fetched": 1} if result.status is not None else {}))
    return False


def _unchanged(ctx: _Context, row: SourceRunPage, page: SourcePage, *, etag: str, last_modified: str) -> None:
    SourcePage.objects.filter(pk=page.pk).update(etag=etag[:300], last_modified=last_modified[:100], gone_count=0,
                                                 last_checked_at=timezone.now())
    _mark(row, PageState.UNCHANGED, outcome="unchanged", document_id=page.document_id, fetched=1, unchanged=1)
    if ctx.source.kind == SourceKind.SITE and page.links:
        # Not parsed again, but its links (kept from the last time it changed) are still followed.
        _frontier_add(ctx, list(page.links), depth=row.depth + 1)


# --- indexing a page in place ----------------------------------------------------------------------------------------


def _index(ctx: _Context, row: SourceRunPage, result: crawler.FetchResult, page: SourcePage | None, *,
           sha: str) -> bool:
    from documents.chunking import document_chunk
    from documents.embedding import embedder
    from documents.parsers import document_parse
    from documents.parsers.sniff import content_sniff_path
    from documents.pipeline import EMBED_BATCH, FULLTEXT_SQL, _preview
    from documents.resident_vectors import resident_vectors_write
    from documents.vectors import vectors_delete_ids, vectors_get, vectors_upsert

    source, fetched, path = ctx.source, result.fetched, result.path
    assert fetched is not None and path is not None
    filename = services.filename_sanitize(fetched.filename or "page.html")
    kind = content_sniff_path(path=path, filename=filename)
    if kind not in READABLE_KINDS:
        raise ApplicationError("This address is not a page we can read.", code=ErrorCode.UNSUPPORTED_TYPE)
    existing = Document.objects.filter(sha256=sha).exclude(
        pk=page.document_id if page is not None and page.document_id else None).first()
    if existing is not None:
        raise ApplicationError("The same content is already in the knowledge base.",
                               code=ErrorCode.DUPLICATE_DOCUMENT, details={"document_id": existing.pk})
    data = path.read_bytes() if kind == "html" else b""
    links = crawler.page_links(data, base_url=fetched.final_url) if data else []
    if source.kind == SourceKind.SITE and links:  # past the maximum depth they are recorded as skipped
        _frontier_add(ctx, links, depth=row.depth + 1)
    anchors = crawler.page_anchors(data) if data else {}
    parsed = document_parse(path=path, kind=kind, filename=filename)
    title = (parsed.title if parsed.title and parsed.title != "Untitled" else row.url)[:300]
    drafts = document_chunk(parsed=parsed, title=title)
    if not drafts:
        raise ApplicationError("No text was found on this page.", code=ErrorCode.EMPTY_DOCUMENT)
    model = embedder()
    schema = connection.schema_name
    # Passages of a changed page that are the same as before (same text under the same heading and title, same
    # model) keep their vectors: only what changed is embedded again.
    embeddings: list[list[float] | None] = [None] * len(drafts)
    previous = Document.objects.filter(pk=page.document_id).first() if page is not None and page.document_id else None
    if previous is not None and previous.embedding_model == model.name and previous.title == title:
        old = {(chunk.heading_path, chunk.text): chunk.ordinal
               for chunk in Chunk.objects.filter(document=previous).only("ordinal", "heading_path", "text")}
        wanted = {index: chunk_vector_id(previous.pk, old[key]) for index, draft in enumerate(drafts)
                  if (key := ((draft.heading_path or "")[:1000], draft.text)) in old}
        stored = vectors_get(schema_name=schema, ids=sorted(set(wanted.values())))
        for index, vector_id in wanted.items():
            embeddings[index] = stored.get(vector_id)
    missing = [index for index, vector in enumerate(embeddings) if vector is None]
    texts = [drafts[index].embed_text or drafts[index].text for index in missing]
    for start in range(0, len(texts), EMBED_BATCH):
        for offset, vector in enumerate(model.embed(texts[start:start + EMBED_BATCH])):
            embeddings[missing[start + offset]] = list(map(float, vector))
    with open(path, "rb") as handle:
        stored = services._store_stream(source=File(handle, name=filename), filename=filename)
    now = timezone.now()
    old_file = ""
    try:
        with transaction.atomic():
            document = None
            if page is not None and page.document_id:
                document = Document.objects.select_for_update().filter(pk=page.document_id).first()
            services._plan_limits_check(adding_documents=0 if document else 1, adding_bytes=stored.size,
                                        replacing=document)
            fields = dict(
                title=title, source=DocumentSource.CRAWL, source_url=row.url, original_name=filename,
                content_type=kind, size_bytes=stored.size, sha256=sha, file=stored.name,
                status=DocumentStatus.INDEXED, stage=DocumentStage.DONE, stage_progress=100, error_code="",
                error_message="", chunk_count=len(drafts), token_count=sum(d.token_count for d in drafts),
                indexed_at=now, heartbeat_at=now, embedding_model=model.name[:200], text_preview=_preview(parsed),
            )
            if document is None:
                token = secrets.token_hex(16)
                document = Document.objects.create(**fields, run_token=token, indexed_run_token=token,
                                                   queued_at=now, started_at=now, queue="crawl",
                                                   uploaded_by=source.created_by)
                outcome, old_count = "added", 0
            else:
                old_file = document.file
                old_count = Chunk.objects.filter(document=document).count()
                Document.objects.filter(pk=document.pk).update(**fields, version=F("version") + 1, updated_at=now)
                document.refresh_from_db()
                # A page whose earlier run stopped before its vectors were written was never fully added.
                outcome = "changed" if page is not None and page.content_sha256 else "added"
            digests = [pipeline.embed_digest(model_name=pipeline.model_identity(model),
                                             text=draft.embed_text or draft.text) for draft in drafts]
            chunks = _chunks_replace_in_place(document, drafts, anchors, digests)
            # The workspace's own copy of the vectors (documents/resident_vectors.py) changes with the chunk rows, in
            # their transaction; rows of the ordinals past the end go with their chunks.
            resident_vectors_write(schema_name=schema, chunk_ids=[chunk.pk for chunk in chunks], embeddings=embeddings)
            with connection.cursor() as cursor:
                cursor.execute(FULLTEXT_SQL.format(table=connection.ops.quote_name(Chunk._meta.db_table)),
                               [title, document.pk])
            SourcePage.objects.update_or_create(source=source, url=row.url, defaults={
                "depth": row.depth, "document": document, "links": links[:crawler.MAX_LINKS_PER_PAGE],
                "gone_count": 0, "last_checked_at": now, "last_changed_at": now})
    except BaseException:
        services._storage_delete(stored.name)
        raise
    # The old vectors of ordinals that still exist are overwritten by id; those past the new end go.
    vectors_upsert(
        schema_name=schema, ids=[chunk_vector_id(document.pk, chunk.ordinal) for chunk in chunks],
        embeddings=embeddings,
        # The digest travels with the vector (always written: Chroma merges metadata on upsert, so an old digest
        # left in place would vouch for a vector of other text when a later upload looks for one to reuse).
        metadatas=[{"chunk_id": chunk.pk, "document_id": document.pk, "ordinal": chunk.ordinal,
                    "version": document.version, "page": chunk.page if chunk.page is not None else -1,
                    "embed_digest": chunk.embed_digest}
                   for chunk in chunks],
        documents=[chunk.text for chunk in chunks])
    if old_count > len(chunks):
        vectors_delete_ids(schema_name=schema, ids=[chunk_vector_id(document.pk, ordinal)
                                                    for ordinal in range(len(chunks), old_count)])
    # Only now is the page's content known to be fully indexed: a run cut before this line fetches it again.
    SourcePage.objects.filter(source=source, url=row.url).update(
        etag=fetched.etag[:300], last_modified=fetched.last_modified[:100], content_sha256=sha)
    if old_file and old_file != stored.name:
        services._storage_delete(old_file)
    counters = {"fetched": 1, "indexed": 1, outcome: 1}
    note = f"{len(missing)} of {len(drafts)} passages embedded" + (" (the others were unchanged)."
                                                                   if len(missing) < len(drafts) else ".")
    _mark(row, PageState.INDEXED, outcome=outcome, reason=note, document_id=document.pk, **counters)
    services.document_event_send(schema_name=schema, payload=services.document_event_payload(
        document, "document.created" if outcome == "added" else "document.progress"))
    try:
        events.document_ingested.send(sender=Document, document=document)
    except Exception:
        logger.exception("documents: a receiver of document_ingested failed")
    return False


def _chunks_replace_in_place(document: Document, drafts: list[Any], anchors: dict[str, str],
                             digests: list[str]) -> list[Chunk]:
    """The document's chunk rows become `drafts` (with their embed digests): rows of existing ordinals are updated
    (their ids, which the vectors point at, stay), new ordinals are added, ordinals past the end removed."""
    from documents.chunking import HEADING_SEPARATOR

    existing = {chunk.ordinal: chunk for chunk in Chunk.objects.filter(document=document)}
    updated, created = [], []
    for draft, digest in zip(drafts, digests, strict=True):
        heading = (draft.heading_path or "")[:1000]
        last = heading.split(HEADING_SEPARATOR)[-1] if heading else ""
        anchor = anchors.get(last, "")[:200]
        chunk = existing.get(draft.ordinal)
        if chunk is None:
            created.append(Chunk(document=document, ordinal=draft.ordinal, text=draft.text,
                                 token_count=draft.token_count, heading_path=heading, page=draft.page, anchor=anchor,
                                 embed_digest=digest))
        else:
            chunk.text, chunk.token_count, chunk.heading_path, chunk.page, chunk.anchor, chunk.embed_digest = \
                draft.text, draft.token_count, heading, draft.page, anchor, digest
            updated.append(chunk)
    if updated:
        Chunk.objects.bulk_update(updated, ["text", "token_count", "heading_path", "page", "anchor", "embed_digest"],
                                  batch_size=500)
    if created:
        created = Chunk.objects.bulk_create(created, batch_size=1000)
    Chunk.objects.filter(document=document, ordinal__gte=len(drafts)).delete()
    return sorted(updated + created, key=lambda chunk: chunk.ordinal)


# --- the end of a run --------------------------------------------------------------------------------------------


def _run_finish(run: SourceRun, status: str, *, code: str = "", message: str = "") -> None:
    now = timezone.now()
    # One commit: whoever sees the run completed sees the source's last and next sync moved too.
    with transaction.atomic():
        SourceRun.objects.filter(pk=run.pk).update(status=status, stop_code=str(code)[:60], stop_message=message,
                                                   finished_at=now, heartbeat_at=now)
        if status == SourceRunStatus.COMPLETED:
            source = Source.objects.filter(pk=run.source_id).first()
            if source is not None:
                Source.objects.filter(pk=source.pk).update(last_synced_at=now,
                                                           next_sync_at=_next_sync(source.schedule, after=now))
    run.refresh_from_db()
    _event(run, "source.run_finished")
    transaction.on_commit(lambda: _synced_send(run))
    logger.info("source run ended", extra={"run": run.pk, "status": status, "code": code})


def _synced_send(run: SourceRun) -> None:
    source = Source.objects.filter(pk=run.source_id).first()
    if source is None:
        return
    try:
        events.source_synced.send(sender=Source, source=source, run=run)
    except Exception:  # receivers must not raise into the sender (documents/events.py); never fail the run for one
        logger.exception("source_synced receiver failed", extra={"run": run.pk})


def _event(run: SourceRun, event_type: str = "source.progress") -> None:
    services.document_event_send(schema_name=connection.schema_name, payload=source_run_payload(run, event_type))


# --- the schedule and stalled runs (beat) ---------------------------------------------------------------------------


def sources_sync_due(*, now: Any = None) -> list[int]:
    """Start the re-sync of every source whose schedule is due (and that has no run going); returns the run ids."""
    now = now or timezone.now()
    started = []
    for source in Source.objects.exclude(schedule=SourceSchedule.OFF).filter(next_sync_at__lte=now).order_by("id"):
        try:
            started.append(source_sync(source=source, trigger="schedule").pk)
        except Conflict:
            continue
    return started


def source_runs_stalled_resume(*, older_than: float | None = None) -> list[int]:
    """Send again the job of every run that is queued or running but has shown no sign of life for `older_than`
    seconds (its worker was restarted or its message lost); it continues from its frontier. Returns the run ids."""
    threshold = stalled_after_seconds() if older_than is None else older_than
    limit = timezone.now() - timedelta(seconds=threshold)
    resent = []
    for run in SourceRun.objects.filter(status__in=RUN_ACTIVE).order_by("id"):
        last = max(filter(None, [run.heartbeat_at, run.started_at, run.queued_at]))
        if last > limit:
            continue
        SourceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        try:
            source_run_send(run_id=run.pk)
        except Exception:
            logger.exception("could not re-send source run %s", run.pk)
            continue
        logger.warning("re-sent stalled source run %s (%s since %s)", run.pk, run.status, last.isoformat())
        resent.append(run.pk)
    return resent
