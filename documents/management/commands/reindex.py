"""`manage.py reindex --workspace acme [--document ID] [--wait] [--lexical]`: rebuild chunks and vectors from stored
files; with --lexical, only the lexical (BM25) index from the chunks as they are, synchronously."""
from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from config.commands import OperatorCommand
from documents import selectors, services
from documents.management.progress import ProgressBar, documents_wait, workspace_enter
from documents.models import Document, DocumentStatus


class Command(OperatorCommand):
    help = "Reindex one document or the whole knowledge base of a workspace (e.g. after changing the model)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--document", type=int, default=None, help="Only this document id.")
        parser.add_argument("--wait", action="store_true", help="Wait until every document is indexed or failed.")
        parser.add_argument("--timeout", type=float, default=None)
        parser.add_argument("--lexical", action="store_true",
                            help="Only rebuild the full-text (BM25) statistics from the current chunks; no re-parsing "
                                 "or re-embedding. Runs now, in this process.")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        workspace_enter(options["workspace"])
        if options["lexical"]:
            if options["document"] is not None:
                raise CommandError("--lexical rebuilds the whole workspace's index; leave out --document.")
            summary = services.workspace_lexical_reindex()
            summary["seconds"] = round(time.monotonic() - started, 2)
            self.emit(summary, f"lexical index rebuilt: {summary['terms']} terms over {summary['chunks']} chunks "
                               f"in {summary['seconds']} s")
            return
        if options["document"] is not None:
            document = services.document_reindex(document=selectors.document_get(document_id=options["document"]))
            ids = [document.pk]
        else:
            ids = list(Document.objects.values_list("id", flat=True))
            services.workspace_reindex()
        summary: dict[str, Any] = {"queued": len(ids), "documents": ids}
        failed = 0
        if options["wait"] and ids:
            result = documents_wait(ids, bar=ProgressBar(enabled=not self.as_json), timeout=options["timeout"],
                                    hint=self.stderr)
            failed = result.counts[DocumentStatus.FAILED]
            summary.update(indexed=result.counts[DocumentStatus.INDEXED], failed=failed, chunks=result.chunks,
                           timed_out=result.timed_out)
        summary["seconds"] = round(time.monotonic() - started, 2)
        human = f"{len(ids)} document(s) queued for reindexing"
        if options["wait"]:
            human += f": {summary.get('indexed', 0)} indexed, {failed} failed, {summary.get('chunks', 0)} chunks"
        self.emit(summary, human)
        if failed or summary.get("timed_out"):
            sys.exit(1)
