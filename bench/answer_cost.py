"""bench/answer_cost: what one widget answer costs the server, over the real socket path (issue #16).

    python -m bench.answer_cost            # 30 answers (standalone; bench/chat.py runs it as its `cost` phase)
    python -m bench.answer_cost --quick    # 10

A uvicorn process serving our application with counters (bench/probe_asgi.py), a workspace with the bench's small
knowledge base, a widget embed and one widget conversation per answer (a new visitor's first question, as on a
shop's site). Answers are asked one at a time; for each: PostgreSQL round trips (statements + BEGIN/COMMIT + new
connections, by statement kind), Redis commands (MONITOR on the bench's Redis db: every command of every client of
that db, the channel layer's and the event logs' included), and the server's CPU time from the question to 0.5 s
after `agent_completed` (what runs on commit or after the answer is included). Then a second series under py-spy:
the busy samples' top functions (self and inclusive) and the share spent in PostgreSQL and Redis client code.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

from bench._support import (
    DATA_DIR,
    PASSWORD,
    QUESTIONS,
    Server,
    database_prepare,
    knowledge_ingest,
    seed_run,
    widget_limits_raised,
    workspace_delete,
)
from bench._support import bench_env as _bench_env

FOLDER = DATA_DIR / "bench-answer-cost"
HOST_ORIGIN = "https://shop.bench.example"
SETTLE_SECONDS = 0.5


def bench_env() -> dict[str, str]:
    return _bench_env(name="answer_cost", redis_db_variable="BENCH_ANSWER_COST_REDIS_DB", redis_db_default=9,
                      folder=FOLDER, **widget_limits_raised())


def seed_main(count: int) -> None:
    """(subprocess) Workspace, knowledge, embed, `count` widget conversations with their visitor tokens; JSON out."""
    import django

    django.setup()
    from django.db import connection

    from accounts.services import workspace_signup
    from embeds import services

    slug = f"bench-cost-{secrets.token_hex(3)}"
    _owner, signup = workspace_signup(email=f"owner@{slug}.test", password=PASSWORD, workspace_name="Bench Cost",
                                      slug=slug, plan="enterprise")
    workspace = signup.workspace
    connection.set_tenant(workspace)
    knowledge_ingest()
    embed = services.embed_create(name="bench", allowed_origins=[HOST_ORIGIN])
    visitors = []
    for _ in range(count):
        session = services.visitor_session_start(embed=embed, host_origin=HOST_ORIGIN)
        conversation = services.visitor_conversation_start(claims=session.claims)
        visitors.append({"conversation": str(conversation.public_id), "token": session.token})
    from bench.chat import _answerer_alone

    alone = _answerer_alone()  # the answer engine by itself in this process: what the stack adds is the rest
    connection.set_schema_to_public()
    print(json.dumps({"slug": slug, "host": workspace.domains.get(is_primary=True).domain, "visitors": visitors,
                      "answerer_alone": alone}))


class RedisMonitor:
    """MONITOR on the Redis server, keeping the commands of one db with their times."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.commands: list[tuple[float, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            for entry in monitor.listen():
                if self.stopped.is_set():
                    return
                if int(entry.get("db", -1)) == self.db:
                    command = str(entry.get("command", "")).split(" ", 1)[0].upper()
                    # Commands a Lua script runs inside Redis are not round trips of a client: marked "lua:".
                    inside = entry.get("client_type") == "lua" or entry.get("client_address") == "lua"
                    self.commands.append((time.time(), f"lua:{command}" if inside else command))

    def __enter__(self) -> RedisMonitor:
        self.thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        try:
            self.client.ping()  # wakes the monitor loop up so it sees `stopped`
        except Exception:
            pass
        self.thread.join(timeout=5)

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(command for at, command in self.commands if start <= at <= end)


def _probe(server: Server, *, reset: bool) -> dict[str, Any]:
    request = Request(f"http://127.0.0.1:{server.port}/__probe__/", method="POST" if reset else "GET")
    with urlopen(request, timeout=30) as response:
        return json.loads(response.read())


