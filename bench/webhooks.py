"""bench/webhooks: what outbound webhooks add to the answer path, and how fast the worker delivers them.

    python -m bench webhooks            # writes bench/results/webhooks.json

Setup: a database of its own (`<db>_bench_webhooks`), Redis db BENCH_WEBHOOKS_REDIS_DB (default 11), a fresh
workspace, a receiver on loopback (a threaded http.server answering 200) and endpoints subscribed to
`message.created`, allowed through URL_IMPORT_ALLOWED_NETWORKS=127.0.0.1/32.

1. Answer path: a real question and answer pair (`customer_message_post` + `assistant_answer_persist`: two stored
   messages, two `message.created` events, their signals sent on commit with every receiver — analytics' INSERTs
   and the webhooks' cache read and one broker message per event; the worker writes the delivery rows) timed with 0 subscribed endpoints and with N, in alternating blocks; no worker runs meanwhile
   (the queued tasks are dropped afterwards), so the delivery work itself never competes. Reported: medians and the
   added time per event ((median with N - median with 0) / 2), against the target of 1 ms. Also the webhook
   receiver alone (`webhook_event_emit`) with 0, 1 and N endpoints.
2. Throughput: K events to one endpoint, delivered by a Celery worker (-c 2) of the bench's own queue, from the
   first enqueue to the last delivery: deliveries per second, and the p50/p95 attempt latency the log recorded.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CCGPT_DATA_DIR", BASE_DIR / ".data"))
FOLDER = DATA_DIR / "bench-webhooks"
TARGET_ADDED_MS_PER_EVENT = 1.0
SIZES = {False: {"pairs": 200, "subscriptions": 5, "deliveries": 600},
         True: {"pairs": 60, "subscriptions": 5, "deliveries": 150}}
QUEUE = "bench_webhooks"


def _env() -> dict[str, str]:
    from bench._support import bench_env

    return bench_env(name="webhooks", redis_db_variable="BENCH_WEBHOOKS_REDIS_DB", redis_db_default=11, folder=FOLDER,
                     URL_IMPORT_ALLOWED_NETWORKS="127.0.0.1/32", WEBHOOK_QUEUE=QUEUE, EMAIL_BACKEND=
                     "django.core.mail.backends.locmem.EmailBackend")


def run(quick: bool = False) -> dict[str, Any]:
    from bench._support import database_prepare, seed_run

    env = _env()
    database_prepare(env)
    size = SIZES[quick]
    return seed_run(env, "bench.webhooks", str(size["pairs"]), str(size["subscriptions"]), str(size["deliveries"]),
                    command="work", timeout=3600)


class _Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hook"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3)}


def work_main(pairs: int, subscriptions: int, deliveries: int) -> None:
    import django

    django.setup()
    import io

    from django.core.management import call_command
    from django.db import connection

    from accounts.services import workspace_signup
    from analytics import webhooks
    from analytics.models import WebhookDelivery
    from chat.services import assistant_answer_persist, conversation_start, customer_message_post
    from config.celery import app

    slug = f"bench-hooks-{secrets.token_hex(3)}"
    _owner, signup = workspace_signup(email=f"owner@{slug}.test", password="Bench-password-4711",
                                      workspace_name="Bench Webhooks", slug=slug, plan="enterprise")
    receiver = _Receiver()
    report: dict[str, Any] = {"pairs": pairs, "subscriptions": subscriptions, "deliveries": deliveries}
    worker = None
    try:
        connection.set_tenant(signup.workspace)
        endpoints = [webhooks.webhook_endpoint_create(url=receiver.url, events=["message.created"])[0]
                     for _ in range(subscriptions)]

        def subscribed(count: int) -> None:
            for index, endpoint in enumerate(endpoints):
                webhooks.webhook_endpoint_update(endpoint=endpoint, is_active=index < count)
            webhooks._subscriptions()  # warm the cache, as a running workspace has it

        conversation = conversation_start(channel="api", title="bench")
        result = {"answer": "Two to four working days.", "answered": True, "confidence": 0.9, "citations": [],
                  "provider": "bench", "tokens_in": 10, "tokens_out": 5}

        def pair() -> float:
            started = time.perf_counter()
            question, _ = customer_message_post(conversation=conversation, text="How long does delivery take?")
            assistant_answer_persist(conversation=conversation, reply_to=question, result=result,
                                     latency_first_token_ms=100, latency_total_ms=200)
            return (time.perf_counter() - started) * 1000

        timings: dict[int, list[float]] = {0: [], subscriptions: []}
        block = 20
        for _ in range(5):  # warm-up: connections, caches, the broker channel
            pair()
        for round_ in range(max(1, pairs // block)):
            for count in ((0, subscriptions) if round_ % 2 == 0 else (subscriptions, 0)):
                subscribed(count)
                timings[count].extend(pair() for _ in range(block))
        without, with_n = statistics.median(timings[0]), statistics.median(timings[subscriptions])
        report["answer_path"] = {
            "pair_ms_0_subscriptions": _ms(timings[0]),
            f"pair_ms_{subscriptions}_subscriptions": _ms(timings[subscriptions]),
            "events_per_pair": 2,
            "added_ms_per_event": round((with_n - without) / 2, 3),
            "target_ms_per_event": TARGET_ADDED_MS_PER_EVENT,
        }
        emit: dict[str, list[float]] = {}
        for count in (0, 1, subscriptions):
            subscribed(count)
            samples = []
            for _ in range(300):
                started = time.perf_counter()
                webhooks.webhook_event_emit(event_type="message.created", data={"message": {"id": 1}})
                samples.append((time.perf_counter() - started) * 1000)
            emit[f"{count}_endpoints"] = _ms(samples)
        report["webhook_event_emit_ms"] = emit
        # Drop what the answer-path rounds queued: the throughput run counts its own deliveries only.
        WebhookDelivery.objects.all().delete()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(QUEUE)

        # --- throughput ---------------------------------------------------------------------------------------
        subscribed(1)
        node = f"bench-hooks-{secrets.token_hex(3)}"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "warning", "-Q", QUEUE, "-c", "2",
             "-n", f"{node}@%h", "--without-gossip", "--without-mingle"],
            cwd=BASE_DIR, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not any(f"{node}@" in list(reply)[0] for reply in app.control.ping(timeout=1.0)):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the bench worker did not come up")
        received_before = receiver.count
        started = time.perf_counter()
        for n in range(deliveries):
            webhooks.webhook_event_emit(event_type="message.created", data={"message": {"id": n}})
        enqueued = time.perf_counter() - started
        deadline = time.monotonic() + 1800
        while WebhookDelivery.objects.filter(status__in=("delivered", "failed")).count() < deliveries:
            if time.monotonic() > deadline:
                raise RuntimeError("hung: deliveries never finished")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        delivered = WebhookDelivery.objects.filter(status="delivered").count()
        latencies = [float(v) for v in WebhookDelivery.objects.values_list("latency_ms", flat=True) if v is not None]
        report["throughput"] = {
            "delivered": delivered, "failed": WebhookDelivery.objects.filter(status="failed").count(),
            "received": receiver.count - received_before, "worker_concurrency": 2,
            "enqueue_seconds": round(enqueued, 2), "seconds": round(elapsed, 2),
            "deliveries_per_second": round(delivered / elapsed, 1),
            "attempt_latency_ms": _ms(latencies) if latencies else None,
        }
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        connection.set_schema_to_public()
        call_command("delete_workspace", "--slug", slug, "--yes", "--json", stdout=io.StringIO())
    print(json.dumps(report, default=str))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "work":
        work_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    print("run it as `python -m bench webhooks`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
