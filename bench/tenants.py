"""`python -m bench tenants [--quick]`: what one process keeps per workspace it has served (issue #21).

    python -m bench tenants                      # 1,000 workspaces (quick: 200); writes bench/results/tenants.json
    python -m bench.tenants --workspaces 300     # any size

Setup: a database of its own (`<db>_bench_tenants`, dropped at the end), Redis db BENCH_TENANTS_REDIS_DB (5),
files under .data/bench-tenants/ (removed at the end). N workspaces are made the cheap way (the template script and
rows in bulk, as bench/provision.py fills), each with small typed-in documents (not yet indexed).

- worker: one process runs the ingestion task's service (`pipeline.document_ingest_run`, what `documents.ingest` runs
  in a Celery worker) for one document in each workspace in turn, then a second round (another document in each).
- web: one process answers one question in each workspace (`answer_once`, the builtin provider, as REST does), then
  a second round. The single-workspace baseline: before round one, the same question 200 times in one workspace;
  and, interleaved with round two (the same minutes, the same machine load), once in that workspace after every
  fifth other one.
Each reports RSS growth over the process's warm RSS (after its first workspace) at 100 / 500 / N workspaces and the
first-visit (round one) and steady (round two) p50/p95 in ms. Side by side in one run: CHROMA_MEMORY_BUDGET_MB=0
(no bound: what every process did before) and the configured budget (default 64) with every workspace searched in
Chroma (VECTORS_RESIDENT_MAX_CHUNKS=0); the web round also with the defaults, where small workspaces are searched from
their schema's copy (documents/resident_vectors.py) and load nothing into Chroma.
- server: the web round again with CHROMA_URL against a real `chroma run` over the same data, every workspace searched
  there; RSS of the web process and of the Chroma server at the same points.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._support import BASE_DIR, DATA_DIR, bench_env, database_prepare, percentiles, seed_run

FOLDER = DATA_DIR / "bench-tenants"
SIZES = {False: 1000, True: 200}
BUDGET_MB = int(os.environ.get("CHROMA_MEMORY_BUDGET_MB", "64"))
SINGLE_RUNS = 200
INTERLEAVE_EVERY = 5  # round two: one answer in the first workspace after every 5 others
QUESTION = "What is the door code of the bike storage room?"
TARGET = {"rss_growth_mb": 150, "first_visit_p95_ms": 60}


def _env(**extra: str) -> dict[str, str]:
    return bench_env(name="tenants", redis_db_variable="BENCH_TENANTS_REDIS_DB", redis_db_default=5, folder=FOLDER,
                     EMBEDDING_THREADS="1", **extra)


def _redis_flush(env: dict[str, str]) -> None:
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


def _database_drop(env: dict[str, str]) -> None:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(env["DATABASE_URL"])
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (parts.path.lstrip("/"),))
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}"')


def _chroma_server(path: Path) -> tuple[subprocess.Popen, str]:
    executable = shutil.which("chroma", path=str(Path(sys.executable).parent))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(FOLDER / "chroma-server.log", "wb")
    process = subprocess.Popen([executable, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((FOLDER / "chroma-server.log").read_text()[-3000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("chroma run did not start")


def run(quick: bool = False, workspaces: int | None = None) -> dict[str, Any]:
    count = workspaces or SIZES[quick]
    started = time.perf_counter()
    env = _env()
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True, exist_ok=True)
    _database_drop(env)
    _redis_flush(env)
    result: dict[str, Any] = {"workspaces": count, "budget_mb": BUDGET_MB, "target": TARGET}
    try:
        database_prepare(env)
        result["seed"] = seed_run(env, "bench.tenants", str(count), command="seed", timeout=3600)
        timings = {"seed_s": round(time.perf_counter() - started, 1)}
        for label, budget in (("unbounded", 0), ("budget", BUDGET_MB)):
            phase_env = {**env, "CHROMA_MEMORY_BUDGET_MB": str(budget)}
            t = time.perf_counter()
            result[f"worker_{label}"] = seed_run(phase_env, "bench.tenants", str(count), label, command="worker",
                                                 timeout=3600)
            timings[f"worker_{label}_s"] = round(time.perf_counter() - t, 1)
        # Web: every small workspace's index in Chroma (resident search off: before issue #21's bound, then with
        # it), and the default, where small workspaces are searched from their schema's copy (resident_vectors).
        for label, budget, resident in (("unbounded", 0, 0), ("budget", BUDGET_MB, 0), ("resident", BUDGET_MB, None)):
            phase_env = {**env, "CHROMA_MEMORY_BUDGET_MB": str(budget)}
            if resident is not None:
                phase_env["VECTORS_RESIDENT_MAX_CHUNKS"] = str(resident)
            t = time.perf_counter()
            result[f"web_{label}"] = seed_run(phase_env, "bench.tenants", str(count), command="web", timeout=3600)
            timings[f"web_{label}_s"] = round(time.perf_counter() - t, 1)
        server, url = _chroma_server(FOLDER / "chroma")
        try:
            t = time.perf_counter()
            # The Chroma server as the store of every workspace (resident search off): its memory as tenants grow.
            result["web_server_mode"] = seed_run({**env, "CHROMA_URL": url, "BENCH_CHROMA_PID": str(server.pid),
                                                  "VECTORS_RESIDENT_MAX_CHUNKS": "0"},
                                                 "bench.tenants", str(count), command="web", timeout=3600)
            timings["web_server_mode_s"] = round(time.perf_counter() - t, 1)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        result["timings"] = timings
        result["summary"] = _summary(result)
    finally:
        _database_drop(env)
        _redis_flush(env)
        shutil.rmtree(FOLDER, ignore_errors=True)
    return result


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, labels in (("web", ("unbounded", "budget", "resident")), ("worker", ("unbounded", "budget"))):
        for label in labels:
            r = result[f"{kind}_{label}"]
            out[f"{kind}_{label}"] = {"rss_growth_mb": r["rss_growth_mb"], "first_visit_p95_ms": r["first_visit"]["p95"],
                                      "steady_p95_ms": r["steady"]["p95"],
                                      "single_workspace_p95_ms": r["single_workspace"]["p95"],
                                      "single_interleaved_p95_ms": (r.get("single_workspace_interleaved") or {}).get("p95")}
    server = result["web_server_mode"]
    out["server_mode"] = {"web_rss_growth_mb": server["rss_growth_mb"], "chroma_server_rss_mb": server["server_rss_mb"],
                          "first_visit_p95_ms": server["first_visit"]["p95"], "steady_p95_ms": server["steady"]["p95"]}
    return out


# --- the subprocesses (Django set up on the bench database) ------------------------------------------------------

def _text(n: int, round_: int) -> tuple[str, str]:
    code = f"{4100 + n * 7 + round_}"
    title = f"Shop {n} notes {round_}"
    return title, (f"# {title}\n\n## Bike storage room\nThe door code of the bike storage room at shop {n} is {code}. "
                   f"Enter it on the keypad next to the side entrance.\n\n## Opening hours\nShop {n} opens at nine "
                   f"and closes at six on weekdays; on Saturdays it closes at four.\n")


def _slug(n: int) -> str:
    return f"tn-{n:05d}"


def seed_main(count: int) -> dict[str, Any]:
    """`count` workspaces from the template script, each with four typed-in documents (two per worker phase)."""
    from django.db import connection, transaction

    from documents import services
    from tenants import provisioning
    from tenants.models import Domain, Workspace

    template = provisioning.template_current()
    made = 0
    while made < count:
        with transaction.atomic():
            batch = []
            for n in range(made, min(count, made + 5)):  # a schema takes a lock per relation: few per transaction
                provisioning.schema_create_from_sql(f"ws_tn_{n:05d}", template)
                batch.append(Workspace(schema_name=f"ws_tn_{n:05d}", slug=_slug(n), name=f"Shop {n}"))
            Workspace.objects.bulk_create(batch)
            Domain.objects.bulk_create(Domain(domain=f"{w.slug}.localhost", tenant=w, is_primary=True) for w in batch)
        made += len(batch)
    for workspace in Workspace.objects.filter(slug__startswith="tn-"):
        connection.set_tenant(workspace)
        n = int(workspace.slug[3:])
        for round_ in range(4):
            title, text = _text(n, round_)
            services.document_create_text(title=title, text=text, markdown=True)
    connection.set_schema_to_public()
    return {"workspaces": made}


def _rss_mb(pid: int | None = None) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def _workspaces(count: int) -> list[Any]:
    from tenants.models import Workspace

    return sorted(Workspace.objects.filter(slug__startswith="tn-"), key=lambda w: w.slug)[:count]


def _checkpoints(count: int) -> set[int]:
    return {n for n in (100, 500, count) if n <= count}


def worker_main(count: int, label: str) -> dict[str, Any]:
    """Ingest one document per workspace, in turn (round one), then another one in each (round two)."""
    from django.db import connection

    from documents import pipeline
    from documents.models import Document, DocumentStatus
    from documents.vectors import _store

    offset = 0 if label == "unbounded" else 2
    workspaces = _workspaces(count)

    def ingest(workspace: Any, round_: int) -> float:
        connection.set_tenant(workspace)
        title = _text(int(workspace.slug[3:]), offset + round_)[0]
        document = Document.objects.get(title=title)
        t = time.perf_counter()
        outcome = pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token)
        elapsed = (time.perf_counter() - t) * 1000
        if outcome.result != "indexed" or Document.objects.get(pk=document.pk).status != DocumentStatus.INDEXED:
            raise RuntimeError(f"{workspace.slug} {title}: {outcome.result}")
        return elapsed

    # Warm up in the first workspace (model loaded, first collection, connection): round one there is not counted.
    ingest(workspaces[0], 0)
    warm = _rss_mb()
    firsts, steadies, rss = [], [], {}
    for index, workspace in enumerate(workspaces[1:], start=2):
        firsts.append(ingest(workspace, 0))
        if index in _checkpoints(count):
            rss[index] = round(_rss_mb() - warm, 1)
    for workspace in workspaces:
        steadies.append(ingest(workspace, 1))
    rss_after_two = round(_rss_mb() - warm, 1)
    connection.set_schema_to_public()
    return {"warm_rss_mb": warm, "rss_growth_mb": rss, "rss_growth_after_round_two_mb": rss_after_two,
            "first_visit": percentiles(firsts), "steady": percentiles(steadies),
            "single_workspace": {"p95": None}, "client_reopens": _store.reopens,
            "collections_loaded": len(_store._loaded)}


def web_main(count: int) -> dict[str, Any]:
    from django.db import connection

    from chat.answering import answer_once
    from documents.resident_vectors import resident_vectors
    from documents.vectors import _store

    server_pid = int(os.environ["BENCH_CHROMA_PID"]) if os.environ.get("BENCH_CHROMA_PID") else None
    workspaces = _workspaces(count)

    def answer(workspace: Any) -> float:
        connection.set_tenant(workspace)
        t = time.perf_counter()
        done = answer_once(question=QUESTION, history=[])
        elapsed = (time.perf_counter() - t) * 1000
        n = int(workspace.slug[3:])
        if not done["answered"] or not any(str(4100 + n * 7 + r) in done["answer"] for r in range(4)):
            raise RuntimeError(f"{workspace.slug}: {done['answer']!r} ({done['reason']})")
        return elapsed

    single = [answer(workspaces[0]) for _ in range(SINGLE_RUNS + 1)][1:]
    warm = _rss_mb()
    server_warm = _rss_mb(server_pid) if server_pid else None
    firsts, steadies, rss, server_rss = [], [], {}, {}
    for index, workspace in enumerate(workspaces[1:], start=2):
        firsts.append(answer(workspace))
        if index in _checkpoints(count):
            rss[index] = round(_rss_mb() - warm, 1)
            if server_pid:
                server_rss[index] = _rss_mb(server_pid)
    interleaved = []
    for index, workspace in enumerate(workspaces):
        steadies.append(answer(workspace))
        if index % INTERLEAVE_EVERY == INTERLEAVE_EVERY - 1:
            interleaved.append(answer(workspaces[0]))
    connection.set_schema_to_public()
    out = {"warm_rss_mb": warm, "rss_growth_mb": rss, "rss_growth_after_round_two_mb": round(_rss_mb() - warm, 1),
           "single_workspace": percentiles(single), "single_workspace_interleaved": percentiles(interleaved),
           "first_visit": percentiles(firsts), "steady": percentiles(steadies),
           "client_reopens": _store.reopens, "collections_loaded": len(_store._loaded),
           "resident": {"workspaces": len(resident_vectors()), "mb": round(resident_vectors().nbytes / 2**20, 2),
                        "loads": resident_vectors().loads}}
    if server_pid:
        out["server_rss_mb"] = {"warm": server_warm, **server_rss, "after_round_two": _rss_mb(server_pid)}
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("seed", "worker", "web"):
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
        django.setup()
        command, count = sys.argv[1], int(sys.argv[2])
        if command == "seed":
            out = seed_main(count)
        elif command == "worker":
            out = worker_main(count, sys.argv[3])
        else:
            out = web_main(count)
        print(json.dumps(out, default=str))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.tenants")
    parser.add_argument("--workspaces", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(quick=args.quick, workspaces=args.workspaces)
    (BASE_DIR / "bench" / "results").mkdir(exist_ok=True)
    (BASE_DIR / "bench" / "results" / "tenants.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
