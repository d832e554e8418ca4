"""Fault suites (issue #9): the real processes of the product, and a Redis of their own that the tests may stop and
start again (never the machine's shared Redis: other runs use it).

`private_redis` is a redis-server on a free port in a temporary folder, with nothing on disk (`--save ""
--appendonly no`): a restart loses everything, as a crashed cache node would. `private_stack` is an ASGI server and a
Celery worker (with its beat) whose every Redis use — cache, channel layer, chat event log, broker — goes to it:
config/settings/test.py derives REDIS_URL (and from it CACHES, CHANNEL_LAYERS and CELERY_BROKER_URL) from the
REDIS_URL of the environment.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import LOG_DIR
from tests.live import (
    LiveServer, ManagedProcess, database_url, free_port, process_env, start_live_server, start_process,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class PrivateRedis:
    port: int
    folder: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def test_db(self) -> int:
        """The db the processes really use: config/settings/test.py puts TEST_REDIS_DB into REDIS_URL's path."""
        return int(os.environ.get("TEST_REDIS_DB", "1"))

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.folder / "redis.log", "a")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop only our own redis-server, by its pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def is_up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


@contextmanager
def private_redis_server() -> Iterator[PrivateRedis]:
    folder = Path(tempfile.mkdtemp(prefix="ccgpt-faults-redis-"))
    server = PrivateRedis(port=free_port(), folder=folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    with private_redis_server() as server:
        yield server


def private_env(private_redis: PrivateRedis, **extra: str) -> dict[str, str]:
    """What a process needs to use the private Redis for everything (cache, channels, event log, broker)."""
    return {"REDIS_URL": private_redis.url, **extra}


# PostgreSQL sees these as application_name, so a test can cut exactly these processes' connections.
ASGI_APPLICATION_NAME = "ccgpt-faults-asgi"
WORKER_APPLICATION_NAME = "ccgpt-faults-worker"


def named_database_url(settings_dict: dict, application_name: str) -> str:
    url = database_url(settings_dict)
    return f"{url}{'&' if '?' in url else '?'}application_name={application_name}"


def backends_terminate(application_name: str) -> int:
    """Cut every connection of `application_name` to this run's own test database (never another database, never
    this test process's own connection). Returns how many were cut."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
            [application_name],
        )
        return int(cursor.fetchone()[0])


def backends_count(application_name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = %s", [application_name])
        return int(cursor.fetchone()[0])


@dataclass
class WorkerRestart:
    """A worker of the stack that exited and was started again by the supervisor."""
    at: str  # when the supervisor saw it gone (UTC)
    exit_code: int | None
    node: str
    test: str  # the test running then ("" between tests)
    log_tail: str
    replacement: str = ""  # the new worker's node, once it answers


@dataclass
class Stack:
    redis: PrivateRedis
    server: LiveServer
    worker: ManagedProcess
    worker_node: str
    earlier_workers: list[ManagedProcess] = field(default_factory=list)  # replaced by the supervisor below
    restarts: list[WorkerRestart] = field(default_factory=list)
    restarting: bool = False  # the supervisor is starting a replacement
    current_test: str = ""
    disturbed: bool = False  # the last test was allowed to break the worker: check it answers before the next

    def worker_log_text(self) -> str:
        """The logs of every worker this stack ran, oldest first."""
        return "".join(w.log_path.read_text(errors="replace") for w in [*self.earlier_workers, self.worker])


# Every supervised stack of the session, for the terminal summary.
SUPERVISED: list[Stack] = []


def _pinged(control, node: str) -> bool:
    try:
        return any(f"{node}@" in list(reply)[0] for reply in control.control.ping(timeout=1.0))
    except Exception:  # the private Redis is down or restarting (a fault test's doing): not up yet
        return False


def start_private_worker(settings_dict: dict, redis_server: PrivateRedis, *, name: str, **env: str) -> tuple[ManagedProcess, str]:
    """A Celery worker with an embedded beat (-B) on the private Redis; waits until it answers a ping there."""
    from celery import Celery

    node = f"{name}-{secrets.token_hex(3)}"
    schedule = redis_server.folder / f"beat-{node}"
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "-s", str(schedule), "-l", "info",
            "-Q", "default,ingest,ingest_large", "-c", "2", "-n", f"{node}@%h", "--without-gossip", "--without-mingle"]
    worker = start_process(node, argv, process_env(settings_dict, **private_env(redis_server, **env)), LOG_DIR)
    # Not the current app: a Celery() made current would take over this test process's own task sending.
    control = Celery(broker=f"redis://127.0.0.1:{redis_server.port}/{redis_server.test_db}", set_as_current=False)
    try:
        deadline = time.monotonic() + 90
        while True:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker {node} exited:\n{worker.log_tail()}")
            if _pinged(control, node):
                return worker, node
            if time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(f"worker {node} did not come up:\n{worker.log_tail()}")
    finally:
        control.close()


@pytest.fixture(scope="session")
def private_stack(private_redis, django_db_setup, django_db_blocker) -> Iterator[Stack]:
    """An ASGI server and a Celery worker (with beat) of our own, on the private Redis. The worker re-sends
    documents stalled for more than 6 s (checked every 2 s), so a job lost with Redis comes back within the test."""
    from django.db import connection

    with django_db_blocker.unblock():
        server = start_live_server(connection.settings_dict, LOG_DIR, name="faults-asgi", extra_env=private_env(
            private_redis, DATABASE_URL=named_database_url(connection.settings_dict, ASGI_APPLICATION_NAME)))
        try:
            worker, node = start_private_worker(
                connection.settings_dict, private_redis, name="faults-worker",
                DATABASE_URL=named_database_url(connection.settings_dict, WORKER_APPLICATION_NAME),
                DOCUMENT_STALLED_AFTER="6", DOCUMENT_STALLED_SWEEP_EVERY="2", DOCUMENT_RETRY_BACKOFF_MAX="4",
                EMBEDDING_THREADS="1",  # two processes on a shared 2-core machine: no oversubscription
            )
        except BaseException:
            server.process.stop()
            raise
    stack = Stack(redis=private_redis, server=server, worker=worker, worker_node=node)
    SUPERVISED.append(stack)
    stopping = threading.Event()
    supervisor = threading.Thread(target=_supervise, args=(stack, dict(connection.settings_dict), stopping),
                                  name="faults-worker-supervisor", daemon=True)
    supervisor.start()
    yield stack
    stopping.set()
    supervisor.join(timeout=120)
    stack.worker.stop()
    server.process.stop()


def _supervise(stack: Stack, settings_dict: dict, stopping: threading.Event) -> None:
    """What the deployment's supervisor does (docker-compose `restart: unless-stopped`): start the worker again when
    it exits. Celery 5.7 / kombu 5.7 can exit on a broker drop while holding unacknowledged messages
    ("AttributeError: 'NoneType' object has no attribute 'hostname'", upstream; docs/faults.md). The product's part —
    jobs are redelivered or re-sent by the sweeper, and documents end indexed exactly once — is what the tests check.

    Never silently: every exit is recorded on the stack (time, exit code, the test running, the log tail), printed in
    the terminal summary, and fails a test that neither kills Redis nor the worker (`_worker_stays_up`)."""
    recorded: ManagedProcess | None = None
    while not stopping.wait(0.5):
        if stack.worker.proc.poll() is None:
            continue
        replaced = stack.worker
        stack.restarting = True
        try:  # what a container restart does: the dead worker's children (pool, embedded beat) go with it
            os.killpg(replaced.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if replaced is not recorded:  # once per exit, however many attempts the replacement takes
            recorded = replaced
            stack.restarts.append(WorkerRestart(
                at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), exit_code=replaced.proc.returncode,
                node=stack.worker_node, test=stack.current_test, log_tail=replaced.log_tail(40),
            ))
        try:
            stack.worker, stack.worker_node = start_private_worker(
                settings_dict, stack.redis, name="faults-worker",
                DATABASE_URL=named_database_url(settings_dict, WORKER_APPLICATION_NAME),
                DOCUMENT_STALLED_AFTER="6", DOCUMENT_STALLED_SWEEP_EVERY="2", DOCUMENT_RETRY_BACKOFF_MAX="4",
                EMBEDDING_THREADS="1",
            )
            stack.earlier_workers.append(replaced)
            stack.restarts[-1].replacement = stack.worker_node
            stack.restarting = False
        except Exception:  # the broker is still down (any error of starting): try again, as a supervisor would
            time.sleep(0.5)
            continue


def worker_answers(stack: Stack, timeout: float = 1.0) -> bool:
    """The stack's current worker answers a ping on the private broker."""
    from celery import Celery

    control = Celery(broker=f"redis://127.0.0.1:{stack.redis.port}/{stack.redis.test_db}", set_as_current=False)
    try:
        node = stack.worker_node
        return any(f"{node}@" in list(reply)[0] for reply in control.control.ping(timeout=timeout, limit=1))
    except Exception:  # the broker is not reachable (yet)
        return False
    finally:
        control.close()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "worker_may_restart: the test kills the fault suites' Celery worker on purpose")


