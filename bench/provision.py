"""`python -m bench provision [--quick]`: signup-to-live-workspace time, and migrate_schemas over many workspaces.

Everything runs in a database of its own (`bench_provision`, dropped at the end) through worker subprocesses
(`python -m bench.provision WORKER ...`) that run from a temporary copy of the project: the bench adds its "one new
migration" to the copy's documents app when it measures migrate_schemas, and migrations that colleagues add to the
checkout during a run can't leak into it. Nothing is left in the repository.

Part 1, at 1 / 100 / 1,000 existing workspaces (quick: 1 / 20 / 100), filled cheaply from the template script:
- signup: p50/p95 of `accounts.services.workspace_signup` (owner account with the configured password hasher,
  schema, workspace row, domain, membership, audit row, one transaction) with the warm pool stocked ("pool") and
  with the pool empty ("template": the rendered DDL script run in the transaction); and once more from the pool
  with Django's MD5 hasher, which shows the signup without the password hasher's deliberate cost (Argon2 with
  Django's parameters takes ~120 ms per hash on an idle 2-core machine, more than the whole target);
- the schema step alone of each way to make a workspace schema, side by side: taking a pool schema, running the
  template script, plain migration (`tenants.provisioning.schema_migrate`), and django-tenants' cloning as
  TENANT_BASE_SCHEMA does it (`CloneSchema.clone_schema` of the migrated template + stock `migrate_schemas --fake`).
Sample workspaces are removed after each series so the count stays where it was.

Part 2: `migrate_schemas` applying one new migration (an AddField on documents.Document) over N workspaces: ours
(`manage.py migrate_schemas`, timed as a process, i.e. with Django's start-up and the template/pool refresh) at
100 / 250 / 1,000 (quick: 20 / 50 / 100), django-tenants' stock command (`--executor standard`, system checks as
from the command line) at the smaller counts (at 1,000 it takes beyond this bench's budget), ours with one process at
1,000, and ours with nothing to do. The stock command's cost at 1,000 is estimated from its runs: per workspace, a
constant plus N table listings (counted in the run) of the cost measured at 1,000 workspaces — the quadratic term.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DB = "bench_provision"
PROBE_APP = "documents"
SETTINGS_MODULE = "bench_provision_settings"
BUDGET_SECONDS = 17 * 60  # the whole bench stays within ~20 minutes at full size on 2 cores
TARGET = {"signup_p50_ms": 100, "signup_p95_ms": 250, "migrate_schemas_1000_s": 60}

SIZES: dict[bool, dict[str, Any]] = {
    False: {"levels": [1, 100, 1000], "signups": 40, "baselines": 6, "ours_at": [100, 250, 1000],
            "stock_at": [100, 250, 400]},
    True: {"levels": [1, 20, 100], "signups": 12, "baselines": 3, "ours_at": [20, 50, 100], "stock_at": [20, 50]},
}


# --- the bench process -------------------------------------------------------------------------------------------


def _server_url() -> str:
    """The PostgreSQL server of the project (DATABASE_URL, else what `make` resolved, else localhost)."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    services = BASE_DIR / ".data" / "services.env"
    if not url and services.exists():
        for line in services.read_text().splitlines():
            if line.startswith("DATABASE_URL="):
                url = line.split("=", 1)[1].strip()
    return url or "postgres://postgres@127.0.0.1:5432/postgres"


def _database_url(name: str) -> str:
    return urlunparse(urlparse(_server_url())._replace(path=f"/{name}"))


