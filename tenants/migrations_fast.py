"""What makes `migrate_schemas` fast with thousands of workspace schemas (see docs/provisioning.md).

Django's MigrationRecorder.has_table() asks "does django_migrations exist?" by listing every table visible on the
search_path, and PostgreSQL answers that by testing the visibility of every relation in the database. It is asked
several times per schema, so migrating N schemas costs O(N x all relations) = O(N^2). `migration_table_exists` asks
the catalog for the one table instead (an index lookup), and `fast_migration_recorder` installs it for the duration
of a command.

`schemas_behind` finds, in a couple of queries, which workspace schemas lack a migration that is on disk, so a
`migrate_schemas` run only enters the schemas that have work to do.

`schemas_migrate` then runs, per schema, what Django's `migrate` runs for a plain forward migration (fresh loader and
plan, pre_migrate, MigrationExecutor.migrate, post_migrate), but renders the project state before and after only
once per set of applied migrations instead of twice per schema -- rendering every model is most of the per-schema
cost of `migrate` -- and spreads the schemas over forked worker processes.
"""
from __future__ import annotations

import functools
import io
import logging
import multiprocessing
import multiprocessing.util
import os
import time
import traceback
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.apps import apps as global_apps
from django.conf import settings
from django.core.management.base import CommandError, OutputWrapper
from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import connection as default_connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ModelState, ProjectState, StateApps
from django.utils.module_loading import module_has_submodule
from django_tenants.signals import schema_migrated, schema_pre_migration

logger = logging.getLogger(__name__)

