"""`manage.py export_workspace --workspace acme [--output PATH] [--json]`: one archive with everything the workspace
owns (rows of every workspace model, files, vectors, memberships). See tenants/portability.py for the format."""
from pathlib import Path

from django.core.management.base import CommandParser

from accounts.portability import workspace_export_to
from config.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Export a workspace to a .tar.gz archive (documents, chunks, vectors, conversations, analytics, members)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="The workspace's slug.")
        parser.add_argument("--output", default=None, help="Archive path; default .data/exports/<slug>-<id>.tar.gz")

    def handle(self, *args, **options) -> None:
        output = Path(options["output"]) if options["output"] else None
        data = workspace_export_to(slug=options["workspace"], path=output)
        rows = sum(data["counts"].values())
        self.emit(data, f"Exported {data['slug']} to {data['path']} ({data['bytes']} bytes, {rows} rows; "
                        + ", ".join(data["parts"].values()) + f") in {data['ms']} ms")
