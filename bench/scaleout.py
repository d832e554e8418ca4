"""bench/scaleout: two uvicorn processes behind one Redis channel layer and event log, against one (issue #16).

    python -m bench scaleout            # 400 conversations
    python -m bench scaleout --quick    # 100

The same workspace, knowledge base and dashboard conversations as bench/chat.py (its seed, its database), and:
* one: a burst of N questions on one uvicorn process (every socket there);
* two: a burst of N other questions on two processes, half the sockets on each (what a load balancer does);
  answers per second against one, in the same run;
* cross: conversations whose asker is on process A and whose watcher is on process B: the watcher must receive
  exactly the asker's sequenced stream (same events, same seqs, nothing missing or doubled), through Redis.

Two processes can only serve ~2× one when the machine has the cores for them: the result records the CPU count and
the load average, and the processes' CPU time per answer.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from bench._support import QUESTIONS, Server, percentiles, ratio, workspace_delete
from bench.chat import FOLDER, Conversation, _open_all, _warm_up, bench_env, prepare

TIMEOUT = 600.0


async def _burst(servers: list[Server], seed: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    clients = [Conversation(servers[i % len(servers)], seed["host"], seed["cookie"], cid,
                            QUESTIONS[i % len(QUESTIONS)]) for i, cid in enumerate(ids)]
    try:
        connect_s, connect_errors = await _open_all(clients)
        opened = [c for c in clients if c.ws is not None]
        cpu_before = sum(s.cpu_s() for s in servers)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(c.ask() for c in opened), return_exceptions=True), timeout=TIMEOUT)
        wall = time.perf_counter() - started
        cpu = sum(s.cpu_s() for s in servers) - cpu_before
        done = [c for c in clients if c.completed_at is not None and c.error is None]
        first = [(c.first_token_at - c.sent_at) * 1000 for c in done if c.first_token_at and c.sent_at]
        return {
            "processes": len(servers), "sockets": len(clients), "connect_seconds": connect_s,
            "replies": len(done), "replies_per_s": round(len(done) / wall, 1) if wall else None,
            "wall_seconds": round(wall, 2), "first_token_ms": percentiles(first),
            "errors": len(connect_errors) + sum(1 for c in opened if c.error or c.completed_at is None),
            "seq_gaps": sum(c.gaps() for c in clients),
            "server_cpu_ms_per_reply": round(cpu * 1000 / len(done), 1) if done else None,
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def _cross(a: Server, b: Server, seed: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    askers = [Conversation(a, seed["host"], seed["cookie"], cid, QUESTIONS[i % len(QUESTIONS)])
              for i, cid in enumerate(ids)]
    watchers = [Conversation(b, seed["host"], seed["cookie"], cid, "") for cid in ids]
    try:
        _connect_s, connect_errors = await _open_all(askers + watchers)
        started = time.perf_counter()
        for watcher in watchers:
            watcher.sent_at = started
        await asyncio.wait_for(asyncio.gather(*(c.ask() for c in askers), *(w.follow() for w in watchers),
                                              return_exceptions=True), timeout=TIMEOUT)
        identical = sum(1 for asker, watcher in zip(askers, watchers) if asker.events and watcher.events == asker.events)
        lag = [(w.completed_at - a.completed_at) * 1000 for a, w in zip(askers, watchers)
               if w.completed_at and a.completed_at]
        return {
            "conversations": len(ids), "watcher_streams_identical_to_asker": identical,
            "seq_gaps": sum(c.gaps() for c in askers + watchers), "watcher_completion_lag_ms": percentiles(lag),
            "errors": len(connect_errors) + sum(1 for c in askers + watchers if c.error or c.completed_at is None),
        }
    finally:
        await asyncio.gather(*(c.close() for c in askers + watchers))


def run(quick: bool) -> dict[str, Any]:
    count = 100 if quick else 400
    cross = 30 if quick else 100
    env = bench_env()
    seed = prepare(env, 2 * count + cross + 2)
    warmups, ids = seed["conversations"][:2], seed["conversations"][2:]
    result: dict[str, Any] = {
        "conversations": count, "cpus": os.cpu_count(), "answerer": "built-in",
        "load_average_1m": {"before": round(os.getloadavg()[0], 2)},
    }
    try:
        a = Server("config.asgi:application", env, "scale-a", folder=FOLDER)
        b = Server("config.asgi:application", env, "scale-b", folder=FOLDER)
        try:
            asyncio.run(_warm_up(a, seed, warmups[0]))
            asyncio.run(_warm_up(b, seed, warmups[1]))
            result["one"] = asyncio.run(_burst([a], seed, ids[:count]))
            result["two"] = asyncio.run(_burst([a, b], seed, ids[count:2 * count]))
            result["cross"] = asyncio.run(_cross(a, b, seed, ids[2 * count:]))
        finally:
            a.stop()
            b.stop()
        result["ratio_two_to_one"] = {
            "replies_per_s": ratio(result["two"]["replies_per_s"], result["one"]["replies_per_s"]),
            "first_token_p95": ratio(result["two"]["first_token_ms"]["p95"], result["one"]["first_token_ms"]["p95"]),
        }
    finally:
        result["load_average_1m"]["after"] = round(os.getloadavg()[0], 2)
        error = workspace_delete(env, seed["slug"])
        if error:
            result["cleanup_error"] = error
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
