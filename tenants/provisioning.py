"""Fast workspace schemas.

`migrate_schemas` stays the source of truth: a template schema is migrated like any workspace, and its DDL is
rendered once per migration state (the *fingerprint*) into a SQL script. A new workspace schema is either taken from
a warm pool of schemas already built from that script (one `ALTER SCHEMA ... RENAME`, ~ms) or, when the pool is
empty, built by running the script in one transaction. Pool schemas are built for one fingerprint; when migrations
change, stale pool schemas are dropped and the pool is refilled from the new template.

tests/tenants/test_provisioning.py proves that a provisioned schema has the same tables, columns, indexes,
constraints and recorded migrations as one built by running the migrations.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader

from tenants.models import PooledSchema, SchemaTemplate

logger = logging.getLogger(__name__)

# Slug-derived schema names are "ws_<slug with _ for ->" and never contain "__", so these can't collide with one.
TEMPLATE_SCHEMA = "ws__template"
POOL_SCHEMA_PREFIX = "ws__pool_"
_TEMPLATE_LOCK_ID = 7_310_001
_POOL_LOCK_ID = 7_310_002


def _tenant_app_labels() -> set[str]:
    from django.apps import apps

    return {apps.get_app_config(name.rsplit(".", 1)[-1]).label for name in settings.TENANT_APPS}


@lru_cache(maxsize=1)
def schema_migrations() -> tuple[tuple[str, str], ...]:
    """Every migration (app, name) that a migrated workspace schema records, read once per process from disk.

    django-tenants runs the whole migration plan in each schema and its router only skips the operations of shared
    apps, so a workspace schema records the shared apps' migrations too.
    """
    loader = MigrationLoader(None, ignore_no_migrations=True, load=True)
    return tuple(sorted(loader.graph.nodes))


def tenant_migrations() -> tuple[tuple[str, str], ...]:
    """The migrations of the tenant apps: the ones that build a workspace schema's tables."""
    labels = _tenant_app_labels()
    return tuple(key for key in schema_migrations() if key[0] in labels)


def migration_fingerprint() -> str:
    # Over every recorded migration, not only the tenant apps': a new shared-app migration is recorded in every
    # workspace by migrate_schemas, so a template rendered before it would provision schemas that lack its row.
    return hashlib.sha256(repr(schema_migrations()).encode()).hexdigest()


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def schema_exists(schema_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        return cursor.fetchone() is not None


def schema_drop(schema_name: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote(schema_name)} CASCADE")


def schema_migrate(schema_name: str, *, verbosity: int = 0) -> None:
    """Create (if needed) and migrate one schema the way migrate_schemas does."""
    from django_tenants.migration_executors.base import run_migrations

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema_name)}")
    from django.core.management.commands.migrate import Command as MigrateCommand

    options = vars(MigrateCommand().create_parser("manage.py", "migrate").parse_args([]))
    options.update(verbosity=verbosity, interactive=False, database="default", skip_checks=True)
    run_migrations(
        args=[],
        options=options,
        executor_codename="provisioning",
        schema_name=schema_name,
        allow_atomic=True,
    )
    connection.set_schema_to_public()


def recorded_migrations(schema_name: str) -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT app, name FROM {quote(schema_name)}.django_migrations")
        return {(app, name) for app, name in cursor.fetchall()}


# --- rendering the template's DDL ----------------------------------------------------------------------------------

_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid),
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND k.contype IN ('p', 'u', 'c', 'f', 'x')
ORDER BY CASE k.contype WHEN 'f' THEN 1 ELSE 0 END, c.relname, k.conname
"""

_INDEXES_SQL = """
SELECT pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
ORDER BY ic.relname
"""

_OTHER_OBJECTS_SQL = """
SELECT 'sequence ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relkind = 'S'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT 'view ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm')
UNION ALL
SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %(schema)s AND (p.prokind <> 'f' OR p.prorettype <> 'trigger'::regtype)
UNION ALL
SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = %(schema)s AND t.typtype IN ('e', 'd', 'c') AND t.typrelid = 0
"""


# Trigger functions and their triggers (documents' lexical index is kept by one): rendered after the tables. Other
# functions stay unsupported. pg_get_functiondef always qualifies the function's name; the pretty form of
# pg_get_triggerdef qualifies only what is not on the search_path.
_FUNCTIONS_SQL = """
SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.prokind = 'f' AND p.prorettype = 'trigger'::regtype
ORDER BY p.proname
"""

_TRIGGERS_SQL = """
SELECT pg_get_triggerdef(t.oid, true) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""