WORKER_DEAF_RESTART_AFTER = 15  # seconds a disturbed worker may fail to answer a ping before it is restarted


@pytest.fixture(autouse=True)
def _worker_stays_up(request) -> Iterator[None]:
    """A test on the private stack that kills neither Redis (`redis_restored`) nor the worker (`worker_may_restart`)
    must end with the worker it started with: a crash there is a bug, not noise. Before such a test, a worker that
    the previous test was allowed to break is given time to come back (bounded) and must answer a ping."""
    if "private_stack" not in request.fixturenames:
        yield
        return
    stack: Stack = request.getfixturevalue("private_stack")
    may_restart = "redis_restored" in request.fixturenames or request.node.get_closest_marker("worker_may_restart")
    if not may_restart:
        deadline = time.monotonic() + 120
        deaf_since: float | None = None
        while (stack.restarting or stack.worker.proc.poll() is not None
               or (stack.disturbed and not worker_answers(stack))):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not come back after the previous test:\n{stack.worker.log_tail()}")
            if stack.disturbed and not stack.restarting and stack.worker.proc.poll() is None:
                # Running but deaf to control messages: after broker restarts kombu may not subscribe its pidbox again
                # (tasks still flow). A deployment's liveness probe restarts such a worker; so does this one, and the
                # supervisor records the restart (between tests, not against the next one).
                deaf_since = deaf_since or time.monotonic()
                if time.monotonic() - deaf_since > WORKER_DEAF_RESTART_AFTER:
                    stack.worker.stop(signal.SIGKILL)
                    deaf_since = None
            time.sleep(0.2)
        stack.disturbed = False
    before, worker = len(stack.restarts), stack.worker
    stack.current_test = request.node.nodeid
    try:
        yield
    finally:
        stack.current_test = ""
    if may_restart:
        stack.disturbed = True
        return
    # The supervisor looks every 0.5 s: an exit in the test's last moment is seen here, not yet there.
    crashed = [f"{r.at} exit code {r.exit_code} ({r.node}):\n{r.log_tail}" for r in stack.restarts[before:]]
    if not crashed and (stack.worker is not worker or worker.proc.poll() is not None):
        crashed = [f"exit code {worker.proc.poll()} ({worker.name}):\n{worker.log_tail()}"]
    if crashed:
        pytest.fail("the Celery worker exited during a test that disturbs neither Redis nor the worker (a bug, not "
                    "noise):\n" + "\n".join(crashed), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not SUPERVISED:
        return
    restarts = [restart for stack in SUPERVISED for restart in stack.restarts]
    terminalreporter.section("fault suites: Celery worker restarts")
    terminalreporter.write_line(f"{len(restarts)} restart(s) of the private stack's worker by its supervisor")
    for restart in restarts:
        terminalreporter.write_line(
            f"- {restart.at} {restart.node} exited with code {restart.exit_code} during "
            f"{restart.test or '(between tests)'}; replaced by {restart.replacement or '(nothing: not back)'}")
        for line in restart.log_tail.splitlines()[-12:]:
            terminalreporter.write_line(f"    {line}")


@pytest.fixture(scope="session")
def knowledge(django_db_setup, django_db_blocker):
    """A workspace whose knowledge base answers the router questions of tests/chat/test_protocol.py (built-in
    answerer)."""
    from tests.chat.test_protocol import MANUAL, knowledge_seed
    from tests.factories import workspace_with_owner

    with django_db_blocker.unblock():
        workspace = workspace_with_owner(name="Faults Router Support")
        knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))
        return workspace


