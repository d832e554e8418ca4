"""Migration safety on schemas that hold data: every workspace schema migration and every shared (public schema)
migration after an app's initial one is reversed (with whatever depends on it) and applied again over real rows.

What is compared is the *contents* of the tables, not their row counts: per table, a digest of every row's values in
the columns the rollback keeps (the columns that exist both in the fully migrated schema and in the reversed one).
Those values must be the same after the reversal and after the re-application, so a migration that rewrites, nulls
or re-seeds existing data on either way fails here. Columns and tables the reversed migrations themselves created
are dropped with their data by the rollback — that is what reversing them means — and are listed in the report.

- Workspace apps (settings.TENANT_APPS) are walked on a workspace cloned from the template and filled with documents,
  chunks, conversations, messages, a widget and assistant settings; on top of the contents, no table may lose a row.
- Shared apps (settings.SHARED_APPS) are walked on the public schema of the test database, with workspaces, users,
  memberships, plans (one edited by staff), subscriptions, ledger entries, API keys and an admin log entry present.
  The public schema belongs to the whole test session, so this test runs first (tests/conftest.py `_RUN_FIRST`),
  refuses to run while another process is connected, and puts back what a rollback dropped (rows of dropped tables
  and columns, sequence positions) from a snapshot after every step: the session finds the database as it was.
  A shared migration whose reversal would unapply some app's initial migration (Django's own contenttypes and auth
  migrations: accounts.0001 depends on them) would drop the users table; it is reported, not walked.

A migration that declares itself irreversible is reported as such and stops the walk back for its app.
"""
from __future__ import annotations

import json
import time

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor
from django.test import override_settings
from django_tenants.utils import tenant_context

from tests.factories import workspace_with_owner

SNAPSHOT_SCHEMA = "migration_walk_snapshot"
Layout = dict[str, tuple[str, ...]]  # table -> columns
Contents = dict[str, tuple[int, str]]  # table -> (rows, digest of the rows' values)


def _app_labels(app_names: list[str], *, exclude: frozenset[str] = frozenset()) -> list[str]:
    labels = []
    for name in app_names:
        config = next((c for c in apps.get_app_configs() if c.name == name), None)
        if config is not None and config.label not in exclude:
            labels.append(config.label)
    return labels


