"""Our migrate_schemas: the fast existence check answers as Django's does, a new migration reaches every workspace
(keeping its data), and afterwards the provisioning template and the warm pool are migrated too.

The new migration lives in a temporary copy of the documents app's migrations (MIGRATION_MODULES), and is rolled
back by the same command at the end of the module.
"""
from __future__ import annotations

import io
import json
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command, get_commands
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.test import override_settings
from django_tenants.utils import tenant_context

from documents.services import document_create_text
from tenants import provisioning
from tenants.migrations_fast import (
    SchemaMigrationFailed,
    fast_migration_recorder,
    migration_table_exists,
    schemas_behind,
    schemas_migrate,
    workspace_schema_names,
)
from tenants.models import PooledSchema, SchemaTemplate
from tests.factories import WorkspaceWithOwner, workspace_with_owner

PROBE_APP = "documents"
PROBE_COLUMN = "probe_note"

PROBE_MIGRATION = '''
from django.db import migrations, models
from django.db.models import F


def copy_titles(apps, schema_editor):
    Document = apps.get_model("documents", "Document")
    Document.objects.using(schema_editor.connection.alias).update(probe_note=F("title"))


class Migration(migrations.Migration):
    dependencies = [("documents", "{previous}")]
    operations = [
        migrations.AddField("document", "probe_note", models.TextField(null=True)),
        migrations.RunPython(copy_titles, migrations.RunPython.noop),
    ]
'''


def run_command(*args: str, **options: object) -> str:
    out = io.StringIO()
    call_command("migrate_schemas", *args, stdout=out, **options)
    return out.getvalue()


def column_exists(schema: str, table: str, column: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND column_name = %s",
            [schema, table, column],
        )
        return cursor.fetchone() is not None


def documents_of(schema: str, *, with_probe: bool = False) -> list[tuple]:
    columns = "id, title, sha256" + (f", {PROBE_COLUMN}" if with_probe else "")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {connection.ops.quote_name(schema)}.documents_document ORDER BY id")
        return cursor.fetchall()


# --- the existence check ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_schemas(django_db_blocker) -> Iterator[dict[str, str]]:
    """A schema without django_migrations (but with another table) and one where the name is taken by a view."""
    names = {"empty": "ws__probe_no_table", "view": "ws__probe_view"}
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                cursor.execute(f"CREATE SCHEMA {name}")
            cursor.execute(f"CREATE TABLE {names['empty']}.something_else (id int)")
            cursor.execute(f"CREATE VIEW {names['view']}.django_migrations AS SELECT 1 AS id")
    yield names
    with django_db_blocker.unblock():
        for name in names.values():
            provisioning.schema_drop(name)


def django_answer() -> bool:
    """What Django's own MigrationRecorder.has_table() decides from: every table name visible to introspection."""
    with connection.cursor() as cursor:
        return MigrationRecorder.Migration._meta.db_table in connection.introspection.table_names(cursor)


@pytest.mark.parametrize("include_public", [True, False])
def test_fast_existence_check_answers_as_djangos(tenant, odd_schemas, include_public):
    cases = {
        tenant.workspace.schema_name: True,
        "public": True,
        odd_schemas["empty"]: False,  # public.django_migrations is on the search_path, but is not this schema's
        odd_schemas["view"]: False,  # Django lists tables only, not views
    }
    original_has_table = MigrationRecorder.has_table
    for schema, expected in cases.items():
        connection.set_schema(schema, include_public=include_public)
        assert django_answer() is expected, schema
        assert migration_table_exists(connection) is expected, schema
        assert MigrationRecorder(connection).has_table() is expected, schema
        with fast_migration_recorder():
            assert MigrationRecorder.has_table is not original_has_table
            assert MigrationRecorder(connection).has_table() is expected, schema
        connection.set_schema_to_public()
    assert MigrationRecorder.has_table is original_has_table


def test_schemas_behind_finds_schemas_missing_migrations(tenant, odd_schemas):
    current = tenant.workspace.schema_name
    assert schemas_behind([current, odd_schemas["empty"], "ws__no_such_schema"]) == [
        odd_schemas["empty"],
        "ws__no_such_schema",
    ]


def test_a_failing_schema_stops_the_run_and_is_named(tenant):
    for processes in (1, 2):
        with pytest.raises(SchemaMigrationFailed) as failure:
            schemas_migrate([tenant.workspace.schema_name, "ws__no_such_schema"], processes=processes)
        assert failure.value.schema_name == "ws__no_such_schema"


def test_plain_migrate_is_our_migrate_schemas():
    assert get_commands()["migrate"] == "tenants"
    assert get_commands()["migrate_schemas"] == "tenants"


# --- a new migration over existing workspaces --------------------------------------------------------------------


@dataclass
class ProbeRun:
    workspaces: list[WorkspaceWithOwner]
    documents_before: dict[str, list[tuple]]
    summary: dict
    migration: tuple[str, str]
    previous: str


