"""`manage.py ingest --workspace acme [--wait] PATH...`: add files (folders recursively) through the same pipeline as
uploads. `--wait` waits for the worker (`make run` starts one) to index them; exit status 1 if any failed."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from config.errors import ApplicationError, ErrorCode
from documents import services
from documents.management.progress import ProgressBar, documents_wait, workspace_enter
from documents.models import DocumentStatus


def _walk(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(Path(folder) / name for name in sorted(files) if not name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            raise ApplicationError(f"{raw}: no such file or folder.", code=ErrorCode.NOT_FOUND, details={"path": raw})
    return found


class Command(OperatorCommand):
    help = "Ingest files or folders (recursive) into a workspace's knowledge base."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--wait", action="store_true", help="Wait until every document is indexed or failed.")
        parser.add_argument("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
        parser.add_argument("paths", nargs="+", metavar="PATH")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        workspace_enter(options["workspace"])
        files = _walk(options["paths"])
        bar = ProgressBar(enabled=not self.as_json)
        ids: list[int] = []
        errors: list[dict[str, Any]] = []
        duplicates = 0
        for index, path in enumerate(files, 1):
            try:
                with open(path, "rb") as handle:
                    document = services.document_upload(uploaded_file=File(handle, name=path.name))
                ids.append(document.pk)
            except ApplicationError as error:
                if error.code == ErrorCode.DUPLICATE_DOCUMENT and error.details.get("document_id"):
                    duplicates += 1
                    ids.append(int(error.details["document_id"]))  # already there: it counts, and is waited for
                else:
                    errors.append({"path": str(path), "code": error.code, "message": error.message})
            except OSError as error:
                errors.append({"path": str(path), "code": "unreadable", "message": str(error)})
            bar.show(index, len(files), "uploaded")
        bar.close()
        summary: dict[str, Any] = {"documents": len(files), "indexed": 0, "failed": len(errors), "chunks": 0}
        timed_out = False
        if options["wait"] and ids:
            result = documents_wait(ids, bar=ProgressBar(enabled=not self.as_json), timeout=options["timeout"],
                                    hint=self.stderr)
            summary["indexed"] = result.counts[DocumentStatus.INDEXED]
            summary["failed"] += result.counts[DocumentStatus.FAILED]
            summary["chunks"] = result.chunks
            timed_out = result.timed_out
            if timed_out:
                summary["pending"] = len(set(ids)) - summary["indexed"] - result.counts[DocumentStatus.FAILED]
            if not self.as_json and result.counts[DocumentStatus.FAILED]:
                from documents.models import Document

                for doc in Document.objects.filter(pk__in=ids, status=DocumentStatus.FAILED).order_by("id"):
                    errors.append({"path": doc.original_name, "document_id": doc.pk, "code": doc.error_code,
                                   "message": doc.error_message})
        else:
            summary["queued"] = len(set(ids))
        summary["seconds"] = round(time.monotonic() - started, 2)
        summary["duplicates"] = duplicates
        summary["errors"] = errors
        human = (f"{summary['documents']} files: {summary['indexed']} indexed, {summary['failed']} failed, "
                 f"{summary['chunks']} chunks in {summary['seconds']} s"
                 + ("" if options["wait"] else f" ({summary.get('queued', 0)} queued; run with --wait to wait)")
                 + (f"; {duplicates} already in the knowledge base" if duplicates else "")
                 + ("; timed out" if timed_out else ""))
        human += "".join(f"\n  failed: {e['path']}: {e['code']}: {e['message']}" for e in errors)
        self.emit(summary, human)
        if summary["failed"] or timed_out:
            sys.exit(1)
