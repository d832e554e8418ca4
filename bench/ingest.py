"""`python -m bench ingest [--quick]`: ingestion throughput, end to end, against the raw embedder and a plain
LangChain pipeline, on a real public corpus nobody here wrote.

Corpus (issue #16 asks for a manual of ~1,000 pages): the GIMP 2.10 user manual, English HTML (Debian's
`gimp-help-en`, 685 pages) plus the Debian Administrator's Handbook, en-US HTML (`debian-handbook`, 127 pages):
812 HTML pages written by others (installed with apt-get when missing and we may; whatever is missing is named in the
result). Quick mode takes every n-th file (QUICK_FILES of them).

Measured in one run, on the same machine and the same files:
1. end to end (ours): every file uploaded through the REST API of a real web process (uvicorn) to a real Celery
   worker (`-c 2`, one ONNX thread per process, the queues `make run` starts), until every document is indexed, i.e.
   searchable: chunks/s = chunks / (last indexed_at - first upload). Peak RSS of the web process and of the worker
   (main + children), and the time each stage took, summed over the documents (Document.timings).
2. raw embedder: the same chunks (our parser and chunker on the same files, the texts the pipeline embeds), embedded
   with the configured model in the pipeline's batch size, with nothing else around it: chunks/s, in one single-thread
   process per worker process started together (as the worker runs it: the bar), and in one process with the
   configured threads (before (1) only); the parallel run before and after (1), the bar being their mean. Also
   reported: how much of a batch is padding, and how many chunks repeat a text already seen.
3. baseline: a plain LangChain script - BSHTMLLoader, RecursiveCharacterTextSplitter(1000 chars, 200 overlap),
   Chroma.from_documents with the same embedding model - timed from files to a persisted index, with how many of
   its chunks are longer than the model's 256-token window (their tails are silently not embedded).
Targets (issue #16): (1) >= 1.5 x (3) and >= 0.9 x (2) in chunks/s; the largest worker process <= 700 MB RSS.
Everything runs in a database, Redis db and folders of the bench's own, removed at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench._support import free_port, manage, services_env

BASE_DIR = Path(__file__).resolve().parent.parent
HANDBOOK = Path("/usr/share/doc/debian-handbook/html/en-US")
GIMP_MANUAL = Path("/usr/share/gimp/2.0/help/en")
LICENSES = Path("/usr/share/common-licenses")
SLUG = "bench-ingest"
QUICK_FILES = 60
UPLOAD_THREADS = 3  # like the dashboard's drag-and-drop
TARGET_RATIO = 0.9  # end to end / raw embedder
TARGET_OVER_LANGCHAIN = 1.5  # end to end / plain LangChain script
TARGET_WORKER_RSS_MB = 700  # per worker process
WORKER_CONCURRENCY = 2  # as `make run`


def worker_threads() -> int:
    """ONNX threads per worker process: the cores shared out between the worker's processes (measured on 2 cores:
    two processes with one thread each embed ~2x faster than either process with two threads)."""
    return max(1, (os.cpu_count() or 1) // WORKER_CONCURRENCY)


# --- corpus ------------------------------------------------------------------------------------------------------


def corpus_files(quick: bool) -> tuple[list[Path], dict[str, Any]]:
    parts = {"gimp-help-en": GIMP_MANUAL, "debian-handbook": HANDBOOK}
    missing = [package for package, folder in parts.items() if not folder.is_dir()]
    note: dict[str, Any] = {"name": "GIMP 2.10 user manual (gimp-help-en) + Debian Administrator's Handbook "
                                    "(debian-handbook), English HTML",
                            "paths": [str(folder) for folder in parts.values()]}
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        note["installed_now"] = missing
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    files: list[Path] = []
    for package, folder in parts.items():
        if folder.is_dir():
            found = sorted(p for p in folder.rglob("*.html") if p.is_file() and not p.is_symlink())
            note[f"{package}_pages"] = len(found)
            files += found
        else:
            note.setdefault("missing", []).append(package)
    if not files:
        raise RuntimeError("no public corpus found (install gimp-help-en and debian-handbook)")
    if quick:
        # Every n-th file: a spread of sizes and of both manuals, not just the alphabetically first ones.
        step = max(1, len(files) // QUICK_FILES)
        files = files[::step][:QUICK_FILES]
    note.update(files=len(files), bytes=sum(p.stat().st_size for p in files))
    return files, note


# --- environment -------------------------------------------------------------------------------------------------


def bench_env(folder: Path, port: int) -> dict[str, str]:
    services = services_env()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_url = urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_INGEST_REDIS_DB', '10')}"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false", LOG_LEVEL="WARNING",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{(database.path.lstrip('/') or 'customercare')}_bench_ingest")),
        REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url, CHANNELS_PREFIX="ccgpt-bench-ingest",
        CHROMA_PATH=str(folder / "chroma"), MEDIA_ROOT=str(folder / "media"), PUBLIC_PORT=str(port),
        WORKSPACE_POOL_SIZE="0", WORKSPACE_POOL_REFILL="off", PYTHONUNBUFFERED="1",
    )
    return env


def _database(url: str, *, drop_only: bool = False) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def _flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class RssSampler:
    """Peak resident memory of a process and its children (summed), sampled every 500 ms (a sample costs a few ms of
    CPU, taken from the run it measures), and their CPU seconds."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.cpu_start = {name: self._cpu(process) for name, process in self.processes.items()}
        self.machine_start = psutil.cpu_times()
        self.peak_total = dict.fromkeys(pids, 0)
        self.peak_single = dict.fromkeys(pids, 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import psutil

        while not self.stop.wait(0.5):
            for name, process in self.processes.items():
                try:
                    family = [process, *process.children(recursive=True)]
                    sizes = [p.memory_info().rss for p in family]
                except psutil.Error:
                    continue
                self.peak_total[name] = max(self.peak_total[name], sum(sizes))
                self.peak_single[name] = max(self.peak_single[name], max(sizes))

    def mark(self) -> None:
        """CPU is counted from here (after the warm-up)."""
        import psutil

        self.cpu_start = {name: self._cpu(process) for name, process in self.processes.items()}
        self.machine_start = psutil.cpu_times()

    @staticmethod
    def _cpu(process: Any) -> float:
        """CPU seconds (user + system) of a process and its live children."""
        import psutil

        total = 0.0
        try:
            family = [process, *process.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for member in family:
            try:
                times = member.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def result(self) -> dict[str, Any]:
        import psutil

        self.stop.set()
        self.thread.join(timeout=2)
        mb = 1024 * 1024
        machine = psutil.cpu_times()
        busy = sum(getattr(machine, f) - getattr(self.machine_start, f) for f in machine._fields if f not in ("idle", "iowait"))
        out: dict[str, Any] = {name: {"peak_rss_mb": round(self.peak_total[name] / mb, 1),
                                      "largest_process_peak_rss_mb": round(self.peak_single[name] / mb, 1),
                                      "cpu_seconds": round(self._cpu(process) - self.cpu_start[name], 1)}
                               for name, process in self.processes.items()}
        out["machine_busy_cpu_seconds"] = round(busy, 1)
        return out


# --- 1. end to end ------------------------------------------------------------------------------------------------


def _statuses(database_url: str, schema: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT status, count(*), coalesce(sum(chunk_count), 0) FROM "{schema}".documents_document GROUP BY status'
        ).fetchall()
        last = conn.execute(f'SELECT max(indexed_at) FROM "{schema}".documents_document').fetchone()[0]
    return {"counts": {status: n for status, n, _ in rows}, "chunks": sum(c for s, _, c in rows if s == "indexed"),
            "last_indexed_at": last}


def end_to_end(files: list[Path], quick: bool) -> dict[str, Any]:
    import requests

    folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    port = free_port()
    env = bench_env(folder, port)
    procs: list[subprocess.Popen] = []
    log = open(folder / "processes.log", "w")
    try:
        _database(env["DATABASE_URL"])
        _flush_redis(env["REDIS_URL"])
        manage(env, "migrate_schemas", "--noinput", "-v", "0")
        manage(env, "setup_platform", "--json")
        workspace = json.loads(manage(env, "create_workspace", "--slug", SLUG, "--name", "Bench Ingest",
                                       "--owner-email", "bench-ingest@example.test", "--plan", "pro", "--json"))
        key = json.loads(manage(env, "create_api_key", "--workspace", SLUG, "--name", "bench", "--json"))["key"]
        web = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning", "--ws-per-message-deflate", "false"],
                               cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(web)
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning",
                                   "-Q", "default,ingest,ingest_large", "-c", str(WORKER_CONCURRENCY),
                                   "--without-gossip", "--without-mingle"], cwd=BASE_DIR,
                                  env={**env, "EMBEDDING_THREADS": str(worker_threads())}, stdout=log,
                                  stderr=subprocess.STDOUT)
        procs.append(worker)
        session = requests.Session()
        host = f"{SLUG}.localhost:{port}"
        headers = {"Host": host, "Authorization": f"Api-Key {key}"}
        base = f"http://127.0.0.1:{port}/api/v1/documents/"
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(base, headers=headers, timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or web.poll() is not None:
                raise RuntimeError("the web process did not come up")
            time.sleep(0.2)
        sampler = RssSampler({"web": web.pid, "worker": worker.pid})
        schema = workspace["schema"]
        # Warm-up (model loading in both worker processes), not counted: two tiny documents at once.
        for index in range(2):
            session.post(base, headers=headers, files={"file": (f"warm-{index}.txt", f"warm up {index}".encode())},
                         timeout=60).raise_for_status()
        _wait_all(env["DATABASE_URL"], schema, 2, timeout=300)

        sampler.mark()
        started_wall = time.time()
        started = time.perf_counter()

        def send(path: Path) -> int:
            with open(path, "rb") as handle:
                response = session.post(base, headers=headers, files={"file": (path.name, handle)}, timeout=120)
            return response.status_code

        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            codes = list(pool.map(send, files))
        uploaded_seconds = time.perf_counter() - started
        state = _wait_all(env["DATABASE_URL"], schema, 2 + sum(1 for c in codes if c == 201),
                          timeout=3600 if not quick else 900)
        memory = sampler.result()
        chunks = state["chunks"]
        warm = 2  # the warm-up documents have one chunk each
        seconds = state["last_indexed_at"].timestamp() - started_wall
        return {
            "documents": sum(1 for c in codes if c == 201), "upload_status_codes": sorted(set(codes)),
            "failed": state["counts"].get("failed", 0), "chunks": chunks - warm, "seconds": round(seconds, 2),
            "upload_seconds": round(uploaded_seconds, 2),
            "chunks_per_second": round((chunks - warm) / seconds, 2) if seconds > 0 else None,
            "worker": f"celery -c {WORKER_CONCURRENCY} -Q default,ingest,ingest_large, "
                      f"EMBEDDING_THREADS={worker_threads()} (as `make run`)",
            "stage_seconds_summed_over_documents": _stage_totals(env["DATABASE_URL"], schema),
            "memory": memory,
        }
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        try:
            _database(env["DATABASE_URL"], drop_only=True)
            _flush_redis(env["REDIS_URL"])
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _stage_totals(database_url: str, schema: str) -> dict[str, float]:
    import psycopg

    totals: dict[str, float] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(f'SELECT timings FROM "{schema}".documents_document WHERE original_name NOT LIKE %s',
                            ("warm-%",)).fetchall()
    for (timings,) in rows:
        for stage, ms in (timings or {}).items():
            totals[stage] = totals.get(stage, 0.0) + ms / 1000
    return {stage: round(value, 2) for stage, value in sorted(totals.items())}


def _wait_all(database_url: str, schema: str, expected: int, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = _statuses(database_url, schema)
        done = state["counts"].get("indexed", 0) + state["counts"].get("failed", 0)
        if done >= expected:
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingestion did not finish in {timeout} s: {state['counts']}")
        time.sleep(0.5)  # the finish time is the last document's indexed_at, not when this loop notices it


# --- 2. the raw embedder, and 3. the LangChain baseline (each in a process of its own) ----------------------------


def _child_env() -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1"}


def _listing(files: list[Path]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as listing:
        json.dump([str(p) for p in files], listing)
    return listing.name


def _child(kind: str, files: list[Path]) -> dict[str, Any]:
    listing = _listing(files)
    try:
        result = subprocess.run([sys.executable, "-m", "bench.ingest", kind, listing], cwd=BASE_DIR,
                                env=_child_env(), capture_output=True, text=True, timeout=7200)
    finally:
        os.unlink(listing)
    if result.returncode != 0:
        raise RuntimeError(f"bench.ingest {kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def raw_embedder_parallel(files: list[Path], processes: int) -> dict[str, Any]:
    """The embedder in `processes` processes of one thread each, started together on shares of the same texts:
    the machine's embedding capacity, the way a worker with that many processes can use it."""
    listing = _listing(files)
    children = [subprocess.Popen([sys.executable, "-m", "bench.ingest", "raw", listing, "1", str(part),
                                  str(processes)], cwd=BASE_DIR, env=_child_env(), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for part in range(processes)]
    try:
        for child in children:  # each has parsed, chunked and warmed up
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("raw embedder child failed")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [json.loads(child.stdout.readline()) for child in children]
    finally:
        for child in children:
            child.wait(timeout=60)
        os.unlink(listing)
    chunks = sum(o["chunks"] for o in outputs)
    seconds = max(o["seconds"] for o in outputs)
    return {"processes": processes, "threads_each": 1, "chunks": chunks, "seconds": round(seconds, 2),
            "chunks_per_second": round(chunks / seconds, 2)}


def raw_embedder(paths: list[str], threads: int = 0, part: int = 0, parts: int = 1) -> dict[str, Any]:
    """Our parser and chunker on the files (not timed), then the embedder alone on exactly those texts (timed)."""
    import django

    django.setup()
    from documents.chunking import document_chunk
    from documents.embedding import MiniLMOnnxEmbedder, embedder
    from documents.parsers import content_sniff_path, document_parse
    from documents.pipeline import EMBED_BATCH

    texts: list[str] = []
    per_document: list[int] = []
    for raw in paths:
        path = Path(raw)
        kind = content_sniff_path(path=path, filename=path.name)
        parsed = document_parse(path=path, kind=kind, filename=path.name)
        title = parsed.title if parsed.title and parsed.title != "Untitled" else path.stem
        drafts = document_chunk(parsed=parsed, title=title)
        texts += [draft.embed_text or draft.text for draft in drafts]
        per_document.append(len(drafts))
    model = MiniLMOnnxEmbedder(threads=threads) if threads else embedder()
    shape = _batch_shape(texts, per_document, model) if part == 0 else {}
    texts = texts[part::parts]
    model.embed(texts[:8])  # warm-up
    if parts > 1:  # wait for the others
        print("ready", flush=True)
        sys.stdin.readline()
    started = time.perf_counter()
    for start in range(0, len(texts), EMBED_BATCH):
        model.embed(texts[start:start + EMBED_BATCH])
    seconds = time.perf_counter() - started
    return {"model": model.name, "threads": getattr(model, "threads", None), "chunks": len(texts),
            "seconds": round(seconds, 2), "chunks_per_second": round(len(texts) / seconds, 2), **shape}


def _batch_shape(texts: list[str], per_document: list[int], model: Any) -> dict[str, Any]:
    """How the pipeline's model calls look on this corpus: tokens per chunk, batch sizes and the share of padding when
    each document's chunks are embedded on their own (as the pipeline does) and when all are pooled across documents;
    and how many chunks repeat a text seen before (what reuse by digest saves)."""
    from documents.embedding import BATCH_LENGTH_RATIO, length_batches

    lengths = [min(model.count_tokens(text) + 2, model.max_tokens) for text in texts]

    def shape(groups: list[list[int]]) -> dict[str, float]:
        real = padded = calls = 0
        for group in groups:
            for batch in length_batches([lengths[i] for i in group], model.batch_size, BATCH_LENGTH_RATIO):
                real += sum(lengths[group[i]] for i in batch)
                padded += len(batch) * lengths[group[batch[0]]]
                calls += 1
        return {"calls": calls, "mean_batch": round(len(texts) / max(calls, 1), 2),
                "padding_share": round(1 - real / max(padded, 1), 4)}

    groups, start = [], 0
    for count in per_document:
        groups.append(list(range(start, start + count)))
        start += count
    return {"mean_tokens_per_chunk": round(sum(lengths) / max(len(lengths), 1), 1),
            "batches_per_document": shape(groups), "batches_across_documents": shape([list(range(len(texts)))]),
            "repeated_texts": len(texts) - len(set(texts))}


def langchain_baseline(paths: list[str]) -> dict[str, Any]:
    """The plain LangChain way: loader, character splitter, Chroma; with the same embedding model."""
    import django

    django.setup()
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import BSHTMLLoader, TextLoader
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from documents.embedding import embedder, wordpiece_counter

    model = embedder()

    class SameModel(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.embed(texts)

        def embed_query(self, text: str) -> list[float]:
            return model.embed([text])[0]

    model.embed(["warm up"])
    folder = tempfile.mkdtemp(prefix="bench-langchain-")
    try:
        started = time.perf_counter()
        documents = []
        for raw in paths:
            loader = BSHTMLLoader(raw) if raw.endswith((".html", ".htm")) else TextLoader(raw, autodetect_encoding=True)
            documents += loader.load()
        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
        chunks = splitter.split_documents(documents)
        Chroma.from_documents(chunks, SameModel(), persist_directory=folder, collection_name="baseline")
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    count = wordpiece_counter()
    too_long = sum(1 for chunk in chunks if count(chunk.page_content) + 2 > model.max_tokens)
    return {"loader": "BSHTMLLoader", "splitter": "RecursiveCharacterTextSplitter(1000, 200)",
            "store": "langchain_chroma.Chroma (persistent)", "chunks": len(chunks), "seconds": round(seconds, 2),
            "chunks_per_second": round(len(chunks) / seconds, 2),
            "chunks_longer_than_model_window": too_long,
            "share_longer_than_model_window": round(too_long / max(len(chunks), 1), 3)}


# --- the bench ---------------------------------------------------------------------------------------------------


def run(quick: bool) -> dict:
    files, corpus = corpus_files(quick)
    result: dict[str, Any] = {"corpus": corpus, "load_average_before": [round(x, 2) for x in os.getloadavg()],
                              "cpus": os.cpu_count()}
    # The raw embedder: one single-thread process per worker process (what the worker's processes can get out of the
    # machine) before and after the end-to-end run, and once one process with the configured threads (the other way
    # to use two cores, and how the LangChain script runs the model).
    raw_runs = {"before_one_process": _child("raw", files)}
    raw_runs["before_parallel"] = raw_embedder_parallel(files, WORKER_CONCURRENCY)
    result["end_to_end"] = end_to_end(files, quick)
    raw_runs["after_parallel"] = raw_embedder_parallel(files, WORKER_CONCURRENCY)
    result["raw_embedder"] = raw_runs
    result["langchain_baseline"] = _child("langchain", files)
    e2e = result["end_to_end"]
    # The bar: the raw embedder as the worker's processes run it (one single-thread process each), averaged over
    # before and after, since the end-to-end run lay between the two (other load on the machine moves both).
    parallel = (raw_runs["before_parallel"]["chunks_per_second"] + raw_runs["after_parallel"]["chunks_per_second"]) / 2
    result["raw_embedder_chunks_per_second"] = round(parallel, 2)
    result["ratio_end_to_end_to_raw_embedder"] = round(e2e["chunks_per_second"] / parallel, 3)
    result["ratio_end_to_end_to_raw_embedder_one_process"] = round(
        e2e["chunks_per_second"] / raw_runs["before_one_process"]["chunks_per_second"], 3)
    # Load-independent view of the same thing: the share of the worker's wall time that went into embedding.
    embed_seconds = e2e["stage_seconds_summed_over_documents"].get("embed", 0.0) / WORKER_CONCURRENCY
    result["embedding_share_of_end_to_end_time"] = round(embed_seconds / e2e["seconds"], 3)
    baseline = result["langchain_baseline"]
    result["ratio_end_to_end_to_langchain"] = round(e2e["chunks_per_second"] / baseline["chunks_per_second"], 3)
    result["langchain_seconds_over_ours"] = round(baseline["seconds"] / e2e["seconds"], 3)
    worker_rss = e2e["memory"]["worker"]["largest_process_peak_rss_mb"]
    result["targets"] = {
        "end_to_end_over_raw_embedder": {"target": TARGET_RATIO, "measured": result["ratio_end_to_end_to_raw_embedder"],
                                         "met": result["ratio_end_to_end_to_raw_embedder"] >= TARGET_RATIO},
        "end_to_end_over_langchain": {"target": TARGET_OVER_LANGCHAIN,
                                      "measured": result["ratio_end_to_end_to_langchain"],
                                      "met": result["ratio_end_to_end_to_langchain"] >= TARGET_OVER_LANGCHAIN},
        "worker_process_peak_rss_mb": {"target": TARGET_WORKER_RSS_MB, "measured": worker_rss,
                                       "met": worker_rss <= TARGET_WORKER_RSS_MB},
    }
    result["same_chunks"] = all(run_["chunks"] == e2e["chunks"] for run_ in raw_runs.values())
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


if __name__ == "__main__":
    kind, listing = sys.argv[1], sys.argv[2]
    names = json.loads(Path(listing).read_text())
    if kind == "raw":
        extra = [int(v) for v in sys.argv[3:6]]
        output = raw_embedder(names, *extra)
    else:
        output = langchain_baseline(names)
    print(json.dumps(output), flush=True)