@pytest.fixture
def redis_restored(private_redis) -> Iterator[PrivateRedis]:
    """Whatever a test did to the private Redis, the next test finds it running."""
    yield private_redis
    if not private_redis.is_up():
        private_redis.stop()
        private_redis.start()


def wait_until(condition, timeout: float, every: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(message or f"not true within {timeout} s")
        time.sleep(every)


# --- pausing a process at an exact statement: a lock this test holds, which that statement waits on ---------------
def quoted(schema: str, model: Any) -> str:
    return f'"{schema}"."{model._meta.db_table}"'


class Blockers:
    """Transactions of this test's own that hold the locks a stage of the server waits on."""

    def __init__(self, settings_dict: dict[str, Any]) -> None:
        self.dsn = database_url(settings_dict)
        self.open: list[psycopg.Connection] = []

    def hold(self, sql: str, params: tuple[Any, ...] = ()) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, application_name="ccgpt-faults-blocker")
        conn.execute(sql, params)  # psycopg 3 opens a transaction: the lock stays until rollback
        self.open.append(conn)
        return conn

    def let_go(self, conn: psycopg.Connection) -> None:
        conn.rollback()
        conn.close()
        self.open.remove(conn)

    def close(self) -> None:
        for conn in list(self.open):
            self.let_go(conn)


def server_waits_on(pattern: str, timeout: float = 30, application_name: str = ASGI_APPLICATION_NAME) -> None:
    """Until a backend of `application_name` (the private ASGI server by default) waits on a lock in a statement
    matching `pattern` (ILIKE)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s "
                "AND wait_event_type = 'Lock' AND query ILIKE %s", [application_name, pattern])
            if cursor.fetchone()[0]:
                return
        assert time.monotonic() < deadline, f"the server never reached the statement {pattern!r}"
        time.sleep(0.05)
