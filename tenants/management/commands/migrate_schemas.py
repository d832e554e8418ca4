"""`migrate_schemas`: django-tenants' command, made fast with thousands of workspaces (see docs/provisioning.md).

Same name, same options, same results as django-tenants' command (the `tenants` app is listed before
`django_tenants`, so this one is found first). What changes:

- system checks run once for the command, not once more per schema;
- Django's migration-table existence check is replaced, for the duration of the command, by a direct catalog lookup
  (the stock one lists every table in the database several times per schema: quadratic in the schema count);
- a plain run (no app label, target, --fake, --plan, --check, --prune, --run-syncdb) uses the `fast` executor: it skips
  workspace schemas that already record every migration on disk, renders the migration state once per set of
  applied migrations instead of twice per schema, and spreads schemas over forked worker processes (--parallel);
- a run over all workspaces also re-renders the provisioning template for the new migrations and rebuilds the warm
  pool (first, so a broken migration fails on the template before any workspace, and signups get the new state at
  once), then migrates the workspaces, then catches up any workspace provisioned from the old state meanwhile.

Any other combination of options runs django-tenants' own executors (`--executor standard|multiprocessing|subprocess`
also selects them explicitly), still with the fast existence check.
"""
from __future__ import annotations

import json
import os
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django_tenants.management.commands import SyncCommon
from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand
from django_tenants.migration_executors.base import run_migrations
from django_tenants.utils import get_public_schema_name, has_multi_type_tenants, schema_exists

from config.commands import JsonStdoutMixin
from tenants.migrations_fast import (
    SchemaMigrateResult,
    SchemaMigrationFailed,
    WorkspacesMigrateReport,
    fast_migration_recorder,
    migrate_options_are_plain,
    schemas_migrate,
    template_and_pool_refresh,
    workspaces_migrate,
)

FAST_EXECUTOR = "fast"


class Command(JsonStdoutMixin, MigrateSchemasCommand):
    help = (
        "Migrate the public schema and every workspace schema (django-tenants' migrate_schemas, fast with many "
        "workspaces), then refresh the provisioning template and warm pool."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(executor=None)
        help_texts = {
            "executor": "fast (default: plain runs only, see docs/provisioning.md) | standard | multiprocessing | "
            "subprocess (django-tenants' own).",
            "parallel": "Worker processes: of the fast executor (default: CPUs up to 4, fewer for few schemas), or "
            "subprocesses of --executor=subprocess.",
        }
        for action in parser._actions:  # argparse keeps no public handle on an added argument's help
            if action.dest in help_texts:
                action.help = help_texts[action.dest]
        parser.add_argument(
            "--all-schemas", action="store_true", dest="include_current",
            help="Fast executor: also enter workspace schemas that already record every migration (skipped otherwise).",
        )
        parser.add_argument(
            "--no-template-refresh", action="store_false", dest="template_refresh",
            help="Don't re-render the provisioning template or rebuild the warm pool for the new migrations.",
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print a JSON summary only.")

    def get_check_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        # The checks `migrate` would run for each schema, run once here (with the database checks it adds).
        return {**super().get_check_kwargs(options), "databases": [options["database"]]}

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["as_json"]
        if as_json:
            options["verbosity"] = 0
        options["skip_checks"] = True  # they ran in execute(); see get_check_kwargs
        executor = options["executor"] or os.environ.get("EXECUTOR") or FAST_EXECUTOR
        fast = executor == FAST_EXECUTOR and migrate_options_are_plain(options) and not has_multi_type_tenants()
        summary: dict[str, Any] = {"executor": FAST_EXECUTOR if fast else executor}
        with fast_migration_recorder():
            if fast:
                self._handle_fast(args, options, summary)
            else:
                options["executor"] = "standard" if executor == FAST_EXECUTOR else executor
                super().handle(*args, **options)
                summary["public"] = bool(self.sync_public)
                if self._refreshes_template(options):
                    summary["template"], summary["pool_built"] = template_and_pool_refresh()
        if as_json:  # everything else (django-tenants' lines, forked workers) went to stderr: JsonStdoutMixin
            self.json_stdout.write(json.dumps(summary))
        elif options["verbosity"] >= 1 and "template" in summary:
            self.stdout.write(
                f"Provisioning template {summary['template'][:12]} current; {summary['pool_built']} pool schemas built."
            )

    def _handle_fast(self, args: tuple[Any, ...], options: dict[str, Any], summary: dict[str, Any]) -> None:
        SyncCommon.handle(self, *args, **options)  # sets sync_public / sync_tenant / schema_name as the stock command
        public = get_public_schema_name()
        summary["public"] = bool(self.sync_public)
        if self.sync_public:
            run_migrations(self.args, self.options, FAST_EXECUTOR, public)
        if not self.sync_tenant:
            return
        if self._refreshes_template(options):
            # Before the workspaces: the template is migrated like one (a failing migration stops here, before any
            # workspace is touched), and from now on signups get the new state instead of adding to the work.
            summary["template"], summary["pool_built"] = template_and_pool_refresh()
        if self.schema_name and self.schema_name != public:
            if not schema_exists(self.schema_name, options["database"]):
                raise CommandError(f'Schema "{self.schema_name}" does not exist')
            try:
                results = schemas_migrate(
                    [self.schema_name], database=options["database"], processes=1,
                    verbosity=options["verbosity"], on_result=self._progress(options, 1),
                )
            except SchemaMigrationFailed as failure:
                raise CommandError(str(failure)) from failure
            summary.update(schemas=1, migrated=1, migrations_applied=len(results[0].applied))
            return
        report = self._workspaces(options, include_current=options["include_current"])
        summary.update(
            schemas=report.schemas, migrated=report.migrated, already_current=report.already_current,
            migrations_applied=report.migrations_applied, passes=report.passes, seconds=round(report.seconds, 2),
        )
        if "template" in summary:
            # Processes still running the old code may have provisioned from the old state meanwhile.
            summary["caught_up"] = self._workspaces(options, include_current=False).migrated
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Workspaces: {report.schemas} schemas, {report.migrated} migrated ({report.migrations_applied} "
                f"migrations), {report.already_current} already current, in {report.seconds:.1f} s."
            )

    def _workspaces(self, options: dict[str, Any], *, include_current: bool) -> WorkspacesMigrateReport:
        try:
            return workspaces_migrate(
                database=options["database"], processes=options["parallel"], verbosity=options["verbosity"],
                include_current=include_current, on_result=self._progress(options, None),
            )
        except SchemaMigrationFailed as failure:
            raise CommandError(str(failure)) from failure

    def _progress(self, options: dict[str, Any], total: int | None) -> Any:
        verbosity = options["verbosity"]
        seen = 0

        def report(result: SchemaMigrateResult) -> None:
            nonlocal seen
            seen += 1
            if verbosity >= 2 or (verbosity >= 1 and result.lines):
                prefix = f"[{seen}{'/' + str(total) if total else ''} {FAST_EXECUTOR}:{result.schema_name}]"
                self.stdout.write(f"{prefix} {len(result.applied)} applied in {result.seconds * 1000:.0f} ms")
                for line in result.lines:
                    self.stdout.write(f"{prefix} {line}")

        return report

    def _refreshes_template(self, options: dict[str, Any]) -> bool:
        """Only a run over every workspace that changes something re-renders the template and refills the pool."""
        return bool(
            options["template_refresh"]
            and self.sync_tenant
            and not self.schema_name
            and not options["plan"]
            and not options["check_unapplied"]
        )
