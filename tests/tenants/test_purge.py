"""`delete_workspace` on a workspace full of data leaves nothing of it anywhere, and nothing of its neighbour goes.

The workspace is filled through the services (tests/full_workspace.py: documents indexed with vectors and a stored
file, a widget conversation with answers, analytics events, embeds, members, keys, invitations, audit rows, a
ready export) plus cache entries and the chat's Redis event log. Every place is first checked to hold something
(so no check below can pass vacuously), then the real command runs as the operator would, and PostgreSQL (schema
and shared rows), Chroma, media files and Redis keys are checked empty of it.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.models import User
from documents.vectors import _store, vector_collection_name, vectors_count
from tests.factories import workspace_with_owner
from tests.full_workspace import fingerprint_diff, workspace_fill, workspace_fingerprint
from tests.tenants.test_commands import manage


def _redis_keys(schema: str) -> list[bytes]:
    """Every key of the test Redis db (cache, channel layer, chat event log, broker) that names the schema."""
    client = cache._cache.get_client(write=True)
    return sorted(client.scan_iter(match=f"*{schema}*", count=1000))


def _shared_rows(workspace_id: int) -> dict[str, int]:
    """Rows of the shared (public) tables that belong to the workspace."""
    counts: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
                       "AND column_name = 'workspace_id' ORDER BY 1")
        tables = [row[0] for row in cursor.fetchall()]
        for table, column in [*((t, "workspace_id") for t in tables), ("tenants_workspace", "id"),
                              ("tenants_domain", "tenant_id")]:
            cursor.execute(f'SELECT count(*) FROM public."{table}" WHERE "{column}" = %s', [workspace_id])
            counts[table] = cursor.fetchone()[0]
    return counts


def _schema_exists(schema: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [schema])
        return cursor.fetchone() is not None


def _collection_exists(schema: str) -> bool:
    with _store.collection(vector_collection_name(schema)) as (_client, collection):
        return collection is not None


def test_delete_workspace_full_of_data_leaves_nothing_and_spares_the_neighbour():
    doomed = workspace_with_owner(name=f"Doomed {secrets.token_hex(3)}")
    neighbour = workspace_with_owner(name=f"Neighbour {secrets.token_hex(3)}")
    workspace_fill(workspace=doomed.workspace, owner=doomed.owner)
    workspace_fill(workspace=neighbour.workspace, owner=neighbour.owner)
    for ws in (doomed, neighbour):
        with tenant_context(ws.workspace):
            cache.set("purge-probe", ws.workspace.slug)
    schema, pk = doomed.workspace.schema_name, doomed.workspace.pk
    member_ids = list(doomed.workspace.memberships.values_list("user_id", flat=True))

    # Everything that must go is there first.
    shared = _shared_rows(pk)
    for table in ("accounts_membership", "accounts_apikey", "accounts_invitation", "accounts_auditentry",
                  "tenants_workspaceexport", "tenants_workspace", "tenants_domain"):
        assert shared[table] > 0, table
    before = workspace_fingerprint(doomed.workspace)
    for table in ("documents_document", "documents_chunk", "documents_curatedanswer", "chat_conversation",
                  "chat_message", "analytics_event", "embeds_embed"):
        assert before[f"{schema}.{table}"][0] > 0, table
    assert _schema_exists(schema) and _collection_exists(schema) and vectors_count(schema_name=schema) > 0
    media = Path(settings.MEDIA_ROOT) / "workspaces" / schema
    assert (media / "documents").is_dir() and (media / "exports").is_dir(), sorted(media.rglob("*"))
    keys = _redis_keys(schema)
    assert any(b":chat:" in key for key in keys), keys  # the conversation's event log
    assert any(key.endswith(b":purge-probe") for key in keys), keys
    neighbour_before = workspace_fingerprint(neighbour.workspace)
    neighbour_keys = _redis_keys(neighbour.workspace.schema_name)
    assert neighbour_keys

    deleted = json.loads(manage("delete_workspace", "--slug", doomed.workspace.slug, "--yes", "--json").stdout)
    assert deleted["deleted"] == doomed.workspace.slug

    assert not _schema_exists(schema)
    assert {table: count for table, count in _shared_rows(pk).items() if count} == {}
    assert not _collection_exists(schema)
    assert not (Path(settings.CHROMA_PATH) / "generations" / vector_collection_name(schema)).exists()
    assert not media.exists()
    assert _redis_keys(schema) == []
    assert User.objects.filter(pk__in=member_ids).count() == len(member_ids)  # people outlive workspaces

    changed = fingerprint_diff(neighbour_before, workspace_fingerprint(neighbour.workspace))
    assert changed == [], "the neighbour lost data:\n" + "\n".join(changed)
    assert _redis_keys(neighbour.workspace.schema_name) == neighbour_keys
    with tenant_context(neighbour.workspace):
        assert cache.get("purge-probe") == neighbour.workspace.slug