async def _ask(server: Server, host: str, visitor: dict[str, str], question: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    own = f"http://{host}:{server.port}"
    async with connect(f"ws://{host}:{server.port}/widget/v1/ws/{visitor['conversation']}/?token={visitor['token']}",
                       host="127.0.0.1", port=server.port, additional_headers={"Origin": own}, compression=None,
                       open_timeout=60, ping_interval=None, max_size=2**22) as ws:
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        await ws.send(json.dumps({"type": "resume", "last_seq": welcome.get("last_seq", 0)}))
        while json.loads(await ws.recv()).get("type") != "resumed":
            pass
        await asyncio.sleep(0.05)
        before = await asyncio.to_thread(_probe, server, reset=True)
        cpu_before, started_wall = server.cpu_s(), time.time()
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "client_id": secrets.token_hex(8), "text": question}))
        first_token = None
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
            kind = frame.get("type")
            if kind == "token" and first_token is None:
                first_token = (time.perf_counter() - started) * 1000
            if kind == "agent_completed":
                break
            if kind == "error":
                raise RuntimeError(f"error frame: {frame}")
        total = (time.perf_counter() - started) * 1000
        await asyncio.sleep(SETTLE_SECONDS)
        ended_wall = time.time()
        counts = await asyncio.to_thread(_probe, server, reset=True)
        cpu = server.cpu_s() - cpu_before
    del before
    return {"db": counts, "cpu_ms": cpu * 1000, "first_token_ms": first_token, "total_ms": total,
            "window": (started_wall, ended_wall)}


def _series(server: Server, seed: dict[str, Any], visitors: list[dict[str, str]],
            monitor: RedisMonitor | None) -> list[dict[str, Any]]:
    results = []
    for i, visitor in enumerate(visitors):
        result = asyncio.run(_ask(server, seed["host"], visitor, QUESTIONS[i % len(QUESTIONS)]))
        if monitor is not None:
            result["redis"] = monitor.between(*result["window"])
        results.append(result)
    return results


