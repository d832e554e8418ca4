"""`python -m bench crawl [--quick]`: website crawl throughput, and the time of a re-sync when 1 % of the pages
changed against the full crawl's (target: at most 10 %).

Corpus: the Debian Administrator's Handbook, English HTML (the `debian-handbook` package, as bench/ingest.py: apt-get
installs it when missing and we may), served over loopback by a threaded HTTP server in this process with ETag and
Last-Modified, answering 304 to conditional requests, and a sitemap of every page. Quick mode: a subset of the pages.

Measured in one run, with a database, Redis db and folders of the bench's own (removed at the end), a real Celery
worker (`-c 2`, as `make run`) and the operator commands (`crawl --sitemap --wait --json`, `sync_sources --wait
--json`):
1. warm-up: a one-page site, so the worker has its embedding model loaded before anything is timed;
2. full crawl: every page fetched, parsed, chunked, embedded and indexed: pages/s, chunks/s, the run's time from
   queued to finished (its database timestamps; the command's own `seconds` is reported too);
3. re-sync, 1 % changed: ceil(1 %) of the pages get a new paragraph; everything else answers 304. Ratio of its time to
   (2); target <= 0.10;
4. the same re-sync against a server that ignores validators (no 304: every page downloaded, then found unchanged by
   its content hash): what the hash alone saves, for sites without ETag / Last-Modified.
Politeness delay SOURCE_DELAY is 0 here (it is a per-site courtesy setting, not our cost); SOURCE_CONCURRENCY default.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench._support import manage, services_env
from bench.ingest import _database, _flush_redis, corpus_files, worker_threads

BASE_DIR = Path(__file__).resolve().parent.parent
SLUG = "bench-crawl"
QUICK_PAGES = 30
CHANGED_SHARE = 0.01
TARGET_RATIO = 0.10
WORKER_CONCURRENCY = 2


class Site:
    """Static pages from memory over loopback, with validators; `conditional` off ignores If-None-Match."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = dict(pages)
        self.conditional = True
        self.counts = {"200": 0, "304": 0, "404": 0}
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = site.pages.get(self.path.split("?", 1)[0])
                if body is None:
                    site.counts["404"] += 1
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                if site.conditional and self.headers.get("If-None-Match") == etag:
                    site.counts["304"] += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                site.counts["200"] += 1
                self.send_response(200)
                kind = "application/xml" if self.path.endswith(".xml") else (
                    "text/plain" if self.path.endswith(".txt") else "text/html; charset=utf-8")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if site.conditional:
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", formatdate(1_700_000_000, usegmt=True))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def sitemap(site: Site, paths: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            + "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths) + "</urlset>").encode()


def bench_env(folder: Path) -> dict[str, str]:
    services = services_env()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_url = urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_CRAWL_REDIS_DB', '12')}"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false", LOG_LEVEL="WARNING",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{(database.path.lstrip('/') or 'customercare')}_bench_crawl")),
        REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, CHANNELS_PREFIX="ccgpt-bench-crawl",
        CHROMA_PATH=str(folder / "chroma"), MEDIA_ROOT=str(folder / "media"), WORKSPACE_POOL_SIZE="0",
        WORKSPACE_POOL_REFILL="off", PYTHONUNBUFFERED="1", URL_IMPORT_ALLOWED_NETWORKS="127.0.0.1/32",
        SOURCE_DELAY="0",
    )
    return env


def _run_row(database_url: str, schema: str, source_id: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT queued_at, finished_at, seconds, status, indexed, unchanged, changed, added, failed, skipped '
            f'FROM "{schema}".documents_sourcerun WHERE source_id = %s ORDER BY id DESC LIMIT 1', (source_id,)
        ).fetchone()
        chunks = conn.execute(f'SELECT coalesce(sum(chunk_count), 0) FROM "{schema}".documents_document').fetchone()[0]
    queued, finished, seconds, status, indexed, unchanged, changed, added, failed, skipped = row
    return {"status": status, "seconds_queued_to_finished": round((finished - queued).total_seconds(), 2),
            "seconds_working": round(seconds, 2), "indexed": indexed, "unchanged": unchanged, "changed": changed,
            "added": added, "failed": failed, "skipped": skipped, "chunks_in_workspace": chunks}


