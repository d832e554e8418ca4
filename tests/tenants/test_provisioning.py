"""A provisioned schema (pool or template script) must equal one built by running the migrations."""
from __future__ import annotations

import pytest
from django.db import connection

from tenants import provisioning
from tenants.models import PooledSchema, Workspace
from tests.factories import unique_slug, workspace_with_owner

CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
               a.attgenerated, regexp_replace(coalesce(pg_get_expr(d.adbin, d.adrelid), ''), %(schema_re)s, '', 'g')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "relations": """
        SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "indexes": """
        SELECT ic.relname, regexp_replace(pg_get_indexdef(i.indexrelid), %(schema_re)s, '', 'g')
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, regexp_replace(pg_get_constraintdef(k.oid), %(schema_re)s, '', 'g'),
               k.condeferrable, k.condeferred
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "sequences": """
        SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "functions": """
        SELECT p.proname, p.prokind, p.prorettype::regtype::text, p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "triggers": """
        SELECT c.relname, t.tgname, regexp_replace(pg_get_triggerdef(t.oid), %(schema_re)s, '', 'g')
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND NOT t.tgisinternal ORDER BY 1, 2""",
    "migrations": "SELECT app, name FROM {schema}.django_migrations ORDER BY 1, 2",
}


def catalog(schema: str) -> dict[str, list[tuple]]:
    result = {}
    with connection.cursor() as cursor:
        for name, sql in CATALOG_QUERIES.items():
            if "{schema}" in sql:
                cursor.execute(sql.format(schema=connection.ops.quote_name(schema)))
            else:
                cursor.execute(sql, {"schema": schema, "schema_re": rf"\m{schema}\."})
            result[name] = cursor.fetchall()
    return result


@pytest.fixture(scope="module")
def migrated_schema(django_db_blocker):
    name = "ws__migrated_reference"
    with django_db_blocker.unblock():
        provisioning.schema_drop(name)
        provisioning.schema_migrate(name)
    yield name
    with django_db_blocker.unblock():
        provisioning.schema_drop(name)


def test_template_script_schema_equals_migrated_schema(migrated_schema):
    template = provisioning.template_current()
    name = "ws__scripted_" + unique_slug("x").replace("-", "_")
    provisioning.schema_create_from_sql(name, template)
    try:
        expected, actual = catalog(migrated_schema), catalog(name)
        assert expected["relations"], "the migrated schema has no tables: the comparison would prove nothing"
        for part in CATALOG_QUERIES:
            assert actual[part] == expected[part], part
    finally:
        provisioning.schema_drop(name)


def test_pooled_schema_taken_by_signup_equals_migrated_schema(migrated_schema):
    provisioning.pool_refill(2)
    assert PooledSchema.objects.exists()
    created = workspace_with_owner()
    assert created.workspace.schema_name.startswith("ws_")
    expected, actual = catalog(migrated_schema), catalog(created.workspace.schema_name)
    for part in CATALOG_QUERIES:
        assert actual[part] == expected[part], part


def test_signup_takes_from_pool_and_falls_back_to_template():
    from django.test import override_settings

    from tenants.services import workspace_create

    with override_settings(WORKSPACE_POOL_REFILL="off"):
        # Refills started by earlier signups run in background threads and may restock the pool right after a
        # drain; drain until a signup really finds it dry (they stop once the pool is full).
        for _attempt in range(20):
            provisioning.pool_drain()
            from_template = workspace_create(slug=unique_slug(), name="Dry pool")
            if from_template.method == "template":
                break
        assert from_template.method == "template"
        provisioning.pool_refill(1)
        from_pool = workspace_create(slug=unique_slug(), name="Warm pool")
        assert from_pool.method == "pool"
    for result in (from_template, from_pool):
        assert provisioning.schema_exists(result.workspace.schema_name)


def test_failed_signup_leaves_no_schema_behind():
    """A workspace_create that fails after the schema was made rolls the schema back with it."""
    from django.db import transaction

    from tenants.services import workspace_create

    slug = unique_slug()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction.atomic():
            workspace_create(slug=slug, name="Doomed")
            raise Boom
    assert not Workspace.objects.filter(slug=slug).exists()
    assert not provisioning.schema_exists(f"ws_{slug.replace('-', '_')}")


def test_stale_pool_schemas_are_replaced_when_migrations_change():
    provisioning.pool_refill(1)
    stale = PooledSchema.objects.first()
    PooledSchema.objects.filter(pk=stale.pk).update(fingerprint="0" * 64)
    provisioning.pool_refill(1)
    assert not PooledSchema.objects.filter(fingerprint="0" * 64).exists()
    assert not provisioning.schema_exists(stale.schema_name)
