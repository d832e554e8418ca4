"""bench/coldstart: the first question after a web process starts, against the tenth, with the start-up warm-up
(config/warmup.py, WARM_UP_ON_START) on and off, side by side in the same run (issue #22).

    python -m bench coldstart            # 3 rounds of each case
    python -m bench coldstart --quick    # 1 round

Setup (subprocesses, so this module needs no Django of its own): a database of its own (`<db>_bench_coldstart`) and
Redis db BENCH_COLDSTART_REDIS_DB (default 2), the small knowledge base of bench/_support.py ingested through the
real pipeline, conversations and an owner session (bench/chat.py's seed). Answers come from the built-in answerer.

Each case starts a fresh uvicorn process (`config.asgi:application`, one process) and, over the dashboard's
WebSocket, asks one question, then ten more, one at a time, each in a conversation of its own (no history). The
tenth of the ten more is the same question as the first. Cases:
* `ready`: the first question goes as soon as /readyz answers 200 (a load balancer's view of a fresh process; with
  the warm-up on, /readyz waits for it, at most WARM_UP_READY_MAX_SECONDS);
* `settled`: the first question goes 15 s after that (a restart some while before the first customer asks).
Latencies are client-clock milliseconds from sending to the first token and to the completed answer.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from typing import Any

import requests

from bench._support import DATA_DIR, QUESTIONS, Server, database_prepare, ratio, seed_run, workspace_delete
from bench._support import bench_env as _bench_env
from bench.chat import Conversation

FOLDER = DATA_DIR / "bench-coldstart"
MORE = 10
SETTLE_SECONDS = 15.0
ANSWER_TIMEOUT = 300.0
CASES = ("ready", "settled")


def bench_env() -> dict[str, str]:
    return _bench_env(name="coldstart", redis_db_variable="BENCH_COLDSTART_REDIS_DB", redis_db_default=2,
                      folder=FOLDER)


def _questions() -> list[str]:
    """The first question, then ten more whose last is the first again (same text, same work)."""
    others = QUESTIONS[1:]
    more = [others[i % len(others)] for i in range(MORE - 1)] + [QUESTIONS[0]]
    return [QUESTIONS[0], *more]


async def _ask(server: Server, seed: dict[str, Any], conversation_id: str, question: str) -> dict[str, float]:
    client = Conversation(server, seed["host"], seed["cookie"], conversation_id, question)
    try:
        await client.open()
        await asyncio.wait_for(client.ask(), timeout=ANSWER_TIMEOUT)
    finally:
        await client.close()
    if client.completed_at is None or client.first_token_at is None:
        raise RuntimeError(f"no answer to {question!r}: {client.error}")
    completed = [e for e in client.events if e.get("type") == "agent_completed"]
    server_timings = (completed[-1].get("message") or {}).get("timings_ms") if completed else None
    return {"first_token_ms": round((client.first_token_at - client.sent_at) * 1000, 1),
            "answer_ms": round((client.completed_at - client.sent_at) * 1000, 1),
            "server_retrieval_ms": (server_timings or {}).get("retrieval")}


def _ready(server: Server, token: str) -> dict[str, Any]:
    """Wait for /readyz 200; the process's warm-up state as it reports it then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = requests.get(f"http://127.0.0.1:{server.port}/readyz", headers={"X-Ops-Token": token},
                                    timeout=10)
            if response.status_code == 200:
                return response.json().get("warm_up", {})
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError("the server never became ready")


def _one_start(env: dict[str, str], seed: dict[str, Any], ids: list[str], *, warm: bool, case: str,
               name: str) -> dict[str, Any]:
    token = secrets.token_hex(16)
    started = time.perf_counter()
    server = Server("config.asgi:application", {**env, "WARM_UP_ON_START": "true" if warm else "false",
                                                "OPS_TOKEN": token}, name, folder=FOLDER)
    try:
        state_at_ready = _ready(server, token)
        ready_ms = round((time.perf_counter() - started) * 1000, 1)
        if case == "settled":
            time.sleep(SETTLE_SECONDS)
        state_at_first = (requests.get(f"http://127.0.0.1:{server.port}/readyz", headers={"X-Ops-Token": token},
                                       timeout=10).json().get("warm_up", {}))
        timings = [asyncio.run(_ask(server, seed, conversation_id, question))
                   for conversation_id, question in zip(ids, _questions())]
    finally:
        server.stop()
    later = timings[1:]
    return {
        "start_to_ready_ms": ready_ms,
        "warm_up_at_ready": state_at_ready.get("state"),
        "warm_up_at_first_question": state_at_first.get("state"),
        "warm_up_ms": state_at_first.get("ms"),
        "first": timings[0], "tenth": timings[-1],
        "later_median": {key: round(statistics.median(t[key] for t in later), 1)
                         for key in ("first_token_ms", "answer_ms")},
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(path: tuple[str, str]) -> float:
        return round(statistics.median(run[path[0]][path[1]] for run in runs), 1)

    out = {f"{which}_{key}": median((which, key)) for which in ("first", "tenth") for key in ("first_token_ms",
                                                                                              "answer_ms")}
    out["first_over_tenth"] = {"first_token": ratio(out["first_first_token_ms"], out["tenth_first_token_ms"]),
                               "answer": ratio(out["first_answer_ms"], out["tenth_answer_ms"])}
    out["start_to_ready_ms"] = round(statistics.median(run["start_to_ready_ms"] for run in runs), 1)
    return out


def run(quick: bool) -> dict[str, Any]:
    rounds = 1 if quick else 3
    per_start = MORE + 1
    starts = rounds * len(CASES) * 2
    env = bench_env()
    database_prepare(env)
    seed = seed_run(env, "bench.chat", str(per_start * starts))
    ids = iter(seed["conversations"])
    result: dict[str, Any] = {
        "rounds": rounds, "questions_per_start": per_start, "server": "uvicorn, 1 process", "answerer": "built-in",
        "load_average_1m": {"before": round(os.getloadavg()[0], 2)}, "runs": {},
    }
    try:
        for case in CASES:
            for round_index in range(rounds):
                # Alternate which goes first, so a machine warming its own caches favours neither.
                order = (False, True) if round_index % 2 == 0 else (True, False)
                for warm in order:
                    key = f"{case}_warm_up_{'on' if warm else 'off'}"
                    conversation_ids = [next(ids) for _ in range(per_start)]
                    run_result = _one_start(env, seed, conversation_ids, warm=warm, case=case,
                                            name=f"{key}-{round_index}")
                    result["runs"].setdefault(key, []).append(run_result)
                    print(key, round_index, run_result["first"], run_result["tenth"], flush=True)
        result["summary"] = {key: _summary(runs) for key, runs in result["runs"].items()}
        result["ratio_warm_up_on_to_off"] = {
            case: {
                "first_question_first_token": ratio(result["summary"][f"{case}_warm_up_on"]["first_first_token_ms"],
                                                    result["summary"][f"{case}_warm_up_off"]["first_first_token_ms"]),
                "first_question_answer": ratio(result["summary"][f"{case}_warm_up_on"]["first_answer_ms"],
                                               result["summary"][f"{case}_warm_up_off"]["first_answer_ms"]),
            } for case in CASES
        }
    finally:
        result["load_average_1m"]["after"] = round(os.getloadavg()[0], 2)
        result["cleanup_error"] = workspace_delete(env, seed["slug"])
        if result["cleanup_error"] is None:
            del result["cleanup_error"]
    return result