def run(quick: bool = False) -> dict[str, Any]:
    files, corpus = corpus_files(quick=False)
    if quick:
        step = max(1, len(files) // QUICK_PAGES)
        files = files[::step][:QUICK_PAGES]
    pages = {f"/handbook/{path.name}": path.read_bytes() for path in files}
    paths = sorted(pages)
    site = Site(pages)
    site.pages["/sitemap.xml"] = sitemap(site, paths)
    site.pages["/robots.txt"] = b"User-agent: *\nAllow: /\n"
    warm = Site({"/warm.html": b"<html><head><title>Warm</title></head><body><p>Warm up.</p></body></html>"})
    warm.pages["/sitemap.xml"] = sitemap(warm, ["/warm.html"])

    load_before = [round(x, 2) for x in os.getloadavg()]  # the machine is shared: say how busy it was
    folder = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    env = bench_env(folder)
    log = open(folder / "worker.log", "w")
    worker = None
    try:
        _database(env["DATABASE_URL"])
        _flush_redis(env["REDIS_URL"])
        manage(env, "migrate_schemas", "--noinput", "-v", "0")
        manage(env, "setup_platform", "--json")
        workspace = json.loads(manage(env, "create_workspace", "--slug", SLUG, "--name", "Bench Crawl",
                                       "--owner-email", "bench-crawl@example.test", "--plan", "enterprise",
                                       "--json"))
        schema = workspace["schema"]
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning",
                                   "-Q", "default,ingest,ingest_large", "-c", str(WORKER_CONCURRENCY),
                                   "--without-gossip", "--without-mingle"], cwd=BASE_DIR,
                                  env={**env, "EMBEDDING_THREADS": str(worker_threads())}, stdout=log,
                                  stderr=subprocess.STDOUT)

        def command(*args: str) -> dict[str, Any]:
            return json.loads(manage(env, *args, "--workspace", SLUG, "--json", timeout=7200))

        command("crawl", warm.url("/sitemap.xml"), "--sitemap", "--wait", "--timeout", "600")

        crawled = command("crawl", site.url("/sitemap.xml"), "--sitemap", "--max-pages", str(len(paths) + 10),
                          "--wait", "--timeout", "7000")
        full = _run_row(env["DATABASE_URL"], schema, crawled["source_id"])
        full_seconds = full["seconds_queued_to_finished"]

        how_many = math.ceil(len(paths) * CHANGED_SHARE)
        changed = paths[::max(1, len(paths) // how_many)][:how_many]  # spread over the site
        for path in changed:
            site.pages[path] = site.pages[path].replace(
                b"</body>", b"<p>Revised: the bench changed this page to measure a re-sync.</p></body>", 1)
        counts_before = dict(site.counts)
        synced = command("sync_sources", "--source", str(crawled["source_id"]), "--wait", "--timeout", "3600")
        resync = _run_row(env["DATABASE_URL"], schema, crawled["source_id"])
        resync["answers"] = {k: site.counts[k] - counts_before[k] for k in site.counts}

        site.conditional = False  # the same pages, no validators: every page comes back whole
        counts_before = dict(site.counts)
        hashed = command("sync_sources", "--source", str(crawled["source_id"]), "--wait", "--timeout", "3600")
        resync_hash = _run_row(env["DATABASE_URL"], schema, crawled["source_id"])
        resync_hash["answers"] = {k: site.counts[k] - counts_before[k] for k in site.counts}

        ratio = resync["seconds_queued_to_finished"] / full_seconds if full_seconds else None
        return {
            "load_average_before_after": [load_before, [round(x, 2) for x in os.getloadavg()]],
            "corpus": {**corpus, "pages": len(paths), "bytes": sum(len(pages[p]) for p in paths)},
            "settings": {"worker_concurrency": WORKER_CONCURRENCY, "source_concurrency": "default (2)",
                         "source_delay": 0, "embedding_threads": worker_threads()},
            "full_crawl": {**full, "command": crawled,
                           "pages_per_second": round(full["indexed"] / full_seconds, 2) if full_seconds else None,
                           "chunks_per_second": round(full["chunks_in_workspace"] / full_seconds, 1)
                           if full_seconds else None},
            "resync_1_percent_changed": {**resync, "changed_pages": len(changed), "command": synced},
            "resync_ratio_to_full": round(ratio, 4) if ratio is not None else None,
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio is not None and ratio <= TARGET_RATIO,
            "resync_without_validators": {**resync_hash, "command": hashed,
                                          "ratio_to_full": round(resync_hash["seconds_queued_to_finished"]
                                                                 / full_seconds, 4) if full_seconds else None},
        }
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()
        site.close()
        warm.close()
        try:
            _database(env["DATABASE_URL"], drop_only=True)
            _flush_redis(env["REDIS_URL"])
        except Exception:
            pass
        shutil.rmtree(folder, ignore_errors=True)
