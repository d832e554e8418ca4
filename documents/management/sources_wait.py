"""Shared by `crawl` and `sync_sources`: wait for source runs, with a terminal progress bar, and sum their counters."""
from __future__ import annotations

import time
from typing import IO, Any

from documents.management.progress import NO_WORKER_HINT_AFTER, ProgressBar
from documents.models import RUN_ACTIVE, PageState, SourceRun, SourceRunPage


def runs_wait(run_ids: list[int], *, bar: ProgressBar, timeout: float | None = None, hint: IO[str] | None = None,
              poll: float = 0.5) -> bool:
    """Wait until every run has ended; True when `timeout` passed first."""
    started = time.monotonic()
    hinted = False
    try:
        while True:
            active = SourceRun.objects.filter(pk__in=run_ids, status__in=RUN_ACTIVE)
            done = SourceRunPage.objects.filter(run_id__in=run_ids, is_sitemap=False).exclude(
                state=PageState.PENDING).count()
            total = SourceRunPage.objects.filter(run_id__in=run_ids, is_sitemap=False).count()
            bar.show(done, max(total, 1), "pages")
            if not active.exists():
                return False
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed > timeout:
                return True
            if hint is not None and not hinted and elapsed > NO_WORKER_HINT_AFTER and \
                    not SourceRun.objects.filter(pk__in=run_ids).exclude(started_at=None).exists():
                hint.write("No run has started yet: is a Celery worker running on the ingest queue?\n")
                hinted = True
            time.sleep(poll)
    finally:
        bar.close()


def run_summary(runs: list[SourceRun]) -> dict[str, Any]:
    names = ("indexed", "unchanged", "failed", "skipped", "changed", "added", "removed")
    counts = {name: sum(getattr(run, name) for run in runs) for name in names}
    counts["checked"] = counts["unchanged"] + counts["changed"] + counts["added"] + counts["removed"] + counts["failed"]
    return counts
