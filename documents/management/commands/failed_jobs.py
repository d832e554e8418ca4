"""`manage.py failed_jobs --workspace acme [--retry]`: the documents whose ingestion failed, and why; and those whose
job was lost (stalled)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from documents import selectors, services
from documents.management.progress import workspace_enter


class Command(OperatorCommand):
    help = "List failed (and stalled) ingestion jobs of a workspace; --retry queues them all again."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--retry", action="store_true", help="Queue every failed document again.")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace_enter(options["workspace"])
        failed = [
            {"id": d.pk, "title": d.title, "filename": d.original_name, "source_url": d.source_url,
             "error_code": d.error_code, "error_message": d.error_message, "stage": d.stage, "attempts": d.attempts,
             "failed_at": d.last_error_at}
            for d in selectors.document_failed_list()
        ]
        # Jobs that are not failed but lost (queued or processing with no sign of life: a broker restarted without
        # persistence forgot them); --retry sends them again, as the beat sweeper would.
        stalled = [{"id": d.pk, "title": d.title, "status": d.status, "stage": d.stage, "since": d.last_sign}
                   for d in services.documents_stalled()]
        data: dict[str, Any] = {"failed": failed, "stalled": stalled}
        lines = [f"{len(failed)} failed job(s)"] + [
            f"  #{f['id']} {f['title']}: {f['error_code']}: {f['error_message']}" for f in failed
        ]
        if stalled:
            lines += [f"{len(stalled)} stalled job(s)"] + [
                f"  #{d['id']} {d['title']}: {d['status']} at {d['stage']}, no sign of life since {d['since']}"
                for d in stalled
            ]
        if options["retry"]:
            data["retried"] = services.failed_documents_retry()
            lines.append(f"{len(data['retried'])} queued again")
            if stalled:
                data["resent"] = services.documents_stalled_resend()
                lines.append(f"{len(data['resent'])} stalled job(s) sent again")
        self.emit(data, "\n".join(lines))
