"""`python -m bench first_answer`: seconds from a new workspace's first upload to its first answer (issue #20).

What a new customer does on the demo workspace or the "Try it" page: ask, see "nothing found", upload a one-page PDF
of policies, and ask again. Measured on a real stack of the bench's own (database, Redis db, folders): a uvicorn web
process and a Celery worker with the queues `make run` starts. For each of several fresh workspaces:
- a question before any upload (the web process has looked at the empty knowledge base: nothing it remembers of
  that may delay the next answer),
- upload over the REST API → `indexed` (polled every 50 ms on the API: upload_to_indexed_s, with the worker's own
  queue wait and stage times from the document),
- the question again over the REST API → answered from the PDF (answer_s); first_answer_s = upload to answer.
Baseline in the same run: the same question asked again in the same workspace (steady_answer_s); the ratio
first_answer_s / steady_answer_s says how much of the first answer is ingestion. The first workspace pays for model
loading in the worker process (reported apart as `cold`, not in the percentiles).
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._support import free_port, manage, services_env

BASE_DIR = Path(__file__).resolve().parent.parent
WORKSPACES = 6
QUESTION = "How long is the returns window?"
POLICY = ("Welcome to {name}. You can return any item within {days} days of purchase for a full refund.\n"
          "Orders ship within 2 business days.\nGift cards never expire.\nCall us 9am to 5pm on weekdays.")
HUNG_AFTER_SECONDS = 300


def _env(folder: Path, port: int) -> dict[str, str]:
    import os
    from urllib.parse import urlsplit, urlunsplit

    services = services_env()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_url = urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_FIRST_ANSWER_REDIS_DB', '13')}"))
    name = (database.path.lstrip("/") or "customercare") + "_bench_first_answer"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false", LOG_LEVEL="WARNING",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{name}")), REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url, CHANNELS_PREFIX="ccgpt-bench-first-answer",
        CHROMA_PATH=str(folder / "chroma"), MEDIA_ROOT=str(folder / "media"), PUBLIC_PORT=str(port),
        WORKSPACE_POOL_SIZE="0", WORKSPACE_POOL_REFILL="off", PYTHONUNBUFFERED="1",
    )
    return env


def _database(url: str, *, drop_only: bool = False) -> None:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def _ask(session: Any, base: str, host: str, key: str) -> tuple[dict[str, Any], float]:
    headers = {"Host": host, "Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conversation = session.post(f"{base}/api/v1/conversations/", headers=headers, data="{}", timeout=120)
    conversation.raise_for_status()
    posted = session.post(f"{base}/api/v1/conversations/{conversation.json()['id']}/messages/", headers=headers,
                          data=json.dumps({"text": QUESTION}), timeout=120)
    posted.raise_for_status()
    return posted.json()["answer"], time.perf_counter() - started


def one_workspace(env: dict[str, str], session: Any, base: str, port: int, index: int) -> dict[str, Any]:
    from bench.small_kb import pdf_bytes

    slug = f"bench-first-{index}"
    # Enterprise: the bench polls the document every 50 ms with an API key, past free's 60 API requests a minute
    # (docs/api.md); the plan does not change what is measured.
    manage(env, "create_workspace", "--slug", slug, "--name", f"First {index}", "--owner-email",
           f"bench-first-{index}@example.test", "--plan", "enterprise", "--json")
    key = json.loads(manage(env, "create_api_key", "--workspace", slug, "--name", "bench",
                            "--scopes", "read,write,chat", "--json"))["key"]
    host = f"{slug}.localhost:{port}"
    before, _ = _ask(session, base, host, key)
    days = 30 + index
    pdf = pdf_bytes(POLICY.format(name=f"First Shop {index}", days=days), title="Store policies")
    started = time.perf_counter()
    upload = session.post(f"{base}/api/v1/documents/", headers={"Host": host, "Authorization": f"Api-Key {key}"},
                          files={"file": ("policies.pdf", pdf, "application/pdf")}, timeout=120)
    upload.raise_for_status()
    document_id = upload.json()["id"]
    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while True:
        document = session.get(f"{base}/api/v1/documents/{document_id}/",
                               headers={"Host": host, "Authorization": f"Api-Key {key}"}, timeout=30).json()
        if document["status"] in ("indexed", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"hung: document still {document['status']}")
        time.sleep(0.05)
    indexed_s = time.perf_counter() - started
    answer, answer_s = _ask(session, base, host, key)
    first_answer_s = time.perf_counter() - started
    steady, steady_s = _ask(session, base, host, key)
    return {
        "declined_before_upload": before["answered"] is False,
        "status": document["status"], "answered": answer["answered"], "fact_in_answer": f"{days} days" in answer["content"],
        "cites_the_upload": [c["document_id"] for c in answer["citations"]][:1] == [document_id],
        "upload_to_indexed_s": round(indexed_s, 3), "answer_s": round(answer_s, 3),
        "first_answer_s": round(first_answer_s, 3), "steady_answer_s": round(steady_s, 3),
        "steady_answered": steady["answered"], "document_timings": document.get("timings"),
    }


def run(quick: bool = False) -> dict[str, Any]:
    import requests

    folder = Path(tempfile.mkdtemp(prefix="bench-first-answer-"))
    port = free_port()
    env = _env(folder, port)
    procs: list[subprocess.Popen] = []
    log = open(folder / "processes.log", "w")
    try:
        _database(env["DATABASE_URL"])
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        manage(env, "migrate_schemas", "--noinput", "-v", "0")
        manage(env, "setup_platform", "--json")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-Q",
             "default,ingest,ingest_large", "-c", "2", "--without-gossip", "--without-mingle"],
            cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT))
        session = requests.Session()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if session.get(f"{base}/healthz", timeout=5).status_code < 500:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("the web process did not come up: " + (folder / "processes.log").read_text()[-2000:])
            time.sleep(0.2)
        rows = [one_workspace(env, session, base, port, index) for index in range(2 if quick else WORKSPACES)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        _database(env["DATABASE_URL"], drop_only=True)
        shutil.rmtree(folder, ignore_errors=True)
    warm = rows[1:]

    def median(key: str) -> float | None:
        values = [r[key] for r in warm]
        return round(statistics.median(values), 3) if values else None

    return {
        "workspaces": len(rows),
        "all_answered_from_the_upload": all(r["answered"] and r["cites_the_upload"] and r["fact_in_answer"]
                                            for r in rows),
        "all_declined_before_upload": all(r["declined_before_upload"] for r in rows),
        "cold": rows[0],
        "warm_median": {key: median(key) for key in ("upload_to_indexed_s", "answer_s", "first_answer_s",
                                                      "steady_answer_s")},
        "warm_max_first_answer_s": max((r["first_answer_s"] for r in warm), default=None),
        "ratio_first_answer_to_steady_answer": (round(median("first_answer_s") / median("steady_answer_s"), 1)
                                                if warm and median("steady_answer_s") else None),
        "rows": rows,
    }
