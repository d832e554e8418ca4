"""`manage.py import_workspace --archive PATH --slug NEW --owner-email E [--name N] [--plan P] [--json]`: a new
workspace from an export archive. Refused (archive_incompatible) if the archive was written under other migrations."""
from pathlib import Path

from django.core.management.base import CommandParser

from accounts.portability import workspace_import_from
from config.commands import OperatorCommand


class Command(OperatorCommand):
    help = "Create a new workspace from an export archive (rows keep their ids; members are matched by email)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--archive", required=True)
        parser.add_argument("--slug", required=True, help="The new workspace's slug.")
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", default=None, help="For a new owner account; generated if omitted.")
        parser.add_argument("--name", default=None, help="Default: the exported workspace's name.")
        parser.add_argument("--plan", default=None, help="Default: the exported workspace's plan.")

    def handle(self, *args, **options) -> None:
        data = workspace_import_from(
            path=Path(options["archive"]), slug=options["slug"], name=options["name"],
            owner_email=options["owner_email"], owner_password=options["owner_password"], plan=options["plan"],
        )
        rows = sum(data["counts"].values())
        self.emit(data, f"Imported {data['from']} as {data['slug']} ({rows} rows; " + ", ".join(data["parts"].values())
                  + f") in {data['ms']} ms")
