"""`manage.py crawl --workspace acme URL [--sitemap] [--max-pages N] [--max-depth D] [--include P]... [--exclude P]...
[--every daily|weekly] [--wait] [--json]`: add a website as a source and start its crawl (a worker does it).

With `--json`: {"source_id", "pages", "indexed", "unchanged", "failed", "skipped", "seconds"} — the run's counters
(so far, or at its end with --wait); `pages` is how many of the site's pages are in the knowledge base. Exit status 1
when the run ended other than completed, or --wait timed out.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from documents import sources
from documents.management.progress import ProgressBar, workspace_enter
from documents.management.sources_wait import run_summary, runs_wait


class Command(OperatorCommand):
    help = "Add a website (start URL or sitemap) to a workspace's knowledge base and crawl it."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("url")
        parser.add_argument("--sitemap", action="store_true", help="The URL is a sitemap (or sitemap index).")
        parser.add_argument("--max-pages", type=int, default=None)
        parser.add_argument("--max-depth", type=int, default=None)
        parser.add_argument("--include", action="append", default=[], help="Path pattern to crawl (repeatable).")
        parser.add_argument("--exclude", action="append", default=[], help="Path pattern to skip (repeatable).")
        parser.add_argument("--every", choices=["daily", "weekly"], default=None, help="Re-sync on this schedule.")
        parser.add_argument("--wait", action="store_true", help="Wait until the crawl has ended.")
        parser.add_argument("--timeout", type=float, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        workspace_enter(options["workspace"])
        source = sources.source_create(
            url=options["url"], sitemap=options["sitemap"], max_pages=options["max_pages"],
            max_depth=options["max_depth"], include=options["include"], exclude=options["exclude"],
            schedule=options["every"] or "off", trigger="command")
        run = source.runs.get()
        timed_out = False
        if options["wait"]:
            timed_out = runs_wait([run.pk], bar=ProgressBar(enabled=not self.as_json), timeout=options["timeout"],
                                  hint=self.stderr)
            run.refresh_from_db()
        counts = run_summary([run])
        summary = {"source_id": source.pk, "pages": source.pages.exclude(document=None).count(),
                   "indexed": counts["indexed"], "unchanged": counts["unchanged"], "failed": counts["failed"],
                   "skipped": counts["skipped"], "seconds": round(time.monotonic() - started, 2)}
        if options["wait"]:
            summary.update(status=run.status, stop_code=run.stop_code, timed_out=timed_out)
        human = (f"source {source.pk}: {summary['pages']} page(s) in the knowledge base, {counts['indexed']} indexed, "
                 f"{counts['unchanged']} unchanged, {counts['failed']} failed, {counts['skipped']} skipped"
                 + (f" ({run.status}{': ' + run.stop_message if run.stop_message else ''})" if options["wait"]
                    else " (crawl queued)"))
        self.emit(summary, human)
        if options["wait"] and (timed_out or run.status != "completed"):
            sys.exit(1)
