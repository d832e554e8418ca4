from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from config.errors import ValidationFailed
from tenants.services import workspace_delete


class Command(OperatorCommand):
    help = "Delete a workspace and purge everything it owns (schema, vectors, files, cache keys)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--yes", action="store_true", help="Confirm: this cannot be undone.")

    def handle(self, *args, **options) -> None:
        if not options["yes"]:
            raise ValidationFailed("Refusing without --yes: deleting a workspace cannot be undone.")
        report = workspace_delete(slug=options["slug"])
        self.emit(
            {"deleted": report.slug, "schema": report.schema, "removed": report.removed},
            f"Deleted workspace {report.slug}:\n  " + "\n  ".join(report.removed),
        )
