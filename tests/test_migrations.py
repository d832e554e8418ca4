"""Migration safety on a workspace that holds data.

For every workspace app, each migration after the initial one is reversed (with whatever depends on it) and applied
again on a workspace cloned from the template and filled with documents, chunks, conversations, messages, a widget
and assistant settings. Rows survive both ways (same count and the same primary keys in every table that exists
before and after), constraints are re-created on existing rows without error, and the schema ends where a fresh
workspace starts (the same recorded migrations). A migration that declares itself irreversible is reported as such
and stops the walk back for its app (nothing before it can be reached).
"""
from __future__ import annotations

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor
from django_tenants.utils import tenant_context

from tests.factories import workspace_with_owner


def _workspace_apps() -> list[str]:
    labels = []
    for name in settings.TENANT_APPS:
        config = next((c for c in apps.get_app_configs() if c.name == name), None)
        if config is not None and config.label not in {"contenttypes"}:
            labels.append(config.label)
    return labels


def _table_fingerprints(schema: str) -> dict[str, tuple[int, int]]:
    """(row count, sum of ids) of every table of the schema that has an integer `id` column."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = %s AND c.column_name = 'id' AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('integer', 'bigint') AND c.table_name <> 'django_migrations'", [schema],
        )
        tables = [row[0] for row in cursor.fetchall()]
        result = {}
        for table in tables:
            cursor.execute(f'SELECT count(*), coalesce(sum(id), 0) FROM "{schema}"."{table}"')
            count, total = cursor.fetchone()
            result[table] = (count, int(total))
    return result


def _populate(workspace, owner) -> None:
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
            _populate(ws.workspace, ws.owner)
        return ws


def _nodes(executor: MigrationExecutor, label: str) -> list[tuple[str, str]]:
    """The app's migrations in dependency order."""
    graph = executor.loader.graph
    leaf = graph.leaf_nodes(label)
    return [node for node in graph.forwards_plan(leaf[0]) if node[0] == label] if leaf else []


def test_every_workspace_migration_reverses_and_reapplies_keeping_the_data(populated, django_db_blocker):
    report: dict[str, list[str]] = {}
    with django_db_blocker.unblock(), tenant_context(populated.workspace):
        schema = populated.workspace.schema_name
        before = _table_fingerprints(schema)
        assert before.get("documents_chunk", (0, 0))[0] == 6 and before.get("chat_message", (0, 0))[0] == 2
        executor = MigrationExecutor(connection)
        leaves = executor.loader.graph.leaf_nodes()
        recorded_before = set(executor.recorder.applied_migrations())
        for label in _workspace_apps():
            nodes = _nodes(executor, label)
            report[label] = []
            for node in reversed(nodes[1:]):  # never the initial migration: reversing it drops the app's tables
                parent = nodes[nodes.index(node) - 1]
                try:
                    executor = MigrationExecutor(connection)
                    executor.migrate([parent])
                except IrreversibleError:
                    report[label].append(f"{node[1]}: irreversible (declared)")
                    executor = MigrationExecutor(connection)
                    executor.migrate(leaves)
                    break
                during = _table_fingerprints(schema)
                for table, fingerprint in during.items():
                    if table in before:
                        assert fingerprint == before[table], f"reversing {node} changed rows of {table}"
                executor = MigrationExecutor(connection)
                executor.migrate(leaves)  # forward again, over the existing rows
                after = _table_fingerprints(schema)
                assert after == before, f"re-applying {node} changed rows: " + str(
                    {t: (before.get(t), after.get(t)) for t in set(before) | set(after) if before.get(t) != after.get(t)})
                report[label].append(f"{node[1]}: reversed and re-applied")
        final = MigrationExecutor(connection)
        assert not final.migration_plan(leaves), "the workspace is not fully migrated at the end"
        assert set(final.recorder.applied_migrations()) == recorded_before
    walked = [line for lines in report.values() for line in lines]
    assert any("reversed and re-applied" in line for line in walked), report


def test_a_fresh_workspace_and_the_template_record_every_migration(populated, django_db_blocker):
    """A cloned workspace starts exactly where migrating one would leave it: nothing left to apply."""
    from tenants.provisioning import TEMPLATE_SCHEMA

    with django_db_blocker.unblock():
        with tenant_context(populated.workspace):
            executor = MigrationExecutor(connection)
            assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
        connection.set_schema(TEMPLATE_SCHEMA)
        try:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        finally:
            connection.set_schema_to_public()
        assert pending == [], [str(migration) for migration, _ in pending]
