"""`manage.py sync_sources --workspace acme [--source ID] [--wait] [--json]`: re-sync a workspace's websites now.

Every known page is checked again with a conditional GET (unchanged pages are neither downloaded again nor
re-embedded), new links are followed, pages gone twice in a row are removed. With `--json`:
{"sources", "checked", "changed", "added", "removed", "unchanged", "failed", "seconds"} over the runs started (so
far, or at their end with --wait). A source with a run already going is left to that run (not counted). Exit status 1
when a run ended other than completed, or --wait timed out.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from config.errors import Conflict
from documents import selectors, sources
from documents.management.progress import ProgressBar, workspace_enter
from documents.management.sources_wait import run_summary, runs_wait
from documents.models import Source, SourceRun


class Command(OperatorCommand):
    help = "Re-sync a workspace's website sources (all, or one with --source)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--source", type=int, default=None, help="Only this source id.")
        parser.add_argument("--wait", action="store_true", help="Wait until every re-sync has ended.")
        parser.add_argument("--timeout", type=float, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        workspace_enter(options["workspace"])
        if options["source"] is not None:
            targets = [selectors.source_get(source_id=options["source"])]
        else:
            targets = list(Source.objects.order_by("id"))
        runs: list[SourceRun] = []
        busy: list[int] = []
        for source in targets:
            try:
                runs.append(sources.source_sync(source=source, trigger="command"))
            except Conflict:
                busy.append(source.pk)
        timed_out = False
        if options["wait"] and runs:
            timed_out = runs_wait([run.pk for run in runs], bar=ProgressBar(enabled=not self.as_json),
                                  timeout=options["timeout"], hint=self.stderr)
            for run in runs:
                run.refresh_from_db()
        counts = run_summary(runs)
        summary = {"sources": len(runs), "checked": counts["checked"], "changed": counts["changed"],
                   "added": counts["added"], "removed": counts["removed"], "unchanged": counts["unchanged"],
                   "failed": counts["failed"], "seconds": round(time.monotonic() - started, 2)}
        if busy:
            summary["busy"] = busy
        if options["wait"]:
            summary["timed_out"] = timed_out
        human = (f"{len(runs)} source(s): {counts['checked']} checked, {counts['changed']} changed, "
                 f"{counts['added']} added, {counts['removed']} removed, {counts['unchanged']} unchanged, "
                 f"{counts['failed']} failed" + (f"; busy: {busy}" if busy else ""))
        self.emit(summary, human)
        if options["wait"] and (timed_out or any(run.status != "completed" for run in runs)):
            sys.exit(1)