def probe_migrations_module(root: Path) -> tuple[str, str]:
    """A copy of the documents migrations plus one new migration; returns (module path, previous leaf)."""
    package = f"ccg_probe_{secrets.token_hex(4)}"
    target = root / package
    source = Path(__import__(PROBE_APP).__file__).parent / "migrations"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    loader = MigrationLoader(None, ignore_no_migrations=True)
    (previous,) = [name for app, name in loader.graph.leaf_nodes() if app == PROBE_APP]
    (target / "9001_probe_note.py").write_text(PROBE_MIGRATION.format(previous=previous))
    return package, previous


@pytest.fixture(scope="module")
def probe_run(django_db_blocker) -> Iterator[ProbeRun]:
    root = Path(tempfile.mkdtemp(prefix="ccg-probe-"))
    with django_db_blocker.unblock():
        # No refill threads racing the command below: the test refills the pool itself.
        with override_settings(WORKSPACE_POOL_REFILL="off"):
            workspaces = [workspace_with_owner(name=f"Migrated {n}") for n in range(3)]
        before = {}
        for n, created in enumerate(workspaces):
            with tenant_context(created.workspace):
                for m in range(2):
                    document_create_text(title=f"Doc {n}.{m}", text=f"Body {n}.{m} {secrets.token_hex(8)}")
            before[created.workspace.schema_name] = documents_of(created.workspace.schema_name)
        provisioning.pool_refill()
        package, previous = probe_migrations_module(root)
        sys.path.insert(0, str(root))
        try:
            with override_settings(MIGRATION_MODULES={PROBE_APP: package}, WORKSPACE_POOL_REFILL="off"):
                summary = json.loads(run_command("--json", parallel=2))
                yield ProbeRun(workspaces, before, summary, (PROBE_APP, "9001_probe_note"), previous)
                # Roll the probe back everywhere with the same command (Django's migrate path: a target is given),
                # in the template too, whose pool schemas are rebuilt below.
                run_command(PROBE_APP, previous, interactive=False, verbosity=0)
                run_command(PROBE_APP, previous, interactive=False, verbosity=0,
                            schema_name=provisioning.TEMPLATE_SCHEMA)
                provisioning.pool_drain()
        finally:
            sys.path.remove(str(root))
            for name in [name for name in sys.modules if name.startswith(package)]:
                del sys.modules[name]
            shutil.rmtree(root, ignore_errors=True)
        provisioning.schema_migrations.cache_clear()
        provisioning.template_current()
        provisioning.pool_refill()
        assert not any(column_exists(s, "documents_document", PROBE_COLUMN) for s in workspace_schema_names())


def test_new_migration_reaches_every_workspace_and_keeps_its_data(probe_run):
    assert probe_run.summary["executor"] == "fast"
    everyone = workspace_schema_names()
    assert probe_run.summary["migrated"] + probe_run.summary["caught_up"] == len(everyone)
    assert probe_run.summary["migrations_applied"] >= len(everyone)
    for schema in everyone:
        assert probe_run.migration in provisioning.recorded_migrations(schema), schema
        assert column_exists(schema, "documents_document", PROBE_COLUMN), schema
    for schema, rows in probe_run.documents_before.items():
        assert len(rows) == 2
        after = documents_of(schema, with_probe=True)
        assert [row[:3] for row in after] == rows  # nothing lost, nothing changed
        assert [row[3] for row in after] == [row[1] for row in rows]  # the migration's RunPython saw the data


def test_template_and_pool_are_current_after_migrate_schemas(probe_run):
    fingerprint = provisioning.migration_fingerprint()
    assert probe_run.summary["template"] == fingerprint
    template = SchemaTemplate.objects.get()
    assert template.fingerprint == fingerprint
    assert list(probe_run.migration) in template.migrations
    assert PROBE_COLUMN in template.sql
    pool = list(PooledSchema.objects.all())
    assert len(pool) == settings.WORKSPACE_POOL_SIZE
    for pooled in pool:
        assert pooled.fingerprint == fingerprint
        assert column_exists(pooled.schema_name, "documents_document", PROBE_COLUMN)
        assert probe_run.migration in provisioning.recorded_migrations(pooled.schema_name)


def test_signup_after_migrate_schemas_gets_the_new_migration(probe_run):
    with override_settings(WORKSPACE_POOL_REFILL="off"):
        created = workspace_with_owner(name="After the migration")
    schema = created.workspace.schema_name
    assert column_exists(schema, "documents_document", PROBE_COLUMN)
    assert probe_run.migration in provisioning.recorded_migrations(schema)
    assert schemas_behind([schema]) == []


def test_second_run_skips_current_schemas(probe_run):
    summary = json.loads(run_command("--json"))
    assert summary["migrated"] == 0 and summary["already_current"] == summary["schemas"] == len(workspace_schema_names())
    forced = json.loads(run_command("--json", "--all-schemas", "--no-template-refresh"))
    assert forced["migrated"] == forced["schemas"] and forced["migrations_applied"] == 0
    assert "template" not in forced