class UnsupportedSchemaObject(RuntimeError):
    """The template holds an object the renderer does not reproduce; provisioning falls back to migrations."""


def schema_render_ddl(schema_name: str) -> str:
    """Render the DDL of `schema_name` with names left unqualified, to be run under another search_path.

    The catalog functions qualify a name only when it is not visible on the search_path, so rendering with the
    search_path set to the template alone leaves the template's own objects bare and keeps `public.` on references
    to shared tables (e.g. the users table).
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL search_path TO {quote(schema_name)}")
        cursor.execute(_OTHER_OBJECTS_SQL, {"schema": schema_name})
        unsupported = [row[0] for row in cursor.fetchall()]
        if unsupported:
            raise UnsupportedSchemaObject(f"template schema holds objects the renderer can't copy: {unsupported}")
        cursor.execute(_COLUMNS_SQL, [schema_name])
        tables: dict[str, list[str]] = {}
        for table, column, coltype, notnull, identity, generated, default, collation in cursor.fetchall():
            parts = [quote(column), coltype]
            if collation:
                parts.append(f"COLLATE {quote(collation)}")
            if identity:
                parts.append("GENERATED ALWAYS AS IDENTITY" if identity == "a" else "GENERATED BY DEFAULT AS IDENTITY")
            elif generated == "s":
                parts.append(f"GENERATED ALWAYS AS ({default}) STORED")
            elif default is not None:
                parts.append(f"DEFAULT {default}")
            if notnull:
                parts.append("NOT NULL")
            tables.setdefault(table, []).append(" ".join(parts))
        statements = [
            f"CREATE TABLE {quote(table)} (\n    " + ",\n    ".join(columns) + "\n)" for table, columns in tables.items()
        ]
        cursor.execute(_CONSTRAINTS_SQL, [schema_name])
        statements += [
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {definition}"
            for table, name, _kind, definition in cursor.fetchall()
        ]
        cursor.execute(_INDEXES_SQL, [schema_name])
        # pg_get_indexdef always qualifies the indexed table; drop exactly that qualifier.
        table_qualifier = re.compile(r" ON (ONLY )?" + re.escape(quote_if_needed(schema_name)) + r"\.")
        statements += [table_qualifier.sub(lambda m: f" ON {m.group(1) or ''}", row[0], count=1) for row in cursor.fetchall()]
        cursor.execute(_FUNCTIONS_SQL, [schema_name])
        for name, definition in cursor.fetchall():
            qualified = f"FUNCTION {quote_if_needed(schema_name)}.{quote_if_needed(name)}("
            if qualified not in definition:
                raise UnsupportedSchemaObject(f"can't render function {name} of the template")
            statements.append(definition.replace(qualified, f"FUNCTION {quote_if_needed(name)}(", 1).strip())
        cursor.execute(_TRIGGERS_SQL, [schema_name])
        statements += [row[0] for row in cursor.fetchall()]
    sql = ";\n".join(statements) + ";\n"
    if re.search(r"\b" + re.escape(schema_name) + r"\b", sql):
        raise UnsupportedSchemaObject(f"rendered DDL still names {schema_name}; refusing to use it")
    return sql


def quote_if_needed(name: str) -> str:
    """How PostgreSQL prints an identifier: bare when it is a plain lowercase name."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def schema_create_from_sql(schema_name: str, template: SchemaTemplate) -> None:
    """Build a schema from a rendered template in one transaction: all of it exists, or none of it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {quote(schema_name)}")
        cursor.execute(f"SET LOCAL search_path TO {quote(schema_name)}")
        cursor.execute(template.sql)
        rows = [(app, name) for app, name in template.migrations]
        if rows:
            values = ", ".join(["(%s, %s, now())"] * len(rows))
            cursor.execute(
                f"INSERT INTO {quote(schema_name)}.django_migrations (app, name, applied) VALUES {values}",
                [item for row in rows for item in row],
            )
    # The SET LOCAL ended with the transaction; make django-tenants set the search_path again on the next cursor.
    connection.search_path_set_schemas = None


def _advisory_lock(lock_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])


def template_current() -> SchemaTemplate:
    """The rendered template for the migrations on disk, migrating and rendering it first if needed."""
    fingerprint = migration_fingerprint()
    template = SchemaTemplate.objects.filter(fingerprint=fingerprint).first()
    if template is not None:
        return template
    return template_refresh()


def template_refresh() -> SchemaTemplate:
    fingerprint = migration_fingerprint()
    with transaction.atomic():
        _advisory_lock(_TEMPLATE_LOCK_ID)
        existing = SchemaTemplate.objects.filter(fingerprint=fingerprint).first()
        if existing is not None:
            return existing
    # Migrations manage their own transactions; the render happens after they commit.
    schema_migrate(TEMPLATE_SCHEMA)
    applied = recorded_migrations(TEMPLATE_SCHEMA)
    missing = set(tenant_migrations()) - applied
    if missing:
        raise RuntimeError(f"template schema is missing migrations after migrating: {sorted(missing)}")
    sql = schema_render_ddl(TEMPLATE_SCHEMA)
    with transaction.atomic():
        _advisory_lock(_TEMPLATE_LOCK_ID)
        template, _ = SchemaTemplate.objects.get_or_create(
            fingerprint=fingerprint, defaults={"sql": sql, "migrations": sorted(map(list, applied))}
        )
        SchemaTemplate.objects.exclude(fingerprint=fingerprint).delete()
    logger.info("schema template rendered", extra={"fingerprint": fingerprint[:12]})
    return template


def pool_take(template: SchemaTemplate) -> str | None:
    """Take one warm schema for this template (inside the caller's transaction), or None if the pool is dry."""
    pooled = (
        PooledSchema.objects.select_for_update(skip_locked=True)
        .filter(fingerprint=template.fingerprint)
        .order_by("created_at")
        .first()
    )
    if pooled is None:
        return None
    name = pooled.schema_name
    pooled.delete()
    return name


def pool_refill(target: int | None = None) -> int:
    """Drop pool schemas of old templates and build new ones up to `target`. Returns how many were built."""
    target = settings.WORKSPACE_POOL_SIZE if target is None else target
    template = template_current()
    for stale in PooledSchema.objects.exclude(fingerprint=template.fingerprint):
        with transaction.atomic():
            schema_drop(stale.schema_name)
            stale.delete()
    built = 0
    while True:
        with transaction.atomic():
            _advisory_lock(_POOL_LOCK_ID)
            if PooledSchema.objects.filter(fingerprint=template.fingerprint).count() >= target:
                return built
            name = POOL_SCHEMA_PREFIX + secrets.token_hex(6)
            schema_create_from_sql(name, template)
            PooledSchema.objects.create(schema_name=name, fingerprint=template.fingerprint)
            built += 1


def pool_drain() -> int:
    """Drop every pool schema (used before a schema change is applied and by tests)."""
    dropped = 0
    for pooled in PooledSchema.objects.all():
        with transaction.atomic():
            schema_drop(pooled.schema_name)
            pooled.delete()
            dropped += 1
    return dropped


def schema_provision(schema_name: str) -> str:
    """Create the schema of a new workspace inside the caller's transaction. Returns how: 'pool' or 'template'."""
    template = template_current()
    pooled = pool_take(template)
    if pooled is not None:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER SCHEMA {quote(pooled)} RENAME TO {quote(schema_name)}")
        return "pool"
    schema_create_from_sql(schema_name, template)
    return "template"