# The relkinds Django's table_names() reports as tables (views and partitions are left out: include_views=False,
# and a partition is typed "p"), so the fast check answers exactly what the slow one does.
_TABLE_EXISTS_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = %s AND n.nspname = %s AND c.relkind IN ('r', 'f', 'p') AND NOT c.relispartition
)
"""

# Schemas per UNION ALL query when reading many schemas' django_migrations at once; keeps one statement small.
_SCHEMAS_PER_QUERY = 400
# Schemas per task handed to a worker process: small enough to balance the load and report progress often.
_MAX_CHUNK = 25
# A worker process renders the migration state once (~0.1 s) and forks: not worth it for a handful of schemas.
_MIN_SCHEMAS_PER_PROCESS = 20
# Signups may take a pool schema (or the template) of the old migration state while a run is under way; each pass
# migrates the workspaces that are still behind, until none is.
_MAX_PASSES = 3


def migration_table_exists(connection: BaseDatabaseWrapper) -> bool:
    """True if django_migrations exists in the schema the connection works in.

    django-tenants' introspection lists tables with the search_path set to the connection's schema alone, so for a
    tenant-aware connection "visible" means "in connection.schema_name".
    """
    schema_name = getattr(connection, "schema_name", None)
    if schema_name is None or connection.vendor != "postgresql":
        return _original_has_table_check(connection)
    with connection.cursor() as cursor:
        cursor.execute(_TABLE_EXISTS_SQL, [MigrationRecorder.Migration._meta.db_table, schema_name])
        return bool(cursor.fetchone()[0])


def _original_has_table_check(connection: BaseDatabaseWrapper) -> bool:
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    return MigrationRecorder.Migration._meta.db_table in tables


_django_has_table: Callable[[MigrationRecorder], bool] = MigrationRecorder.has_table


def _fast_has_table(self: MigrationRecorder) -> bool:
    # Same caching rule as Django's: only a positive answer is remembered.
    if self._has_table:
        return True
    self._has_table = migration_table_exists(self.connection)
    return self._has_table


@contextmanager
def fast_migration_recorder() -> Iterator[None]:
    """Use the direct existence check in every MigrationRecorder while the block runs (re-entrant).

    Processes forked inside the block (django-tenants' multiprocessing executor) inherit it.
    """
    if MigrationRecorder.has_table is _fast_has_table:
        yield
        return
    MigrationRecorder.has_table = _fast_has_table
    try:
        yield
    finally:
        MigrationRecorder.has_table = _django_has_table


def migrations_on_disk() -> frozenset[tuple[str, str]]:
    """Every migration a fully migrated workspace schema records (shared apps' included), read from disk now."""
    from tenants import provisioning

    # Cached per process; a long-lived process (or a test) may have new migrations by now.
    provisioning.schema_migrations.cache_clear()
    return frozenset(provisioning.schema_migrations())


def _quote(name: str) -> str:
    return default_connection.ops.quote_name(name)


def schemas_recorded_migrations(schema_names: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
    """The recorded migrations of many schemas, read in a few queries. Schemas without a django_migrations table
    (or without the schema itself) are left out of the answer."""
    names = list(dict.fromkeys(schema_names))
    if not names:
        return {}
    with default_connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'django_migrations' AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
            [names],
        )
        with_table = {row[0] for row in cursor.fetchall()}
        recorded: dict[str, set[tuple[str, str]]] = {name: set() for name in names if name in with_table}
        present = [name for name in names if name in with_table]
        for start in range(0, len(present), _SCHEMAS_PER_QUERY):
            chunk = present[start:start + _SCHEMAS_PER_QUERY]
            sql = " UNION ALL ".join(
                f"SELECT %s, app, name FROM {_quote(name)}.django_migrations" for name in chunk
            )
            cursor.execute(sql, chunk)
            for schema, app, name in cursor.fetchall():
                recorded[schema].add((app, name))
    return recorded


def schemas_behind(schema_names: Iterable[str], *, expected: frozenset[tuple[str, str]] | None = None) -> list[str]:
    """The schemas (in the given order) that lack at least one migration on disk, or have no migration table.

    A schema that records every migration on disk has an empty plan, so `migrate` would do nothing in it.
    """
    names = list(dict.fromkeys(schema_names))
    expected = migrations_on_disk() if expected is None else expected
    recorded = schemas_recorded_migrations(names)
    return [name for name in names if name not in recorded or not expected <= recorded[name]]


def migrate_options_are_plain(options: dict[str, Any]) -> bool:
    """A plain "apply everything on disk" run: the only kind the fast path runs (and may skip current schemas in);
    every other option combination goes through django-tenants' executors and Django's migrate, per schema."""
    return not any(
        options.get(key)
        for key in (
            "app_label", "migration_name", "fake", "fake_initial", "plan", "prune", "run_syncdb", "check_unapplied",
        )
    )


# --- migrating many schemas --------------------------------------------------------------------------------------


class SchemaMigrationFailed(RuntimeError):
    """Migrating one workspace schema raised; the run stopped (schemas already migrated stay migrated)."""

    def __init__(self, schema_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"migrating schema {schema_name!r} failed: {message}")
        self.schema_name = schema_name
        self.traceback_text = traceback_text


@dataclass
class SchemaMigrateResult:
    schema_name: str
    applied: list[str]
    lines: list[str]
    seconds: float


class _StateCache:
    """Rendered project states of one process, per set of applied migrations.

    Every schema with the same applied migrations has the same state before and after a forward run, so Django's
    two full renders per schema (pre_migrate state, post_migrate apps) are done once per set instead.
    """

    def __init__(self) -> None:
        self._pre: dict[Hashable, ProjectState] = {}
        self._post: dict[Hashable, StateApps] = {}

    @staticmethod
    def key(executor: MigrationExecutor) -> Hashable:
        loader = executor.loader
        return frozenset(loader.graph.nodes), frozenset(loader.applied_migrations), frozenset(loader.unmigrated_apps)

    def pre_migrate_state(self, executor: MigrationExecutor, key: Hashable) -> ProjectState:
        """The rendered state before migrating. Shared: callers get clones for anything that mutates."""
        state = self._pre.get(key)
        if state is None:
            state = executor._create_project_state(with_applied_migrations=True)
            state.apps  # noqa: B018  (renders every model once, as Django's migrate does per schema)
            self._pre[key] = state
        return state

    def post_migrate_apps(self, key: Hashable, post_state: ProjectState) -> StateApps:
        apps_after = self._post.get(key)
        if apps_after is None:
            # As django.core.management.commands.migrate does after executor.migrate().
            post_state.clear_delayed_apps_cache()
            apps_after = post_state.apps
            with apps_after.bulk_update():
                model_keys = []
                for model_state in apps_after.real_models:
                    model_key = model_state.app_label, model_state.name_lower
                    model_keys.append(model_key)
                    apps_after.unregister_model(*model_key)
            apps_after.render_multiple([ModelState.from_model(global_apps.get_model(*model)) for model in model_keys])
            self._post[key] = apps_after
        return apps_after


def _register_management_modules() -> None:
    # Django's migrate imports every app's `management` module first so post_migrate handlers are connected.
    for app_config in global_apps.get_app_configs():
        if module_has_submodule(app_config.module, "management"):
            import_module(".management", app_config.name)


def migration_conflicts_check() -> None:
    """Refuse to migrate when an app has several leaf migrations, as `migrate` does."""
    conflicts = MigrationLoader(None, ignore_no_migrations=True).detect_conflicts()
    if conflicts:
        detail = "; ".join("%s in %s" % (", ".join(names), app) for app, names in conflicts.items())
        raise CommandError(
            f"Conflicting migrations detected; multiple leaf nodes in the migration graph: ({detail}).\n"
            "To fix them run 'python manage.py makemigrations --merge'"
        )


def schema_migrate_forward(
    schema_name: str, *, database: str = DEFAULT_DB_ALIAS, verbosity: int = 0, cache: _StateCache | None = None
) -> SchemaMigrateResult:
    """Apply every unapplied migration on disk to one schema: what `migrate_schemas --schema NAME` does for a plain
    run (same signals, same executor, same recording), with the rendered project states shared through `cache`."""
    from django_tenants.migration_executors.base import run_migrations as tenants_run_migrations

    cache = cache if cache is not None else _StateCache()
    connection = connections[database]
    lines: list[str] = []
    applied: list[str] = []
    started = time.perf_counter()

    def progress(action: str, migration: Any = None, fake: bool = False) -> None:
        if action == "apply_success":
            applied.append(str(migration))
            if verbosity >= 1:
                lines.append(f"  Applying {migration}... {'FAKED' if fake else 'OK'}")

    signal_output = io.StringIO()
    signal_stream = OutputWrapper(signal_output)
    # django-tenants' own signals, with the sender its executors use, so their receivers keep working.
    schema_pre_migration.send(tenants_run_migrations, schema_name=schema_name)
    # django_migrations must be created in the schema itself, not found in public through the search_path.
    connection.set_schema(schema_name, include_public=False)
    try:
        MigrationRecorder(connection).ensure_schema()
        connection.set_schema(schema_name)
        connection.prepare_database()
        executor = MigrationExecutor(connection, progress)
        executor.loader.check_consistent_history(connection)
        targets = executor.loader.graph.leaf_nodes()
        plan = executor.migration_plan(targets)
        key = cache.key(executor)
        pre_state = cache.pre_migrate_state(executor, key)
        emit_pre_migrate_signal(verbosity, False, connection.alias, stdout=signal_stream, apps=pre_state.apps, plan=plan)
        post_state = executor.migrate(targets, plan=plan, state=pre_state.clone())
        post_apps = cache.post_migrate_apps(key, post_state)
        emit_post_migrate_signal(verbosity, False, connection.alias, stdout=signal_stream, apps=post_apps, plan=plan)
    finally:
        connection.set_schema_to_public()
    schema_migrated.send(tenants_run_migrations, schema_name=schema_name)
    lines += [line for line in signal_output.getvalue().splitlines() if line.strip()]
    return SchemaMigrateResult(schema_name, applied, lines, time.perf_counter() - started)


@dataclass
class _ChunkOutcome:
    results: list[SchemaMigrateResult]
    error: tuple[str, str, str] | None = None


# Per worker process: set by _worker_init, used by _worker_run.
_stop_event: Any = None
_worker_cache: _StateCache | None = None


def _worker_init(stop_event: Any) -> None:
    global _stop_event, _worker_cache
    _stop_event = stop_event
    _worker_cache = _StateCache()
    # Pool workers leave through os._exit; close our connection cleanly when the pool is closed.
    multiprocessing.util.Finalize(None, connections.close_all, exitpriority=10)


def _worker_run(database: str, verbosity: int, chunk: list[str]) -> _ChunkOutcome:
    outcome = _ChunkOutcome(results=[])
    for schema_name in chunk:
        if _stop_event is not None and _stop_event.is_set():
            break
        try:
            outcome.results.append(
                schema_migrate_forward(schema_name, database=database, verbosity=verbosity, cache=_worker_cache)
            )
        except Exception as exc:  # reported to the parent, which stops the run and raises
            outcome.error = (schema_name, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            break
    return outcome


def _drop_broker_after_fork_hooks() -> None:
    """The workers only migrate schemas and never touch the broker. Kombu registers after-fork hooks that close the
    parent's broker connections inside the child; a connection the parent left in a blocking BRPOP (e.g. after a
    Celery control ping) makes that close wait forever and the worker never starts."""
    import multiprocessing.util as mp_util

    for key in list(mp_util._afterfork_registry.keys()):
        if getattr(key[2], "__module__", "").startswith("kombu"):
            mp_util._afterfork_registry.pop(key, None)


def schemas_migrate(
    schema_names: Sequence[str],
    *,
    database: str = DEFAULT_DB_ALIAS,
    processes: int | None = None,
    verbosity: int = 0,
    on_result: Callable[[SchemaMigrateResult], None] | None = None,
) -> list[SchemaMigrateResult]:
    """Migrate many schemas forward, in `processes` forked workers (None: as many as pay off, see
    default_processes). Stops at the first failure and raises SchemaMigrationFailed naming the schema; schemas that
    finished stay migrated (each migration is atomic, as with `migrate`)."""
    names = list(dict.fromkeys(schema_names))
    results: list[SchemaMigrateResult] = []
    if not names:
        return results
    _register_management_modules()
    migration_conflicts_check()

    def collect(result: SchemaMigrateResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    if processes is None:
        processes = min(default_processes(), max(1, len(names) // _MIN_SCHEMAS_PER_PROCESS))
    processes = max(1, min(processes, len(names)))
    if processes == 1:
        cache = _StateCache()
        for schema_name in names:
            try:
                collect(schema_migrate_forward(schema_name, database=database, verbosity=verbosity, cache=cache))
            except Exception as exc:
                raise SchemaMigrationFailed(schema_name, f"{type(exc).__name__}: {exc}", traceback.format_exc()) from exc
        return results

    # Forked workers inherit the app registry, settings (overrides included) and the fast has_table; they must not
    # inherit an open connection.
    connections.close_all()
    _drop_broker_after_fork_hooks()
    context = multiprocessing.get_context("fork")
    stop_event = context.Event()
    size = max(1, min(_MAX_CHUNK, len(names) // (processes * 8) or 1))
    chunks = [names[start:start + size] for start in range(0, len(names), size)]
    failure: tuple[str, str, str] | None = None
    pool = context.Pool(processes=processes, initializer=_worker_init, initargs=(stop_event,))
    try:
        for outcome in pool.imap_unordered(functools.partial(_worker_run, database, verbosity), chunks):
            for result in outcome.results:
                collect(result)
            if outcome.error is not None and failure is None:
                failure = outcome.error
                stop_event.set()
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    if failure is not None:
        raise SchemaMigrationFailed(*failure)
    return results


def default_processes() -> int:
    """TENANT_MULTIPROCESSING_MAX_PROCESSES when set (django-tenants' setting), else the CPU count up to 4: past
    that, the database (often on the same host) is the bottleneck."""
    configured = getattr(settings, "TENANT_MULTIPROCESSING_MAX_PROCESSES", None)
    return max(1, int(configured)) if configured else max(1, min(os.cpu_count() or 1, 4))


def workspace_schema_names() -> list[str]:
    """Every workspace schema (not public), in django-tenants' migration order when one is configured."""
    from django_tenants.utils import get_public_schema_name, get_tenant_migration_order

    from tenants.models import Workspace

    queryset = Workspace.objects.exclude(schema_name=get_public_schema_name())
    order = get_tenant_migration_order()
    queryset = queryset.order_by(*order) if order is not None else queryset.order_by("schema_name")
    return list(queryset.values_list("schema_name", flat=True))


@dataclass
class WorkspacesMigrateReport:
    schemas: int = 0
    migrated: int = 0
    already_current: int = 0
    migrations_applied: int = 0
    passes: int = 0
    seconds: float = 0.0
    results: list[SchemaMigrateResult] = field(default_factory=list)


def workspaces_migrate(
    *,
    database: str = DEFAULT_DB_ALIAS,
    processes: int | None = None,
    verbosity: int = 0,
    include_current: bool = False,
    on_result: Callable[[SchemaMigrateResult], None] | None = None,
) -> WorkspacesMigrateReport:
    """Migrate every workspace schema forward to the migrations on disk.

    Schemas that already record every migration are skipped (found in a few queries) unless `include_current`.
    """
    started = time.perf_counter()
    report = WorkspacesMigrateReport()
    expected = migrations_on_disk()
    done: set[str] = set()
    for _ in range(_MAX_PASSES):
        names = workspace_schema_names()
        if report.passes == 0:
            report.schemas = len(names)
            todo = names if include_current else schemas_behind(names, expected=expected)
            report.already_current = len(names) - len(todo)
        else:
            todo = [name for name in schemas_behind(names, expected=expected) if name not in done]
            report.schemas = max(report.schemas, len(names))
        if not todo:
            break
        report.passes += 1
        for result in schemas_migrate(todo, database=database, processes=processes, verbosity=verbosity, on_result=on_result):
            done.add(result.schema_name)
            report.results.append(result)
            report.migrated += 1
            report.migrations_applied += len(result.applied)
    report.seconds = time.perf_counter() - started
    logger.info(
        "workspace schemas migrated",
        extra={"schemas": report.schemas, "migrated": report.migrated, "current": report.already_current,
               "applied": report.migrations_applied, "seconds": round(report.seconds, 2)},
    )
    return report


def template_and_pool_refresh() -> tuple[str, int]:
    """After migrating: make the provisioning template match the migrations on disk and rebuild stale pool schemas.
    Returns the template fingerprint and how many pool schemas were built."""
    from tenants import provisioning

    provisioning.schema_migrations.cache_clear()
    template = provisioning.template_current()
    built = provisioning.pool_refill()
    return template.fingerprint, built