def _layout(schema: str) -> Layout:
    """Every base table of the schema (but the migration records) with its columns."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE' AND c.table_name <> 'django_migrations' "
            "ORDER BY c.table_name, c.ordinal_position", [schema],
        )
        layout: dict[str, list[str]] = {}
        for table, column in cursor.fetchall():
            layout.setdefault(table, []).append(column)
    return {table: tuple(columns) for table, columns in layout.items()}


def _columns(layout: Layout) -> dict[str, set[str]]:
    """A layout without the column order (a column added again comes last; that changes no data)."""
    return {table: set(columns) for table, columns in layout.items()}


def _rows_sql(schema: str, table: str, columns: tuple[str, ...]) -> str:
    """Each row of the table as the JSON text of the given columns."""
    select = ", ".join(f'"{column}"' for column in columns)
    return f'SELECT row_to_json(r)::text AS j FROM (SELECT {select} FROM "{schema}"."{table}") r'


def _contents(schema: str, layout: Layout) -> Contents:
    result = {}
    with connection.cursor() as cursor:
        for table, columns in layout.items():
            if not columns:
                continue
            cursor.execute(f"SELECT count(*), md5(coalesce(string_agg(j, E'\\n' ORDER BY j COLLATE \"C\"), '')) "
                           f"FROM ({_rows_sql(schema, table, columns)}) x")
            count, digest = cursor.fetchone()
            result[table] = (count, digest)
    return result


def _rows(schema: str, table: str, columns: tuple[str, ...]) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(_rows_sql(schema, table, columns))
        return {row[0] for row in cursor.fetchall()}


def _sequences(schema: str) -> dict[str, tuple[int | None, bool]]:
    with connection.cursor() as cursor:
        # Not the migration records' own: reversing and re-applying writes new records, compared separately.
        cursor.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = %s "
                       "AND sequencename <> 'django_migrations_id_seq'", [schema])
        names = [row[0] for row in cursor.fetchall()]
        result = {}
        for name in names:
            cursor.execute(f'SELECT last_value, is_called FROM "{schema}"."{name}"')
            result[name] = tuple(cursor.fetchone())
    return result


def _snapshot_take(schema: str, layout: Layout) -> None:
    """A copy of every table of the schema, to compare with (and, for the public schema, to put rows back from)."""
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{SNAPSHOT_SCHEMA}" CASCADE; CREATE SCHEMA "{SNAPSHOT_SCHEMA}"')
        for table in layout:
            cursor.execute(f'CREATE TABLE "{SNAPSHOT_SCHEMA}"."{table}" AS TABLE "{schema}"."{table}"')


def _snapshot_drop() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{SNAPSHOT_SCHEMA}" CASCADE')


def _snapshot_restore(schema: str, layout: Layout, sequences: dict[str, tuple[int | None, bool]]) -> list[str]:
    """Put back, from the snapshot, every table whose rows differ from it (a rollback dropped the table or one of
    its columns), and every sequence's position. Foreign keys and triggers (the ledger's append-only guard) are off
    while the rows go back: the snapshot is a consistent state of the same schema."""
    snapshot = _contents(SNAPSHOT_SCHEMA, layout)
    current = _contents(schema, layout)
    changed = sorted(t for t in layout if current.get(t) != snapshot[t])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for table in changed:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND is_generated = 'NEVER'", [schema, table])
            writable = {row[0] for row in cursor.fetchall()}
            columns = ", ".join(f'"{c}"' for c in layout[table] if c in writable)
            cursor.execute(f'DELETE FROM "{schema}"."{table}"')
            cursor.execute(f'INSERT INTO "{schema}"."{table}" ({columns}) OVERRIDING SYSTEM VALUE '
                           f'SELECT {columns} FROM "{SNAPSHOT_SCHEMA}"."{table}"')
        for name, (last_value, is_called) in sequences.items():
            if last_value is not None:
                cursor.execute("SELECT setval(%s, %s, %s)", [f'"{schema}"."{name}"', last_value, is_called])
    return changed


def _kept(before: Layout, reversed_: Layout) -> Layout:
    """The tables and columns a rollback keeps: they exist both before it and in the reversed schema."""
    return {table: tuple(c for c in columns if c in reversed_[table])
            for table, columns in before.items() if table in reversed_}


def _dropped(before: Layout, reversed_: Layout) -> list[str]:
    dropped = []
    for table, columns in before.items():
        if table not in reversed_:
            dropped.append(table)
        else:
            dropped += [f"{table}.{c}" for c in columns if c not in reversed_[table]]
    return dropped


def _assert_same_as_snapshot(schema: str, layout: Layout, what: str) -> None:
    """The tables' rows, over the given columns, are those of the snapshot."""
    expected = _contents(SNAPSHOT_SCHEMA, layout)
    actual = _contents(schema, layout)
    changed = sorted(t for t in layout if actual.get(t) != expected.get(t))
    if not changed:
        return
    lines = [f"{what} changed the data of {', '.join(changed)}"]
    for table in changed[:3]:
        lines.append(f"  {table}: {expected[table][0]} rows before, {actual.get(table, (0,))[0]} now")
        was, now = _rows(SNAPSHOT_SCHEMA, table, layout[table]), _rows(schema, table, layout[table])
        lines += _rows_diff(was - now, now - was)
    raise AssertionError("\n".join(lines))


def _rows_diff(gone: set[str], new: set[str], limit: int = 3) -> list[str]:
    """Rows that changed (same id) as the values that changed; other rows whole."""
    gone_rows, new_rows = [json.loads(r) for r in gone], [json.loads(r) for r in new]
    by_id = {row.get("id"): row for row in new_rows if row.get("id") is not None}
    lines = []
    for row in gone_rows:
        other = by_id.pop(row.get("id"), None) if row.get("id") is not None else None
        if other is not None:
            lines.append(f"    id {row['id']}: " + ", ".join(
                f"{key} {row[key]!r} -> {other.get(key)!r}" for key in row if row[key] != other.get(key)))
        else:
            lines.append(f"    - {json.dumps(row)[:300]}")
    lines += [f"    + {json.dumps(row)[:300]}" for row in by_id.values()]
    lines += [f"    + {json.dumps(row)[:300]}" for row in new_rows if row.get("id") is None]
    return lines[:limit * 2]


