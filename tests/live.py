"""Real processes for integration tests: an ASGI server (uvicorn) and a Celery worker on the test database.

Workspace hosts are `<slug>.localhost`; Chromium resolves those to loopback by itself, Python does not, so the HTTP
and WebSocket helpers here connect to 127.0.0.1 and send the workspace host in the Host header.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict[str, Any]) -> str:
    user = settings_dict.get("USER") or "postgres"
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    if host.startswith("/"):  # unix socket
        return f"postgres://{auth}/{settings_dict['NAME']}?host={host}&port={port}"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def process_env(settings_dict: dict[str, Any], **extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url(settings_dict),
        TEST_DATABASE_NAME=settings.TEST_DATABASE_NAME,
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class ManagedProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_process(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return ManagedProcess(name=name, proc=proc, log_path=log_path)


@dataclass
class LiveServer:
    process: ManagedProcess
    port: int
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, host: str, path: str = "/") -> str:
        """The URL a browser uses (Chromium resolves *.localhost itself)."""
        return f"http://{host}:{self.port}{path}"

    def request(self, method: str, host: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Host": f"{host}:{self.port}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, f"http://127.0.0.1:{self.port}{path}", headers=headers, **kwargs)

    def ws_connect(self, host: str, path: str, **kwargs: Any):
        """A real WebSocket to the server, with `host` in the Host header (websockets' sync client)."""
        from websockets.sync.client import connect

        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return connect(f"ws://{host}:{self.port}{path}", sock=sock, open_timeout=10, **kwargs)


def start_live_server(
    settings_dict: dict[str, Any], log_dir: Path, extra_env: dict[str, str] | None = None, name: str = "asgi"
) -> LiveServer:
    """`extra_env` adds or overrides environment variables of the server process (e.g. EMAIL_BACKEND)."""
    port = free_port()
    env = process_env(settings_dict, **{"PUBLIC_PORT": str(port), **(extra_env or {})})
    argv = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--ws-per-message-deflate", "false", "--no-proxy-headers", "--log-level", "warning"]
    # A second server in the same run needs its own `name`, or it would overwrite the first one's log.
    server = LiveServer(process=start_process(name, argv, env, log_dir), port=port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.proc.poll() is not None:
            raise RuntimeError(f"ASGI server exited:\n{server.process.log_tail()}")
        try:
            if server.request("GET", "localhost", "/healthz", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.process.stop()
    raise RuntimeError(f"ASGI server did not come up:\n{server.process.log_tail()}")


def start_celery_worker(settings_dict: dict[str, Any], log_dir: Path, name: str = "celery",
                        extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """`extra_env` adds or overrides environment variables of the worker (the session's worker writes its mail to
    files: tests/conftest.py `worker_mailbox`)."""
    env = process_env(settings_dict, **(extra_env or {}))
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "-Q", "default,ingest,ingest_large",
            "-c", "2", "-n", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    worker = start_process(name, argv, env, log_dir)
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited:\n{worker.log_tail()}")
        replies = app.control.ping(timeout=1.0)
        if any(f"{name}-{os.getpid()}@" in list(reply)[0] for reply in replies):
            return worker
    worker.stop()
    raise RuntimeError(f"Celery worker did not come up:\n{worker.log_tail()}")