def _py_spy_top(raw: Path, limit: int = 15) -> dict[str, Any]:
    """Top functions of py-spy's collapsed stacks (busy samples only: py-spy leaves idle threads out)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    areas: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                  if " (" in frame else frame for frame in stack.split(";")]
        full = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        joined = ";".join(full)
        if "/psycopg/" in joined or "django/db/" in joined:
            areas["postgresql (psycopg + django.db)"] += count
        if "/redis/" in joined or "channels_redis" in joined:
            areas["redis client"] += count
        if "answering.py" in joined or "retrieval.py" in joined or "documents/" in joined:
            areas["answer engine (chat/answering, retrieval, documents)"] += count
    share = (lambda n: round(n / total, 3)) if total else (lambda n: None)
    return {
        "busy_samples": total,
        "areas_share": {name: share(n) for name, n in areas.most_common()},
        "top_self": [[name, share(n)] for name, n in own.most_common(limit)],
        "top_inclusive": [[name, share(n)] for name, n in inclusive.most_common(limit * 3)
                          if not name.startswith(("<module>", "run (threading", "_bootstrap", "worker (thread",
                                                  "run (thread"))][:limit],
    }


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    statements: Counter[str] = Counter()
    redis_commands: Counter[str] = Counter()
    for result in results:
        statements.update(result["db"]["by_statement"])
        redis_commands.update(result.get("redis") or {})

    def mean(key: str) -> float:
        return round(statistics.mean(r["db"][key] for r in results), 2)

    return {
        "answers": n,
        "db_round_trips_per_answer": mean("round_trips"),
        "db_statements_per_answer": mean("statements"),
        "db_transactions_per_answer": mean("transactions"),
        "db_connects_per_answer": mean("connects"),
        "db_statements_by_kind_per_answer": {k: round(v / n, 2) for k, v in statements.most_common()},
        # Sent by a client (each a round trip, but MULTI/EXEC blocks and pipelines share one) / run by scripts.
        "redis_commands_per_answer": round(sum(v for k, v in redis_commands.items() if not k.startswith("lua:")) / n, 2),
        "redis_commands_in_scripts_per_answer": round(
            sum(v for k, v in redis_commands.items() if k.startswith("lua:")) / n, 2),
        "redis_commands_by_name_per_answer": {k: round(v / n, 2) for k, v in redis_commands.most_common()},
        "server_cpu_ms_per_answer": {
            "mean": round(statistics.mean(r["cpu_ms"] for r in results), 1),
            "median": round(statistics.median(r["cpu_ms"] for r in results), 1),
        },
        "first_token_ms_median": round(statistics.median(r["first_token_ms"] or 0 for r in results), 1),
        "total_ms_median": round(statistics.median(r["total_ms"] for r in results), 1),
    }


def measure(env: dict[str, str], seed: dict[str, Any], answers: int, *, profile: bool = True) -> dict[str, Any]:
    """Both series against one fresh probe server; the seed holds 2 × answers + 1 visitors."""
    visitors = seed["visitors"]
    server = Server("bench.probe_asgi:application", env, "probe", folder=FOLDER)
    try:
        asyncio.run(_ask(server, seed["host"], visitors[0], QUESTIONS[0]))  # warm-up: model, index, connections
        with RedisMonitor(env["REDIS_URL"]) as monitor:
            counted = _series(server, seed, visitors[1:answers + 1], monitor)
        result = {"counted": _summary(counted), "answerer_alone": seed.get("answerer_alone")}
        alone = (seed.get("answerer_alone") or {}).get("cpu_ms_mean")
        if alone is not None:
            # Sockets, protocol, event log, PostgreSQL and Redis: the server's CPU per answer beyond the engine's.
            result["stack_cpu_ms_per_answer"] = round(result["counted"]["server_cpu_ms_per_answer"]["mean"] - alone, 1)
        if profile:
            raw = FOLDER / "py-spy.txt"
            spy_bin = Path(sys.executable).with_name("py-spy")
            spy = subprocess.Popen([str(spy_bin), "record", "--pid", str(server.proc.pid), "--rate", "250",
                                    "--format", "raw", "--output", str(raw), "--threads", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                profiled = _series(server, seed, visitors[answers + 1:2 * answers + 1], None)
            finally:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            result["profiled_cpu_ms_per_answer"] = round(statistics.mean(r["cpu_ms"] for r in profiled), 1)
            if raw.exists():
                result["py_spy"] = _py_spy_top(raw)
        return result
    finally:
        server.stop()


def run(quick: bool) -> dict[str, Any]:
    answers = 10 if quick else 30
    env = bench_env()
    database_prepare(env)
    seed = seed_run(env, "bench.answer_cost", str(2 * answers + 1))
    result: dict[str, Any] = {"load_average_1m": {"before": round(os.getloadavg()[0], 2)}}
    try:
        result.update(measure(env, seed, answers))
    finally:
        result["load_average_1m"]["after"] = round(os.getloadavg()[0], 2)
        error = workspace_delete(env, seed["slug"])
        if error:
            result["cleanup_error"] = error
    return result


def trace() -> None:
    """Every statement of one answer, in order, by thread (to read what the counts are made of)."""
    env = {**bench_env(), "PROBE_TRACE": "1"}
    database_prepare(env)
    seed = seed_run(env, "bench.answer_cost", "3")
    server = Server("bench.probe_asgi:application", env, "probe-trace", folder=FOLDER)
    try:
        asyncio.run(_ask(server, seed["host"], seed["visitors"][0], QUESTIONS[0]))
        with RedisMonitor(env["REDIS_URL"]) as monitor:
            result = asyncio.run(_ask(server, seed["host"], seed["visitors"][1], QUESTIONS[1]))
            result["redis"] = monitor.between(*result["window"])
        print("\n".join(result["db"].pop("trace")))
        print(json.dumps({k: v for k, v in result.items() if k != "window"}, indent=1, default=str))
    finally:
        server.stop()
        workspace_delete(env, seed["slug"])


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "seed":
        seed_main(int(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "trace":
        trace()
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
