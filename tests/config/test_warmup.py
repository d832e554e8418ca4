"""Warm-up on start (issue #22): a web (uvicorn) process and each Celery worker process load what the first answer
needs in a background thread when they start; /readyz says "not ready" while it runs, for at most
WARM_UP_READY_MAX_SECONDS; WARM_UP_ON_START turns it off (off in the test settings). How much it saves is a bench
figure (bench/coldstart.py), not a test."""
from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import LOG_DIR
from tests.live import process_env, start_live_server, start_process

HUNG_AFTER_SECONDS = 240  # a liveness bound: loading a model on a busy shared machine, not a speed claim
PARTS = {"imports", "parsers", "chunking", "tokenizer", "embedder", "vector_client", "stemmer"}


def test_off_by_setting_in_this_process(settings, monkeypatch):
    from config import warmup

    monkeypatch.setattr(warmup, "_state", {"state": "off"})  # whatever another test of this process did
    settings.WARM_UP_ON_START = False
    assert warmup.warm_up_start(process="web") is None
    assert warmup.warm_up_state()["state"] == "off" and not warmup.warm_up_holds_readiness()


def test_the_warm_up_loads_the_model_tokenizer_and_vector_client_in_a_thread(settings, monkeypatch):
    from config import warmup
    from documents import embedding

    settings.WARM_UP_ON_START = True
    monkeypatch.setattr(warmup, "_state", {"state": "off"})
    thread = warmup.warm_up_start(process="web")
    assert thread is not None and thread.daemon and thread.name == "warm-up-web"
    assert warmup.warm_up_start(process="web") is None  # once per process
    thread.join(HUNG_AFTER_SECONDS)
    assert not thread.is_alive(), "the warm-up hung"
    state = warmup.warm_up_state()
    assert state["state"] == "done" and set(state["parts"]) == PARTS, state
    # What the first question asks for is there already: the process's embedder, created by the thread.
    assert any(key[0] == settings.EMBEDDING_BACKEND for key in embedding._embedders)


class StallingEmbeddings:
    """An OpenAI-compatible /embeddings endpoint (an outside vendor, faked as a real HTTP server on loopback) that
    answers only once released: a warm-up that takes as long as the test wants."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                outer.requests += 1
                outer.release.wait(HUNG_AFTER_SECONDS)
                data = json.dumps({"data": [{"index": i, "embedding": [1.0, 0.0, 0.0]}
                                            for i, _ in enumerate(body.get("input", []))]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_readiness_waits_for_the_warm_up_no_longer_than_allowed(settings, monkeypatch, host_client, tmp_path):
    """The gate: while the warm-up runs (its embeddings vendor holds the answer), /readyz is 503 `warm_up` within
    WARM_UP_READY_MAX_SECONDS and 200 past it; done, it holds nothing."""
    from config import warmup

    vendor = StallingEmbeddings()
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_URL = vendor.url
    settings.EMBEDDING_MODEL = "fake-embedder"
    settings.EMBEDDING_DIMENSION = 3
    settings.CHROMA_PATH = tmp_path / "chroma"
    settings.WARM_UP_ON_START = True
    settings.WARM_UP_READY_MAX_SECONDS = 600
    monkeypatch.setattr(warmup, "_state", {"state": "off"})  # this process may have warmed up in another test
    thread = warmup.warm_up_start(process="web")
    try:
        deadline = time.monotonic() + HUNG_AFTER_SECONDS
        while not vendor.requests:
            assert time.monotonic() < deadline, "the warm-up never asked for an embedding"
            time.sleep(0.05)
        assert warmup.warm_up_holds_readiness()
        response = host_client("localhost").get("/readyz")
        assert response.status_code == 503 and response.json()["failed"] == ["warm_up"]
        settings.WARM_UP_READY_MAX_SECONDS = 0  # past the allowance: ready, though still warming
        assert not warmup.warm_up_holds_readiness()
        response = host_client("localhost").get("/readyz")
        assert response.status_code == 200 and warmup.warm_up_state()["state"] == "running"
        settings.WARM_UP_READY_MAX_SECONDS = 600
    finally:
        vendor.release.set()
        thread.join(HUNG_AFTER_SECONDS)
        vendor.close()
    assert warmup.warm_up_state()["state"] == "done" and not warmup.warm_up_holds_readiness()
    assert host_client("localhost").get("/readyz").status_code == 200


def test_a_web_process_warms_up_after_start_and_is_ready_meanwhile(django_db_blocker):
    from django.db import connection

    token = secrets.token_hex(16)
    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="asgi-warm-up",
                                   extra_env={"WARM_UP_ON_START": "true", "OPS_TOKEN": token})
    try:
        deadline = time.monotonic() + HUNG_AFTER_SECONDS
        seen = []
        while True:
            response = server.request("GET", "localhost", "/readyz", headers={"X-Ops-Token": token}, timeout=30)
            body = response.json()
            state = body["warm_up"]
            seen.append((response.status_code, state["state"]))
            if state["state"] == "running":  # not ready yet: the first customer goes to a warm process
                assert response.status_code == 503 and body["failed"] == ["warm_up"], body
                assert body["error"]["code"] == "service_unavailable", body
            else:
                break
            assert time.monotonic() < deadline, f"the web process's warm-up hung:\n{server.process.log_tail()}"
            time.sleep(0.2)
        assert response.status_code == 200 and body["failed"] == [], (seen, body)
        assert state["state"] == "done" and state["process"] == "web" and set(state["parts"]) == PARTS, state
        # The public sees no details.
        assert "warm_up" not in server.request("GET", "localhost", "/readyz", timeout=30).json()
    finally:
        server.process.stop()


def test_each_worker_process_warms_up(django_db_blocker):
    from django.db import connection

    env = process_env(connection.settings_dict, WARM_UP_ON_START="true", LOG_LEVEL="INFO")
    name = f"celery-warm-up-{secrets.token_hex(3)}"
    # A queue nobody sends to: this worker must not take the session's tasks.
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-Q", f"warm-up-{name}",
            "-c", "2", "-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
    worker = start_process(name, argv, env, LOG_DIR)
    try:
        deadline = time.monotonic() + HUNG_AFTER_SECONDS
        while True:
            log = worker.log_path.read_text(errors="replace")
            done = re.findall(r"/([A-Za-z]+-?\d*)\] warm-up done in", log)  # Celery's "INFO/<process>]" prefix
            if len(done) >= 2:
                break
            assert worker.proc.poll() is None, f"the worker exited:\n{worker.log_tail()}"
            assert "warm-up failed" not in log, worker.log_tail()
            assert time.monotonic() < deadline, f"the worker processes' warm-up hung:\n{worker.log_tail()}"
            time.sleep(0.5)
        # One per pool process (-c 2), none in the parent that only forks.
        assert sorted(done) == ["ForkPoolWorker-1", "ForkPoolWorker-2"], done
    finally:
        worker.stop()