def _nodes(executor: MigrationExecutor, label: str) -> list[tuple[str, str]]:
    """The app's migrations in dependency order."""
    graph = executor.loader.graph
    leaf = graph.leaf_nodes(label)
    return [node for node in graph.forwards_plan(leaf[0]) if node[0] == label] if leaf else []


def _walk(schema: str, labels: list[str], *, restore: bool) -> dict[str, list[str]]:
    """Reverse and re-apply every migration after the initial one of each app, latest first, on the schema the
    connection is in, checking the kept data after each way. With `restore`, what a rollback dropped is put back
    after each step (the schema ends exactly as it was); without, no table may lose a row. Returns what happened,
    per app."""
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    assert not executor.migration_plan(leaves), f"{schema} is not fully migrated before the walk"
    report: dict[str, list[str]] = {}
    pending_restore: tuple[Layout, dict] | None = None
    try:
        for label in labels:
            nodes = _nodes(executor, label)
            report[label] = []
            for node in reversed(nodes[1:]):  # never the initial migration: reversing it drops the app's tables
                parent = nodes[nodes.index(node) - 1]
                executor = MigrationExecutor(connection)
                initials = sorted(f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan([parent]) if m.initial)
                if initials:
                    report[label].append(f"{node[1]}: not walked (reversing it unapplies {', '.join(initials)})")
                    continue
                before = _layout(schema)
                sequences = _sequences(schema)
                _snapshot_take(schema, before)
                pending_restore = (before, sequences) if restore else None
                try:
                    executor.migrate([parent])
                except IrreversibleError:
                    report[label].append(f"{node[1]}: irreversible (declared)")
                    MigrationExecutor(connection).migrate(leaves)
                    if restore:
                        _snapshot_restore(schema, before, sequences)
                        pending_restore = None
                    break
                reversed_ = _layout(schema)
                kept = _kept(before, reversed_)
                _assert_same_as_snapshot(schema, kept, f"reversing {label}.{node[1]}")
                MigrationExecutor(connection).migrate(leaves)  # forward again, over the existing rows
                _assert_same_as_snapshot(schema, kept, f"re-applying {label}.{node[1]}")
                dropped = _dropped(before, reversed_)
                assert _columns(_layout(schema)) == _columns(before), f"re-applying {label}.{node[1]} left other " \
                    "tables or columns"
                if restore:
                    _snapshot_restore(schema, before, sequences)
                    pending_restore = None
                    _assert_same_as_snapshot(schema, before, f"restoring after {label}.{node[1]}")
                    assert _sequences(schema) == sequences
                else:
                    counts = {t: n for t, (n, _) in _contents(SNAPSHOT_SCHEMA, before).items()}
                    now = {t: n for t, (n, _) in _contents(schema, before).items()}
                    assert now == counts, f"reversing and re-applying {label}.{node[1]} lost rows: " + str(
                        {t: (counts[t], now.get(t)) for t in counts if counts[t] != now.get(t)})
                report[label].append(f"{node[1]}: reversed and re-applied"
                                     + (f"; the rollback drops {', '.join(dropped)}" if dropped else ""))
    finally:
        # Whatever failed, leave the schema migrated (and, for the public schema, with its rows).
        executor = MigrationExecutor(connection)
        if executor.migration_plan(leaves):
            executor.migrate(leaves)
        if pending_restore is not None:
            _snapshot_restore(schema, *pending_restore)
        _snapshot_drop()
    final = MigrationExecutor(connection)
    assert not final.migration_plan(leaves), f"{schema} is not fully migrated at the end"
    return report


def _populate_workspace(workspace, owner) -> None:
    from chat import services as chat_services
    from chat.models import AssistantSettings, Channel
    from documents.models import Chunk, Document
    from embeds.services import embed_create

    for number in range(3):
        document = Document.objects.create(
            title=f"Guide {number}", original_name=f"guide-{number}.md", content_type="text/markdown",
            size_bytes=100, sha256=f"{number:064d}", status="ready", chunk_count=2,
        )
        for ordinal in range(2):
            Chunk.objects.create(document=document, ordinal=ordinal, text=f"Chunk {ordinal} of guide {number}.")
    conversation = chat_services.conversation_start(channel=Channel.API, title="Where is my order?")
    for text in ("Where is my order?", "It was placed yesterday."):
        chat_services.customer_message_post(conversation=conversation, text=text)
    AssistantSettings.objects.get_or_create(defaults={"name": "Helper"})
    embed_create(name="site", allowed_origins=["https://shop.example"], created_by=owner)


