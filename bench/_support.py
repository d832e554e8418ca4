"""What the socket benchmarks (bench/chat.py, bench/widget.py, bench/load.py) share: an environment of their own
(a database and a Redis db per bench, folders under .data/), the database's preparation and the seed subprocess, a
uvicorn server process they can measure (RSS, CPU), an RSS sampler, percentiles, bounded gathering, the small
knowledge base the answers come from, and the workspace's clean-up.

The benchmark modules run Django only in subprocesses (seeding, the servers), so nothing here imports Django at
module level.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CCGPT_DATA_DIR", BASE_DIR / ".data"))
PASSWORD = "Bench-password-4711"
CONNECT_CONCURRENCY = 100
HUGE_RATE = "1000000/m"
# The widget's per-IP / per-embed / per-workspace limits: one client IP plays every visitor in a bench.
WIDGET_RATE_SETTINGS = ("WIDGET_RATE_HTTP_IP", "WIDGET_RATE_HTTP_EMBED", "WIDGET_RATE_HTTP_WORKSPACE",
                        "WIDGET_RATE_SESSION_IP", "WIDGET_RATE_SOCKET_IP", "WIDGET_RATE_MESSAGE_IP",
                        "WIDGET_RATE_MESSAGE_EMBED", "WIDGET_RATE_MESSAGE_WORKSPACE")

DOCUMENTS = [
    ("Acme Router X200 manual", """# Acme Router X200 manual

## Resetting the admin password

To reset the admin password of the Acme Router X200, hold the recessed reset button on the back panel for ten
seconds until the power light blinks amber. The router restarts with the factory password printed on the label under
the device. Log in at http://192.168.8.1 and choose a new admin password right away.

## Firmware updates

The X200 checks for firmware updates every night at 3 a.m. To update by hand, open Settings, then System, then
Firmware, and press Check now. Never unplug the router while the firmware update runs.

## Wireless channels

The X200 picks the least crowded wireless channel at start-up. To pin a channel, open Settings, then Wireless, and
choose a channel from 1 to 11 for 2.4 GHz or from 36 to 165 for 5 GHz.
"""),
    ("Warranty and returns", """# Warranty and returns

## Warranty

Every Acme router comes with a three-year warranty covering hardware faults. Keep your receipt: the warranty claim
form asks for the purchase date and the serial number printed on the label.

## Returns

You can return a router within 30 days of delivery for a full refund if it is unused and in its original box.
Print the prepaid return label from your account page and drop the parcel at any post office.
"""),
    ("Shipping", """# Shipping

Orders placed before 2 p.m. on a working day ship the same day. Standard delivery takes two to four working days;
express delivery arrives the next working day. Tracking links are emailed as soon as the parcel leaves our
warehouse. We ship to every country of the European Union.
"""),
]
QUESTIONS = [
    "How do I reset the admin password of the X200 router?",
    "How long is the warranty on the router?",
    "How can I update the firmware by hand?",
    "How long does standard delivery take?",
    "Can I return a router I do not want?",
    "How do I choose a wireless channel?",
]


# --- environment: a database, Redis db and folders of the bench's own ------------------------------------------
def services_env() -> dict[str, str]:
    """DATABASE_URL / REDIS_URL of the local services (.data/services.env), the process environment winning."""
    values: dict[str, str] = {}
    env_file = DATA_DIR / "services.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    values.update({k: v for k, v in os.environ.items() if k in ("DATABASE_URL", "REDIS_URL")})
    return values


def bench_env(*, name: str, redis_db_variable: str, redis_db_default: int, folder: Path,
              **extra: str) -> dict[str, str]:
    """The environment of a bench's subprocesses: database `<db>_bench_<name>`, the Redis db in
    `redis_db_variable` (else `redis_db_default`), files under `folder`, plus `extra` settings."""
    services = services_env()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    database_name = f"{database.path.lstrip('/') or 'customercare'}_bench_{name}"
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_DEBUG="false",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{database_name}")),
        REDIS_URL=urlunsplit(redis._replace(path=f"/{os.environ.get(redis_db_variable, str(redis_db_default))}")),
        CHROMA_PATH=str(folder / "chroma"),
        MEDIA_ROOT=str(folder / "media"),
        LOG_LEVEL="WARNING",
        WORKSPACE_POOL_SIZE="1",
        WORKSPACE_POOL_REFILL="inline",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def widget_limits_raised() -> dict[str, str]:
    return {setting: HUGE_RATE for setting in WIDGET_RATE_SETTINGS}


def database_create(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def manage(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def database_prepare(env: dict[str, str]) -> None:
    """The bench's database exists, is migrated and has the platform's rows (plans, the public tenant)."""
    database_create(env["DATABASE_URL"])
    manage(env, "migrate_schemas", "--noinput", "-v", "0")
    manage(env, "setup_platform", "--json")


def seed_run(env: dict[str, str], module: str, *args: str, command: str = "seed",
             timeout: float = 1800) -> dict[str, Any]:
    """`python -m <module> <command> <args>` (Django set up there), whose last stdout line is JSON."""
    result = subprocess.run([sys.executable, "-m", module, command, *args], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{module} {command} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def knowledge_ingest() -> None:
    """(seed subprocess, inside the workspace's schema) DOCUMENTS through the real ingestion pipeline."""
    from documents import pipeline
    from documents import services as document_services

    for title, text in DOCUMENTS:
        document = document_services.document_create_text(title=title, text=text, markdown=True)
        document.refresh_from_db()
        outcome = pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token)
        if outcome.result != "indexed":
            raise RuntimeError(f"{title}: {outcome.result}")


