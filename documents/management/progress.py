"""Shared by the knowledge-base commands: enter a workspace, and wait for documents with a terminal progress bar."""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from django.db import connection

from config.errors import ErrorCode, NotFound
from documents.models import Document, DocumentStatus
from tenants.selectors import workspace_get

DONE = {DocumentStatus.INDEXED, DocumentStatus.FAILED}
NO_WORKER_HINT_AFTER = 30.0


def workspace_enter(slug: str) -> Any:
    workspace = workspace_get(slug=slug)
    if workspace is None:
        raise NotFound(f"No workspace {slug!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND, details={"slug": slug})
    connection.set_tenant(workspace)
    return workspace


@dataclass
class WaitResult:
    counts: Counter
    chunks: int
    timed_out: bool


class ProgressBar:
    """A one-line bar on a terminal (stderr); silent when stderr isn't a terminal or JSON was asked for."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def show(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total == 0:
            return
        width = 30
        filled = int(width * done / total)
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label} · {elapsed:.0f}s\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def documents_wait(
    ids: list[int], *, bar: ProgressBar, timeout: float | None = None, hint: IO[str] | None = None,
    poll: float = 0.5,
) -> WaitResult:
    """Poll until every document is indexed or failed (retrying ones are still under way)."""
    started = time.monotonic()
    hinted = False
    unique = sorted(set(ids))
    while True:
        rows = list(Document.objects.filter(pk__in=unique).values_list("status", "chunk_count", "attempts"))
        counts = Counter(status for status, _chunks, _attempts in rows)
        counts["gone"] = len(unique) - len(rows)
        finished = counts[DocumentStatus.INDEXED] + counts[DocumentStatus.FAILED] + counts["gone"]
        bar.show(finished, len(unique), f"done · {counts[DocumentStatus.FAILED]} failed · "
                                        f"{counts[DocumentStatus.PROCESSING]} processing")
        if finished >= len(unique):
            chunks = sum(c for status, c, _a in rows if status == DocumentStatus.INDEXED)
            return WaitResult(counts=counts, chunks=chunks, timed_out=False)
        elapsed = time.monotonic() - started
        if not hinted and hint is not None and elapsed > NO_WORKER_HINT_AFTER and not any(a for *_x, a in rows):
            hint.write("Nothing has started yet: is a worker running? `make run` starts one (or: celery -A config "
                       "worker -Q default,ingest,ingest_large).\n")
            hinted = True
        if timeout is not None and elapsed > timeout:
            chunks = sum(c for status, c, _a in rows if status == DocumentStatus.INDEXED)
            return WaitResult(counts=counts, chunks=chunks, timed_out=True)
        time.sleep(poll)