@pytest.fixture(scope="module")
def populated(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Migrations Co")
        with tenant_context(ws.workspace):
            _populate_workspace(ws.workspace, ws.owner)
        return ws


def test_every_workspace_migration_reverses_and_reapplies_keeping_the_data(populated, django_db_blocker):
    with django_db_blocker.unblock(), tenant_context(populated.workspace):
        schema = populated.workspace.schema_name
        counts = {t: n for t, (n, _) in _contents(schema, _layout(schema)).items()}
        assert counts.get("documents_chunk") == 6 and counts.get("chat_message") == 2, counts
        recorded_before = set(MigrationExecutor(connection).recorder.applied_migrations())
        report = _walk(schema, _app_labels(settings.TENANT_APPS, exclude=frozenset({"contenttypes"})), restore=False)
        assert set(MigrationExecutor(connection).recorder.applied_migrations()) == recorded_before
    walked = [line for lines in report.values() for line in lines]
    assert any("reversed and re-applied" in line for line in walked), report
    print("workspace migrations:", report)


@pytest.fixture
def shared_rows(django_db_blocker):
    """Rows in every shared table a migration after the initial one touches, including values that differ from the
    defaults the migrations would write: a plan edited by staff, a retention period, a manual credit grant."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    from accounts.services import api_key_create
    from tenants.billing import credits_grant, plan_change
    from tenants.models import Plan, Workspace
    from tenants.services import workspace_retention_set
    from tests.factories import member

    with django_db_blocker.unblock(), override_settings(WORKSPACE_POOL_REFILL="off"):
        edited = Plan.objects.get(code="starter")
        original_name = edited.name
        Plan.objects.filter(pk=edited.pk).update(name="Starter (edited by staff)")
        try:
            ws = workspace_with_owner(name="Migrations Shared Co")
            member(ws.workspace, "agent")
            api_key_create(workspace=ws.workspace, name="integration", created_by=ws.owner)
            credits_grant(workspace=ws.workspace, amount=25, reason="goodwill", actor_label="support")
            workspace_retention_set(workspace=ws.workspace, days=30)
            plan_change(workspace=Workspace.objects.get(pk=ws.workspace.pk), code="pro", actor=ws.owner)
            LogEntry.objects.create(
                user=ws.owner, content_type=ContentType.objects.get_for_model(Plan), object_id=str(edited.pk),
                object_repr=str(edited), action_flag=CHANGE, change_message="Renamed.",
            )
            yield ws
        finally:
            Plan.objects.filter(pk=edited.pk).update(name=original_name)


def _other_connections() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT concat_ws(' ', application_name, backend_type, state, left(query, 200)) "
                       "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return [row[0] for row in cursor.fetchall()]


def test_every_shared_migration_reverses_and_reapplies_keeping_the_data(shared_rows, django_db_blocker):
    from tenants.models import LedgerEntry, Subscription

    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        # The public schema is the session's: no server, worker or pool refill thread may be using it while tables
        # come and go. A refill started by an earlier signup ends by itself; servers and workers don't.
        deadline = time.monotonic() + 120
        while _other_connections() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _other_connections(), f"run this first (tests/conftest.py _RUN_FIRST): {_other_connections()}"
        assert Subscription.objects.filter(workspace=shared_rows.workspace).exists()
        assert LedgerEntry.objects.filter(workspace=shared_rows.workspace).count() >= 3  # grant, adjustment, upgrade
        layout = _layout("public")
        contents, sequences = _contents("public", layout), _sequences("public")
        recorded_before = set(MigrationExecutor(connection).recorder.applied_migrations())
        report = _walk("public", _app_labels(settings.SHARED_APPS), restore=True)
        assert set(MigrationExecutor(connection).recorder.applied_migrations()) == recorded_before
        # Exactly as found: every table, column, row and sequence.
        assert _columns(_layout("public")) == _columns(layout)
        assert _contents("public", layout) == contents
        assert _sequences("public") == sequences
    print("shared migrations:", report)
    for label in ("tenants", "accounts"):  # our own shared apps: every migration after the initial one is walked
        assert all("reversed and re-applied" in line or "irreversible" in line for line in report[label]), report
    assert len(report["tenants"]) >= 3, report