def workspace_delete(env: dict[str, str], slug: str, attempts: int = 3) -> str | None:
    """Delete the bench workspace (schema, vectors, files, its Redis keys); None, or the last error. The servers'
    connections may take a moment to go away, so a failure is retried; a leftover in the bench's own database would
    be harmless."""
    error = None
    for attempt in range(attempts):
        try:
            manage(env, "delete_workspace", "--slug", slug, "--yes", "--json", timeout=300)
            return None
        except Exception as exc:  # noqa: BLE001
            error = str(exc)[-1500:]
            if attempt + 1 < attempts:
                time.sleep(5)
    return error


# --- servers -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One uvicorn process (no workers, no per-message deflate), its log in `folder`/<name>.log."""

    def __init__(self, app: str, env: dict[str, str], name: str, *, folder: Path, factory: bool = False) -> None:
        self.port = free_port()
        self.log = folder / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                "--ws-per-message-deflate", "false", "--log-level", "warning", "--backlog", "4096",
                "--timeout-keep-alive", "30", *(["--factory"] if factory else [])]
        self.proc = subprocess.Popen(argv, cwd=BASE_DIR, env={**env, "PUBLIC_PORT": str(self.port)},
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{app} exited:\n{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{app} did not start")

    def rss_mb(self) -> float:
        import psutil

        return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)

    def cpu_s(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class RssSampler:
    """The server's RSS every `interval` seconds while the block runs: the peak, and (t seconds, MB) samples."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        self.server, self.interval = server, interval
        self.peak = 0.0
        self.samples: list[tuple[float, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        started = time.perf_counter()
        while True:
            rss = self.server.rss_mb()
            self.peak = max(self.peak, rss)
            self.samples.append((round(time.perf_counter() - started, 1), rss))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:
            self.task.cancel()


# --- numbers -----------------------------------------------------------------------------------------------------
def percentiles(values: list[float], digits: int = 1) -> dict[str, float | None]:
    """p50 / p95 / p99 (nearest rank) and the maximum; None each when there are no values."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], digits)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ordered[-1], digits)}


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline to three significant digits; None when either is missing or zero."""
    return float(f"{ours / baseline:.3g}") if ours and baseline else None


async def bounded(items: list[Any], fn: Callable[[Any], Awaitable[None]], limit: int) -> list[BaseException | None]:
    """fn(item) for every item, at most `limit` at a time; the exception each raised (or None), in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: Any) -> BaseException | None:
        async with semaphore:
            try:
                await fn(item)
                return None
            except Exception as exc:  # noqa: BLE001 — returned to the caller, who counts it
                return exc

    return await asyncio.gather(*(one(item) for item in items))
