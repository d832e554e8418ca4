"""bench/chat: N concurrent WebSocket conversations against ONE uvicorn worker process, next to a bare Channels
echo consumer (bench/echo_asgi.py) measured in the same run as the stack's own limit.

    python -m bench chat            # 1,000 conversations
    python -m bench chat --quick    # 100

Setup (subprocesses, so this module needs no Django of its own): a database of its own (`<db>_bench_chat`, created
and migrated on first use) and Redis db BENCH_REDIS_DB (14), a fresh workspace (enterprise plan: each answer spends
a credit) with a small knowledge base ingested through the real pipeline, N conversations and a logged-in owner
session. Answers come from the built-in answerer (no network). The workspace is deleted at the end.

Phases, each against a freshly started server process:
* burst: all N sockets open and resumed, then every one asks at the same instant. First-token and full-answer
  latency per conversation (client clock, from send), errors (error frames, timeouts, dropped sockets), seq gaps or
  duplicates (the replay-log invariant under load), frames per reply, server RSS and CPU.
* paced (ours only): the same N sockets ask at a steady rate of half the burst throughput: latency without the
  queue a burst builds.
* fanout (ours only): conversations with 3 tabs each (one asks, two watch): every watcher must receive exactly the
  asker's sequenced stream.
* cost (bench/answer_cost.py, its own workspace and server with counters): one widget answer at a time, its
  PostgreSQL round trips, Redis commands and server CPU, and a py-spy profile's top entries.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import time
from typing import Any

from bench._support import (
    CONNECT_CONCURRENCY,
    DATA_DIR,
    PASSWORD,
    QUESTIONS,
    RssSampler,
    Server,
    bounded,
    database_prepare,
    knowledge_ingest,
    percentiles,
    ratio,
    seed_run,
    workspace_delete,
)
from bench._support import bench_env as _bench_env

FOLDER = DATA_DIR / "bench-chat"
CONVERSATION_TIMEOUT = 600.0


# --- environment: a database, Redis db and folders of the bench's own ------------------------------------------
def bench_env() -> dict[str, str]:
    # The paced phase keeps sockets open, silent, until their turn to ask.
    return _bench_env(name="chat", redis_db_variable="BENCH_REDIS_DB", redis_db_default=14, folder=FOLDER,
                      CHAT_WS_IDLE_TIMEOUT="1800")


def prepare(env: dict[str, str], conversations: int) -> dict[str, Any]:
    database_prepare(env)
    return seed_run(env, "bench.chat", str(conversations))


def seed_main(count: int) -> None:
    """(subprocess) The workspace, its knowledge, `count` conversations and a session; JSON on stdout."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection

    from accounts.services import workspace_signup
    from chat.models import Channel, Conversation

    slug = f"bench-chat-{secrets.token_hex(3)}"
    # Enterprise: every answer spends a credit, and the free plan's 100 would run out in the first phase.
    owner, signup = workspace_signup(email=f"owner@{slug}.test", password=PASSWORD, workspace_name="Bench Chat",
                                     slug=slug, plan="enterprise")
    workspace = signup.workspace
    connection.set_tenant(workspace)
    knowledge_ingest()
    conversations = Conversation.objects.bulk_create(
        [Conversation(channel=Channel.DASHBOARD, title=f"bench {i}") for i in range(count)], batch_size=500
    )
    alone = _answerer_alone()
    connection.set_schema_to_public()
    session = SessionStore()
    session[SESSION_KEY] = str(owner.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = owner.get_session_auth_hash()
    session.save()
    print(json.dumps({
        "answerer_alone": alone,
        "slug": slug, "host": workspace.domains.get(is_primary=True).domain,
        "cookie": f"{settings.SESSION_COOKIE_NAME}={session.session_key}",
        "conversations": [str(c.public_id) for c in conversations],
    }))


def _answerer_alone(rounds: int = 5) -> dict[str, Any]:
    """The answer engine by itself, in this process, one answer at a time: what a reply costs before any socket."""
    from chat.answering import answer_stream

    def answer(question: str) -> None:
        for _event in answer_stream(question=question, history=[]):
            pass

    answer(QUESTIONS[0])  # loads the embedding model and the vector store
    wall, cpu = [], []
    for _ in range(rounds):
        for question in QUESTIONS:
            started, started_cpu = time.perf_counter(), time.process_time()
            answer(question)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
    return {"answers": len(wall), "wall_ms": percentiles(wall), "cpu_ms_mean": round(statistics.mean(cpu), 1)}


# --- the client --------------------------------------------------------------------------------------------------
class Conversation:
    """One client socket: connect, resume, ask on a signal, record what arrives."""

    def __init__(self, server: Server, host: str, cookie: str, conversation_id: str, question: str) -> None:
        self.server, self.host, self.cookie = server, host, cookie
        self.conversation_id, self.question = conversation_id, question
        self.ws: Any = None
        self.error: str | None = None
        self.sent_at = self.first_token_at = self.completed_at = None  # type: float | None
        self.events: list[dict[str, Any]] = []
        self.frames = 0

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            f"ws://{self.host}:{self.server.port}/ws/chat/{self.conversation_id}/", host="127.0.0.1",
            port=self.server.port, additional_headers={"Cookie": self.cookie}, compression=None, open_timeout=120,
            ping_interval=None, max_size=2**22, max_queue=None,
        )
        welcome = json.loads(await self.ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        await self.ws.send(json.dumps({"type": "resume", "last_seq": welcome.get("last_seq", 0)}))
        while json.loads(await self.ws.recv()).get("type") != "resumed":
            pass

    async def ask(self) -> None:
        self.sent_at = time.perf_counter()
        await self.ws.send(json.dumps({"type": "message", "client_id": secrets.token_hex(8), "text": self.question}))
        await self.follow()

    async def follow(self) -> None:
        """Read until the answer is complete (or failed)."""
        while True:
            frame = json.loads(await self.ws.recv())
            self.frames += 1
            if "seq" in frame:
                self.events.append(frame)
            kind = frame.get("type")
            if kind == "token" and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            elif kind == "agent_completed":
                self.completed_at = time.perf_counter()
                return
            elif kind == "error":
                self.error = frame.get("code", "error")
                if "seq" in frame or frame.get("client_id"):
                    return

    def gaps(self) -> int:
        """Missing or repeated seqs in what this socket received."""
        seqs = [e["seq"] for e in self.events]
        if not seqs:
            return 0
        expected = list(range(seqs[0], seqs[0] + len(seqs)))
        return 0 if seqs == expected else max(1, len(set(expected) ^ set(seqs)) + len(seqs) - len(set(seqs)))

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:
                pass


async def _open_all(clients: list[Conversation]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    failures = await bounded(clients, lambda c: c.open(), CONNECT_CONCURRENCY)
    errors = [f"connect: {type(f).__name__}: {f}" for f in failures if f is not None]
    return round(time.perf_counter() - started, 2), errors


def _summarise(clients: list[Conversation], wall: float, server: Server, rss_idle: float, rss_peak: float,
               cpu: float, connect_s: float, connect_errors: list[str]) -> dict[str, Any]:
    done = [c for c in clients if c.completed_at is not None and c.error is None]
    errors = connect_errors + [f"{c.conversation_id}: {c.error or 'no answer'}" for c in clients
                               if c.ws is not None and (c.error or c.completed_at is None)]
    first = [(c.first_token_at - c.sent_at) * 1000 for c in done if c.first_token_at and c.sent_at]
    full = [(c.completed_at - c.sent_at) * 1000 for c in done if c.sent_at]
    tokens = [sum(1 for e in c.events if e["type"] == "token") for c in done]
    return {
        "sockets": len(clients),
        "connect_seconds": connect_s,
        "first_token_ms": percentiles(first),
        "full_answer_ms": percentiles(full),
        "replies": len(done),
        "replies_per_s": round(len(done) / wall, 1) if wall else None,
        "wall_seconds": round(wall, 2),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seq_gaps": sum(c.gaps() for c in clients),
        "frames_per_reply": round(statistics.mean(c.frames for c in done), 1) if done else None,
        "token_events_per_reply": round(statistics.mean(tokens), 1) if tokens else None,
        "server_rss_mb": {"idle_with_sockets_open": rss_idle, "peak": rss_peak},
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_ms_per_reply": round(cpu * 1000 / len(done), 2) if done else None,
    }


async def _burst(server: Server, seed: dict[str, Any], ids: list[str]) -> tuple[dict[str, Any], float]:
    clients = [Conversation(server, seed["host"], seed["cookie"], cid, QUESTIONS[i % len(QUESTIONS)])
               for i, cid in enumerate(ids)]
    try:
        connect_s, connect_errors = await _open_all(clients)
        opened = [c for c in clients if c.ws is not None]
        rss_idle, cpu_before = server.rss_mb(), server.cpu_s()
        with RssSampler(server) as sampler:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(c.ask() for c in opened), return_exceptions=True),
                                   timeout=CONVERSATION_TIMEOUT)
            wall = time.perf_counter() - started
        result = _summarise(clients, wall, server, rss_idle, max(sampler.peak, rss_idle),
                            server.cpu_s() - cpu_before, connect_s, connect_errors)
        return result, result["replies_per_s"] or 0.0
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def _paced(server: Server, seed: dict[str, Any], ids: list[str], rate: float) -> dict[str, Any]:
    clients = [Conversation(server, seed["host"], seed["cookie"], cid, QUESTIONS[i % len(QUESTIONS)])
               for i, cid in enumerate(ids)]
    try:
        connect_s, connect_errors = await _open_all(clients)
        opened = [c for c in clients if c.ws is not None]
        rss_idle, cpu_before = server.rss_mb(), server.cpu_s()
        rng = random.Random(7)

        async def later(client: Conversation, delay: float) -> None:
            await asyncio.sleep(delay)
            await client.ask()

        at, delays = 0.0, []
        for _ in opened:
            at += rng.expovariate(rate)  # Poisson arrivals
            delays.append(at)
        with RssSampler(server) as sampler:
            started = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(later(c, d) for c, d in zip(opened, delays)),
                                                  return_exceptions=True), timeout=CONVERSATION_TIMEOUT + at)
            wall = time.perf_counter() - started
        result = _summarise(clients, wall, server, rss_idle, max(sampler.peak, rss_idle),
                            server.cpu_s() - cpu_before, connect_s, connect_errors)
        result["arrival_rate_per_s"] = round(rate, 1)
        return result
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def _fanout(server: Server, seed: dict[str, Any], ids: list[str], tabs: int = 3) -> dict[str, Any]:
    askers = [Conversation(server, seed["host"], seed["cookie"], cid, QUESTIONS[i % len(QUESTIONS)])
              for i, cid in enumerate(ids)]
    watchers = [Conversation(server, seed["host"], seed["cookie"], cid, "") for cid in ids for _ in range(tabs - 1)]
    everyone = askers + watchers
    try:
        connect_s, connect_errors = await _open_all(everyone)
        started = time.perf_counter()
        for watcher in watchers:
            watcher.sent_at = started
        await asyncio.wait_for(asyncio.gather(*(c.ask() for c in askers), *(w.follow() for w in watchers),
                                              return_exceptions=True), timeout=CONVERSATION_TIMEOUT)
        wall = time.perf_counter() - started
        by_id: dict[str, list[Conversation]] = {}
        for watcher in watchers:
            by_id.setdefault(watcher.conversation_id, []).append(watcher)
        identical = sum(1 for asker in askers for w in by_id.get(asker.conversation_id, [])
                        if w.events == asker.events and asker.events)
        lag = [(w.completed_at - a.completed_at) * 1000 for a in askers for w in by_id.get(a.conversation_id, [])
               if w.completed_at and a.completed_at]
        return {
            "conversations": len(askers), "sockets": len(everyone), "connect_seconds": connect_s,
            "connect_errors": len(connect_errors), "wall_seconds": round(wall, 2),
            "watchers": len(watchers), "watcher_streams_identical_to_asker": identical,
            "seq_gaps": sum(c.gaps() for c in everyone),
            "watcher_completion_lag_ms": percentiles(lag),
            "errors": len(connect_errors) + sum(1 for c in everyone if c.error or c.completed_at is None),
        }
    finally:
        await asyncio.gather(*(c.close() for c in everyone))


