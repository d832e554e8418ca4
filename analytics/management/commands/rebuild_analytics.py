"""`manage.py rebuild_analytics --workspace SLUG [--json]`: cluster the questions not clustered yet and rebuild every
rollup of the workspace from its raw events."""
from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django_tenants.utils import schema_context

from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound


class Command(OperatorCommand):
    help = "Rebuild a workspace's analytics rollups and question clusters from its raw events."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="The workspace's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        from analytics.services import analytics_rebuild
        from tenants.selectors import workspace_get

        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"There is no workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
        with schema_context(workspace.schema_name):
            report = analytics_rebuild()
        report = {"workspace": workspace.slug, **report}
        self.emit(report, f"{workspace.slug}: {report['events']} events, {report['hourly_rows']} hourly and "
                          f"{report['daily_rows']} daily rollup rows, {report['questions_clustered']} questions "
                          f"clustered ({report['clusters_created']} new clusters) in {report['seconds']} s")
