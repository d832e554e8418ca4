"""Warm-up on start (issue #22): a web (uvicorn) process and each Celery worker process load what the first answer
needs in a background thread when they start; /readyz says "not ready" while it runs, for at most
WARM_UP_READY_MAX_SECONDS; WARM_UP_ON_START turns it off (off in the test settings). How much it saves is a bench
figure (bench/coldstart.py), not a test."""
from __future__ import annotations

import re
import secrets
import sys
import time

import pytest

from tests.conftest import LOG_DIR
from tests.live import process_env, start_live_server, start_process

HUNG_AFTER_SECONDS = 240  # a liveness bound: loading a model on a busy shared machine, not a speed claim
PARTS = {"imports", "tokenizer", "embedder", "vector_client", "stemmer"}


def test_off_by_setting_in_this_process(settings):
    from config.warmup import warm_up_start, warm_up_state

    settings.WARM_UP_ON_START = False
    assert warm_up_start(process="web") is None
    assert warm_up_state()["state"] == "off"


def test_the_warm_up_loads_the_model_tokenizer_and_vector_client_in_a_thread(settings):
    from config import warmup
    from documents import embedding

    settings.WARM_UP_ON_START = True
    thread = warmup.warm_up_start(process="web")
    assert thread is not None and thread.daemon and thread.name == "warm-up-web"
    assert warmup.warm_up_start(process="web") is None  # once per process
    thread.join(HUNG_AFTER_SECONDS)
    assert not thread.is_alive(), "the warm-up hung"
    state = warmup.warm_up_state()
    assert state["state"] == "done" and set(state["parts"]) == PARTS, state
    # What the first question asks for is there already: the process's embedder, created by the thread.
    assert any(key[0] == settings.EMBEDDING_BACKEND for key in embedding._embedders)


def test_readiness_waits_for_the_warm_up_no_longer_than_allowed(settings, monkeypatch, host_client):
    """The gate itself: a warm-up that takes long (its work replaced by a wait we release) holds readiness only
    within WARM_UP_READY_MAX_SECONDS."""
    import threading

    from chat import warmup as chat_warmup
    from config import warmup

    release = threading.Event()
    monkeypatch.setattr(chat_warmup, "answer_path_warm_up", lambda: release.wait(HUNG_AFTER_SECONDS) and {})
    monkeypatch.setattr(warmup, "_state", {"state": "off"})
    settings.WARM_UP_ON_START = True
    settings.WARM_UP_READY_MAX_SECONDS = 600
    thread = warmup.warm_up_start(process="web")
    try:
        assert warmup.warm_up_holds_readiness()
        response = host_client("localhost").get("/readyz")
        assert response.status_code == 503 and response.json()["failed"] == ["warm_up"]
        settings.WARM_UP_READY_MAX_SECONDS = 0  # past the allowance: ready, still warming
        assert not warmup.warm_up_holds_readiness()
        response = host_client("localhost").get("/readyz")
        assert response.status_code == 200 and warmup.warm_up_state()["state"] == "running"
    finally:
        release.set()
        thread.join(HUNG_AFTER_SECONDS)
    assert warmup.warm_up_state()["state"] == "done" and not warmup.warm_up_holds_readiness()


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