async def _warm_up(server: Server, seed: dict[str, Any], conversation_id: str) -> None:
    """One answer before measuring: the server loads the embedding model and opens the vector store on first use."""
    client = Conversation(server, seed["host"], seed["cookie"], conversation_id, QUESTIONS[0])
    try:
        await client.open()
        await asyncio.wait_for(client.ask(), timeout=120)
        if client.completed_at is None:
            raise RuntimeError(f"warm-up failed: {client.error}")
    finally:
        await client.close()


def run(quick: bool) -> dict[str, Any]:
    count = 100 if quick else 1000
    fanout_conversations = 30 if quick else 150
    env = bench_env()
    seed = prepare(env, count * 2 + fanout_conversations + 2)
    warmups, ids = seed["conversations"][:2], seed["conversations"][2:]
    result: dict[str, Any] = {
        "conversations": count, "server": "uvicorn, 1 process", "answerer": "built-in",
        "answerer_alone": seed["answerer_alone"],
        # The machine may be shared: the load before and after says how much the numbers can be trusted.
        "load_average_1m": {"before": round(os.getloadavg()[0], 2)},
    }
    try:
        server = Server("config.asgi:application", env, "ours", folder=FOLDER)
        try:
            asyncio.run(_warm_up(server, seed, warmups[0]))
            result["ours"], throughput = asyncio.run(_burst(server, seed, ids[:count]))
        finally:
            server.stop()
        echo = Server("bench.echo_asgi:application", env, "echo", folder=FOLDER)
        try:
            result["echo"], _ = asyncio.run(_burst(echo, seed, ids[:count]))
        finally:
            echo.stop()
        server = Server("config.asgi:application", env, "ours-paced", folder=FOLDER)
        try:
            asyncio.run(_warm_up(server, seed, warmups[1]))
            result["ours_paced"] = asyncio.run(_paced(server, seed, ids[count:2 * count], max(1.0, throughput / 2)))
            result["fanout"] = asyncio.run(_fanout(server, seed, ids[2 * count:]))
        finally:
            server.stop()
        ours, echo_result = result["ours"], result["echo"]
        alone_cpu = seed["answerer_alone"]["cpu_ms_mean"]
        result["stack_cpu_ms_per_reply"] = {
            # What the server spends per reply beyond the answer engine's own CPU (measured alone, same answers):
            # sockets, auth, protocol, Redis event log, fan-out, PostgreSQL writes.
            "burst": round(ours["server_cpu_ms_per_reply"] - alone_cpu, 1) if ours["server_cpu_ms_per_reply"] else None,
            "paced": round(result["ours_paced"]["server_cpu_ms_per_reply"] - alone_cpu, 1)
            if result["ours_paced"]["server_cpu_ms_per_reply"] else None,
        }
        result["ratio_ours_to_echo"] = {
            "first_token_p50": ratio(ours["first_token_ms"]["p50"], echo_result["first_token_ms"]["p50"]),
            "first_token_p95": ratio(ours["first_token_ms"]["p95"], echo_result["first_token_ms"]["p95"]),
            "full_answer_p95": ratio(ours["full_answer_ms"]["p95"], echo_result["full_answer_ms"]["p95"]),
            "replies_per_s": ratio(ours["replies_per_s"], echo_result["replies_per_s"]),
            "server_cpu_ms_per_reply": ratio(ours["server_cpu_ms_per_reply"], echo_result["server_cpu_ms_per_reply"]),
        }
    finally:
        result["load_average_1m"]["after"] = round(os.getloadavg()[0], 2)
        result["cleanup_error"] = workspace_delete(env, seed["slug"])
        if result["cleanup_error"] is None:
            del result["cleanup_error"]
    # What one widget answer costs, one at a time (bench/answer_cost.py): PostgreSQL round trips, Redis commands,
    # server CPU, and the profile's top entries.
    from bench import answer_cost

    try:
        result["cost_per_answer"] = answer_cost.run(quick)
    except Exception as exc:  # noqa: BLE001  (the socket phases' results still count)
        result["cost_per_answer"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "seed":
        seed_main(int(sys.argv[2]))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