def _admin_execute(*statements: str) -> None:
    import psycopg

    with psycopg.connect(_database_url("postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _database_drop() -> None:
    _admin_execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{BENCH_DB}' AND pid <> pg_backend_pid()",
        f'DROP DATABASE IF EXISTS "{BENCH_DB}"',
    )


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sizes = SIZES[quick]
        self.started = time.perf_counter()
        self.root = Path(tempfile.mkdtemp(prefix="bench-provision-"))
        self.src = self.root / "src"
        self.probes = 0
        self.leaf = ""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "PYTHONPATH": os.pathsep.join([str(self.root), str(self.src)]),
            "CCGPT_DATA_DIR": str(self.root / "data"),
            "DATABASE_URL": _database_url(BENCH_DB),
            # Nothing measured here touches Redis; point it at a db of its own anyway.
            "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
            "CELERY_BROKER_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
            "WORKSPACE_POOL_REFILL": "off",  # the bench stocks and drains the pool itself
            "DJANGO_DEBUG": "false",  # DEBUG keeps every query in memory
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    def prepare(self) -> None:
        shutil.copytree(BASE_DIR, self.src, ignore=shutil.ignore_patterns(
            ".venv", ".data", ".git", "node_modules", "__pycache__", "staticfiles", "results"))
        (self.root / f"{SETTINGS_MODULE}.py").write_text(
            "import os\n"
            "from config.settings.local import *  # noqa: F401,F403\n"
            "# One series shows the signup without the password hasher's deliberate cost.\n"
            "if os.environ.get('BENCH_PASSWORD_HASHER') == 'md5':\n"
            "    PASSWORD_HASHERS = ['django.contrib.auth.hashers.MD5PasswordHasher']\n"
        )
        _database_drop()
        _admin_execute(f'CREATE DATABASE "{BENCH_DB}"')

    def cleanup(self) -> None:
        try:
            _database_drop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def run(self, *args: str, timeout: float = 1800, env: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
        """Run a process in the bench environment; its last stdout line is JSON. Returns it and the wall time."""
        started = time.perf_counter()
        proc = subprocess.run(args, cwd=self.src, env={**self.env(), **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}, wall

    def worker(self, name: str, env: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
        return self.run(sys.executable, "-m", "bench.provision", name, json.dumps(params), env=env)[0]

    def probe_add(self) -> str:
        """One new migration: a nullable column on documents.Document, after the current leaf."""
        self.probes += 1
        name = f"9{self.probes:03d}_bench_probe"
        (self.src / PROBE_APP / "migrations" / f"{name}.py").write_text(
            "from django.db import migrations, models\n\n\n"
            "class Migration(migrations.Migration):\n"
            f"    dependencies = [({PROBE_APP!r}, {self.leaf!r})]\n"
            f"    operations = [migrations.AddField('document', 'bench_probe_{self.probes}', "
            "models.TextField(null=True))]\n"
        )
        self.leaf = name
        return name

    def migrate_ours(self, size: int, *extra: str) -> dict[str, Any]:
        summary, wall = self.run(sys.executable, "manage.py", "migrate_schemas", "--noinput", "--json", *extra)
        verified = self.worker("verify")
        return {
            "command": "ours" + (" " + " ".join(extra) if extra else ""), "workspaces": size,
            "seconds": round(wall, 2), "workspace_seconds": summary.get("seconds"),
            "migrated": summary.get("migrated"), "already_current": summary.get("already_current"),
            "migrations_applied": summary.get("migrations_applied"),
            "per_workspace_ms": round(wall * 1000 / size, 1), "all_current_after": verified["behind"] == 0,
        }

    def migrate_stock(self, size: int) -> dict[str, Any]:
        result, wall = self.run(sys.executable, "-m", "bench.provision", "stock_migrate", "{}")
        verified = self.worker("verify")
        return {
            "command": "stock django-tenants", "workspaces": size, "seconds": round(wall, 2),
            "command_seconds": result["seconds"], "per_workspace_ms": round(wall * 1000 / size, 1),
            "table_listing_ms": result["table_listing_ms"],
            "table_listings_per_workspace": result["table_listings_per_workspace"],
            "queries_per_workspace": result["queries_per_workspace"], "all_current_after": verified["behind"] == 0,
        }


def run(quick: bool) -> dict[str, Any]:
    bench = Bench(quick)
    bench.prepare()
    sizes = bench.sizes
    result: dict[str, Any] = {"target": TARGET, "provision": {}, "migrate_schemas": []}
    # Timings on a shared machine mean little without the load they were taken under.
    result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    try:
        setup = bench.worker("setup")
        bench.leaf = setup["probe_app_leaf"]
        result["workspace_schema"] = {"tables": setup["tables"], "migrations_recorded": setup["migrations"]}
        result["password_hash_ms"] = setup["password_hash_ms"]
        largest = max(sizes["levels"] + sizes["ours_at"])
        for size in sorted(set(sizes["levels"] + sizes["ours_at"] + sizes["stock_at"])):
            fill = bench.worker("fill", level=size)
            if size in sizes["levels"]:
                print(f"  provisioning at {size} workspaces", flush=True)
                level = bench.worker("level", level=size, signups=sizes["signups"], baselines=sizes["baselines"])
                unhashed = bench.worker("signups", env={"BENCH_PASSWORD_HASHER": "md5"}, kind="pool",
                                        count=sizes["signups"])
                result["provision"][str(size)] = {
                    **level, "signup_pool_md5_hasher": unhashed["signup"], "catalog_relations": fill["catalog_relations"],
                }
            if size in sizes["stock_at"]:
                if bench.elapsed() < BUDGET_SECONDS * 0.6:
                    print(f"  stock migrate_schemas over {size} workspaces", flush=True)
                    bench.probe_add()
                    result["migrate_schemas"].append(bench.migrate_stock(size))
                else:
                    result["migrate_schemas"].append({"command": "stock django-tenants", "workspaces": size,
                                                      "skipped": "time budget"})
            if size in sizes["ours_at"]:
                print(f"  our migrate_schemas over {size} workspaces", flush=True)
                bench.probe_add()
                result["migrate_schemas"].append(bench.migrate_ours(size))
            if size == largest:
                result["migrate_schemas"].append(bench.migrate_ours(size) | {"command": "ours, nothing to apply"})
                bench.probe_add()
                result["migrate_schemas"].append(bench.migrate_ours(size, "--parallel", "1"))
        result["summary"] = _summary(result, sizes)
        result["bench_seconds"] = round(bench.elapsed(), 1)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return result
    finally:
        bench.cleanup()


def _summary(result: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    levels = [str(n) for n in sizes["levels"]]
    provision = result["provision"]
    first, last = provision[levels[0]], provision[levels[-1]]
    rows = result["migrate_schemas"]
    ours = {r["workspaces"]: r for r in rows if r.get("command") == "ours"}
    stock = {r["workspaces"]: r for r in rows if r.get("command") == "stock django-tenants" and "seconds" in r}
    largest = max(ours)
    summary: dict[str, Any] = {
        "signup_pool_ms": {n: provision[n]["signup_pool"]["p50"] for n in levels},
        "signup_template_ms": {n: provision[n]["signup_template"]["p50"] for n in levels},
        "signup_p95_ms": {n: provision[n]["signup_pool"]["p95"] for n in levels},
        "schema_step_p50_ms": {
            n: {way: provision[n][f"schema_{way}"]["p50"] for way in ("pool", "template", "migrate", "clone")}
            for n in levels
        },
        # Ratios against the baselines measured in the same run, at the largest count.
        "migrate_over_pool_signup": round(last["schema_migrate"]["p50"] / last["signup_pool"]["p50"], 1),
        "clone_over_pool_signup": round(last["schema_clone"]["p50"] / last["signup_pool"]["p50"], 1),
        "migrate_over_template_signup": round(last["schema_migrate"]["p50"] / last["signup_template"]["p50"], 1),
        "signup_pool_growth": round(last["signup_pool"]["p50"] / first["signup_pool"]["p50"], 2),
        "schema_pool_growth": round(last["schema_pool"]["p50"] / first["schema_pool"]["p50"], 2),
        "schema_template_growth": round(last["schema_template"]["p50"] / first["schema_template"]["p50"], 2),
        "schema_migrate_growth": round(last["schema_migrate"]["p50"] / first["schema_migrate"]["p50"], 2),
        "schema_clone_growth": round(last["schema_clone"]["p50"] / first["schema_clone"]["p50"], 2),
        "signup_template_growth": round(last["signup_template"]["p50"] / first["signup_template"]["p50"], 2),
        "signup_pool_md5_hasher_ms": {
            n: {"p50": provision[n]["signup_pool_md5_hasher"]["p50"], "p95": provision[n]["signup_pool_md5_hasher"]["p95"]}
            for n in levels
        },
        "migrate_schemas_ours_s": {n: r["seconds"] for n, r in sorted(ours.items())},
        "migrate_schemas_stock_s": {n: r["seconds"] for n, r in sorted(stock.items())},
    }
    common = sorted(set(ours) & set(stock))
    if common:
        summary["stock_over_ours"] = {n: round(stock[n]["seconds"] / ours[n]["seconds"], 1) for n in common}
    if stock:
        # Per workspace: a constant plus `table_listings_per_workspace` listings of every table, at the listing cost
        # measured with the largest count. (A polynomial fit through two or three runs is hopeless on a shared box.)
        listing_at_largest = provision[str(largest)]["table_listing_ms"] if str(largest) in provision else None
        if listing_at_largest is not None:
            estimates = {}
            for n, row in sorted(stock.items()):
                constant_ms = row["command_seconds"] * 1000 / n - row["table_listings_per_workspace"] * row["table_listing_ms"]
                per_workspace = constant_ms + row["table_listings_per_workspace"] * listing_at_largest
                estimates[n] = round(per_workspace * largest / 1000, 1)
            summary["stock_model_estimate_at_largest_s"] = estimates
            summary["stock_model_over_ours_at_largest"] = round(
                min(estimates.values()) / ours[largest]["seconds"], 1
            )
    last_signup, last_unhashed = last["signup_pool"], last["signup_pool_md5_hasher"]
    summary["meets_target"] = {
        "signup_p50": last_signup["p50"] <= TARGET["signup_p50_ms"],
        "signup_p95": last_signup["p95"] <= TARGET["signup_p95_ms"],
        "signup_md5_hasher_p50": last_unhashed["p50"] <= TARGET["signup_p50_ms"],
        "signup_md5_hasher_p95": last_unhashed["p95"] <= TARGET["signup_p95_ms"],
        "migrate_schemas_at_largest": ours[largest]["seconds"] <= TARGET["migrate_schemas_1000_s"],
    }
    return summary


# --- workers (run in the bench database, with the bench settings) -------------------------------------------------


def _stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": round(rank(0.5), 1), "p95": round(rank(0.95), 1),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1), "mean": round(sum(ordered) / len(ordered), 1)}


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _catalog_relations() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class")
        return cursor.fetchone()[0]


def worker_setup(_: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    from tenants import provisioning
    from tenants.services import public_site_ensure

    call_command("migrate_schemas", interactive=False, verbosity=0)
    public_site_ensure()
    template = provisioning.template_current()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [provisioning.TEMPLATE_SCHEMA])
        tables = cursor.fetchone()[0]
    hashes = []
    for _n in range(11):
        started = time.perf_counter()
        make_password("Bench-password-4711x")
        hashes.append(_ms(started))
    leaf = [name for app, name in MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes() if app == PROBE_APP]
    return {"tables": tables, "migrations": len(template.migrations), "password_hash_ms": _stats(hashes[1:]),
            "probe_app_leaf": leaf[0]}


def worker_fill(params: dict[str, Any]) -> dict[str, Any]:
    """Bring the number of workspaces up to `level` the cheap way: the template script, rows in bulk."""
    from django.db import transaction

    from tenants import provisioning
    from tenants.models import Domain, Workspace

    template = provisioning.template_current()
    count = Workspace.objects.exclude(schema_name="public").count()
    serial = Workspace.objects.filter(slug__startswith="fill-").count()
    while count < params["level"]:
        with transaction.atomic():
            batch = []
            for _n in range(min(5, params["level"] - count)):  # a lock per relation: few schemas per transaction
                slug = f"fill-{serial:05d}"
                schema = f"ws_fill_{serial:05d}"
                provisioning.schema_create_from_sql(schema, template)
                batch.append(Workspace(schema_name=schema, slug=slug, name=f"Fill {serial}"))
                serial += 1
                count += 1
            Workspace.objects.bulk_create(batch)
            Domain.objects.bulk_create(Domain(domain=f"{w.slug}.localhost", tenant=w, is_primary=True) for w in batch)
    return {"workspaces": count, "catalog_relations": _catalog_relations()}


def _signups(kind: str, count: int, tag: str) -> dict[str, Any]:
    from accounts.services import workspace_signup
    from tenants import provisioning
    from tenants.models import Workspace

    if kind == "pool":
        provisioning.pool_refill(count + 1)
    else:
        provisioning.pool_drain()
    totals, creates, schemas, methods, made = [], [], [], [], []
    for n in range(count + 1):  # the first one warms the process up and is not counted
        slug = f"b{tag}-{kind}-{n}"
        started = time.perf_counter()
        user, created = workspace_signup(email=f"{slug}@bench.test", password="Bench-password-4711x",
                                         workspace_name=f"Bench {slug}", slug=slug)
        elapsed = _ms(started)
        made.append((created.workspace, user))
        if n:
            totals.append(elapsed)
            creates.append(created.timings_ms["total"])
            schemas.append(created.timings_ms["schema"])
            methods.append(created.method)
    # Keep the workspace count where it was. (The owners stay: deleting a user would make Django's collector look
    # for their documents in the public schema, and a few hundred more users change nothing measured here.)
    for workspace, _user in made:
        provisioning.schema_drop(workspace.schema_name)
        Workspace.objects.filter(pk=workspace.pk).delete()
    return {"signup": _stats(totals), "workspace_create": _stats(creates), "schema": _stats(schemas),
            "methods": sorted(set(methods))}


def worker_level(params: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command
    from django_tenants.clone import CloneSchema
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

    from tenants import provisioning

    level, tag = params["level"], secrets.token_hex(2)
    listing_ms = _table_listing_ms()
    pool = _signups("pool", params["signups"], tag)
    template = _signups("template", params["signups"], tag)
    migrated, cloned = [], []
    for n in range(params["baselines"] + 1):
        name = f"ws__bench_migrate_{n}"
        started = time.perf_counter()
        provisioning.schema_migrate(name)
        if n:
            migrated.append(_ms(started))
        provisioning.schema_drop(name)
    for n in range(params["baselines"] + 1):
        # What TenantMixin.create_schema does with TENANT_BASE_SCHEMA and TENANT_CREATION_FAKES_MIGRATIONS.
        name = f"ws__bench_clone_{n}"
        started = time.perf_counter()
        CloneSchema().clone_schema(provisioning.TEMPLATE_SCHEMA, name, "DATA")
        call_command(StockMigrateSchemas(), tenant=True, fake=True, schema_name=name, interactive=False, verbosity=0)
        if n:
            cloned.append(_ms(started))
        provisioning.schema_drop(name)
    provisioning.pool_drain()
    return {
        "workspaces": level,
        "signup_pool": pool["signup"], "signup_template": template["signup"],
        "workspace_create_pool": pool["workspace_create"], "workspace_create_template": template["workspace_create"],
        "schema_pool": pool["schema"], "schema_template": template["schema"],
        "schema_migrate": _stats(migrated), "schema_clone": _stats(cloned),
        "methods": {"pool": pool["methods"], "template": template["methods"]},
        "table_listing_ms": listing_ms,
    }


def worker_signups(params: dict[str, Any]) -> dict[str, Any]:
    return _signups(params["kind"], params["count"], secrets.token_hex(2))


def _table_listing_ms() -> float:
    """p50 of one `introspection.table_names()` in a workspace schema: what MigrationRecorder.has_table() costs."""
    from django.db import connection

    from tenants.models import Workspace

    workspace = Workspace.objects.exclude(schema_name="public").order_by("pk").first()
    samples = []
    connection.set_schema(workspace.schema_name)
    try:
        for _n in range(6):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                connection.introspection.table_names(cursor)
            samples.append(_ms(started))
    finally:
        connection.set_schema_to_public()
    return _stats(samples[1:])["p50"]


def worker_stock_migrate(_: dict[str, Any]) -> dict[str, Any]:
    """django-tenants' own migrate_schemas, as `manage.py migrate_schemas` runs it (system checks included)."""
    from django.core.management import call_command
    from django.db import connection
    from django_tenants.management.commands.migrate_schemas import Command as StockMigrateSchemas

    from tenants.migrations_fast import workspace_schema_names

    listing_ms = _table_listing_ms()
    counts = {"queries": 0, "table_listings": 0}

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["queries"] += 1
        counts["table_listings"] += "pg_table_is_visible" in sql
        return execute(sql, params, many, context)

    workspaces = len(workspace_schema_names())
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        call_command(StockMigrateSchemas(), interactive=False, verbosity=0, skip_checks=False, executor="standard")
    return {"seconds": round(time.perf_counter() - started, 2), "table_listing_ms": listing_ms,
            "table_listings_per_workspace": round(counts["table_listings"] / workspaces, 2),
            "queries_per_workspace": round(counts["queries"] / workspaces, 1)}


def worker_verify(_: dict[str, Any]) -> dict[str, Any]:
    from tenants.migrations_fast import schemas_behind, workspace_schema_names

    return {"behind": len(schemas_behind(workspace_schema_names()))}


WORKERS = {
    "setup": worker_setup, "fill": worker_fill, "level": worker_level, "signups": worker_signups,
    "stock_migrate": worker_stock_migrate,
    "verify": worker_verify,
}


def _worker_main(argv: list[str]) -> None:
    import django

    django.setup()
    params = json.loads(argv[1]) if len(argv) > 1 else {}
    print(json.dumps(WORKERS[argv[0]](params)), flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
