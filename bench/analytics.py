"""bench/analytics: the dashboard's queries over 1,000,000 events in one workspace, with rollups and on raw events,
side by side in the same run.

    python -m bench analytics                        # 1,000,000 events (quick: 100,000)
    python -m bench.analytics --events 200000        # any size; also writes bench/results/analytics.json

Setup: a database of its own (`<db>_bench_analytics`, created and migrated on first use), a fresh workspace (plan
enterprise) with 4 widgets on 2 origins each and 200 indexed documents; events are COPY'd straight into the
workspace's analytics_event table: ~90 days ending now, conversations of 1-3 questions from ~2,000 distinct question
texts (~150 intents × phrasings, plus a long tail), 70 % answered / 12 % low confidence / 18 % declined, log-normal
latencies, 0-3 cited documents, feedback on 30 % of answers, handoffs on 8 % of conversations.
Then `analytics_rebuild` (clustering + every rollup) is timed, and each selector runs N times with
source="rollup" and N times with source="raw" (interleaved), over the dashboard's default range (the last 30 days
ending now) in America/New_York: p50/p95 per query and the ratio raw/rollup. Both sources must give identical
answers; the bench checks it. Also timed: the receivers' single INSERT (`event_record`) and the beat job
(`rollups_update`) after one more hour of events. The workspace is deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CCGPT_DATA_DIR", BASE_DIR / ".data"))
FOLDER = DATA_DIR / "bench-analytics"
TARGET_P95_MS = 100
SIZES = {False: {"events": 1_000_000, "runs": 30}, True: {"events": 100_000, "runs": 10}}


def _helpers() -> tuple[Any, Any, Any]:
    """The shared bench helpers (services.env, database creation, manage.py), wherever they live now."""
    try:
        from bench._support import database_create, manage, services_env
    except ImportError:
        from bench.widget import _database_create as database_create
        from bench.widget import _manage as manage
        from bench.widget import _services_env as services_env
    return services_env, database_create, manage


def bench_env() -> dict[str, str]:
    services = _helpers()[0]()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    name = (database.path.lstrip("/") or "customercare") + "_bench_analytics"
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{name}")),
        REDIS_URL=urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_ANALYTICS_REDIS_DB', '12')}")),
        CHROMA_PATH=str(FOLDER / "chroma"), MEDIA_ROOT=str(FOLDER / "media"), LOG_LEVEL="WARNING",
        WORKSPACE_POOL_SIZE="1", WORKSPACE_POOL_REFILL="inline", PYTHONUNBUFFERED="1",
    )
    return env


def run(quick: bool = False, events: int | None = None) -> dict[str, Any]:
    _services, _database_create, _manage = _helpers()
    size = dict(SIZES[quick])
    if events:
        size["events"] = events
    env = bench_env()
    _database_create(env["DATABASE_URL"])
    _manage(env, "migrate_schemas", "--noinput", "-v", "0")
    _manage(env, "setup_platform", "--json")
    result = subprocess.run([sys.executable, "-m", "bench.analytics", "work", str(size["events"]), str(size["runs"])],
                            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=3 * 3600)
    if result.returncode != 0:
        raise RuntimeError(f"bench worker failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the worker (a subprocess with Django set up on the bench database) ------------------------------------------
TOPICS = ["router", "modem", "password", "invoice", "order", "refund", "subscription", "account", "delivery",
          "warranty", "battery", "charger", "app", "printer", "camera", "speaker", "headphones", "watch", "tablet",
          "laptop", "coupon", "gift card", "membership", "newsletter", "store hours"]
ACTIONS = [("How do I reset my {t}?", "How can I reset my {t}", "reset {t} how"),
           ("How do I cancel my {t}?", "Can I cancel my {t}?", "cancel {t}"),
           ("Where can I find my {t}?", "Where is my {t}?", "find my {t}"),
           ("Why is my {t} not working?", "My {t} does not work", "{t} not working"),
           ("How much does a new {t} cost?", "What is the price of a {t}?", "{t} price"),
           ("Can I return my {t}?", "How do I return a {t}?", "return {t}")]


def _questions(rng: random.Random) -> tuple[list[str], list[float]]:
    texts, weights = [], []
    for topic in TOPICS:
        for phrasings in ACTIONS:
            popularity = rng.paretovariate(1.2)
            for index, phrasing in enumerate(phrasings):
                texts.append(phrasing.format(t=topic))
                weights.append(popularity / (index + 1))
    for n in range(2000 - len(texts)):  # the long tail: asked rarely, mostly once
        texts.append(f"Question {n} about {rng.choice(TOPICS)} number {rng.randrange(10_000)}?")
        weights.append(0.02)
    return texts, weights


def _rows(count: int, *, start: datetime, end: datetime, embeds: list[tuple[int, str]], documents: list[int],
          seed: int = 11):
    """Yield COPY rows until `count` events were produced."""
    from analytics.histogram import bucket_of
    from analytics.text import question_hash

    rng = random.Random(seed)
    texts, weights = _questions(rng)
    hashes = {text: question_hash(text) for text in texts}
    span = (end - start).total_seconds()
    produced = 0
    reasons = ["asked", "unanswered", "rule", "agent"]
    while produced < count:
        at = start + timedelta(seconds=rng.random() * span)
        embed_id, origin = rng.choice(embeds) if rng.random() < 0.85 else (None, "")
        conversation = str(uuid.uuid4())
        channel = "widget" if embed_id else "api"
        base = [conversation, embed_id, origin, channel]

        def row(kind: str, moment: datetime, **f: Any) -> tuple:
            first, total = f.get("first"), f.get("total")
            return (kind, moment, *base, f.get("outcome", ""), f.get("confidence"), first, total, bucket_of(first),
                    bucket_of(total), f.get("tokens_in", 0), f.get("tokens_out", 0), f.get("cost", 0),
                    f.get("provider", ""), f.get("cited", []), f.get("feedback"), f.get("reason", ""),
                    f.get("text", ""), hashes.get(f.get("text", ""), ""), "")

        batch = []
        if embed_id:
            batch.append(row("widget_opened", at - timedelta(seconds=3)))
        batch.append(row("conversation_started", at))
        moment = at
        for _ in range(rng.choice((1, 1, 2, 3))):
            moment += timedelta(seconds=rng.randrange(5, 120))
            text = rng.choices(texts, weights)[0]
            batch.append(row("question_asked", moment, text=text))
            roll = rng.random()
            outcome = "answered" if roll < 0.70 else "low_confidence" if roll < 0.82 else "declined"
            first = int(rng.lognormvariate(6.4, 0.5))
            total = first + int(rng.lognormvariate(7.5, 0.6))
            answer_at = moment + timedelta(milliseconds=total)
            batch.append(row("answer_completed", answer_at, text=text, outcome=outcome,
                             confidence=round(rng.uniform(0.2, 0.95), 3), first=first, total=total,
                             tokens_in=rng.randrange(200, 2000), tokens_out=rng.randrange(20, 400),
                             cost=round(rng.uniform(0, 0.004), 6), provider=rng.choice(("builtin", "openai")),
                             cited=[] if outcome == "declined" else rng.sample(documents[:150], rng.randrange(0, 4))))
            if rng.random() < 0.3:
                batch.append(row("feedback_given", answer_at + timedelta(seconds=4), feedback=rng.choice((1, 1, 1, -1))))
        if rng.random() < 0.08:
            batch.append(row("handoff_requested", moment + timedelta(seconds=30), reason=rng.choice(reasons)))
        for item in batch[: count - produced]:
            yield item
        produced += len(batch)


COLUMNS = ("kind, occurred_at, conversation_id, embed_id, origin, channel, outcome, confidence, latency_first_token_ms, "
           "latency_total_ms, first_token_bucket, total_bucket, tokens_in, tokens_out, cost, provider, "
           "cited_document_ids, feedback, reason, question_text, question_hash, visitor_id")


def _copy(rows) -> int:
    from django.db import connection

    copied = 0
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3
        with raw.copy(f"COPY analytics_event (message_id, document_id, {COLUMNS}) FROM STDIN") as copy:
            for item in rows:
                copy.write_row((None, None, *item))
                copied += 1
    return copied


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[max(0, int(round(0.95 * len(ordered))) - 1)], 2), "max": round(ordered[-1], 2)}


def work_main(events: int, runs: int) -> None:
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from accounts.services import workspace_signup
    from analytics import selectors, services
    from documents.models import Document, DocumentStatus
    from embeds.services import embed_create

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    slug = f"bench-analytics-{secrets.token_hex(3)}"
    _owner, signup = workspace_signup(email=f"owner@{slug}.test", password="Bench-password-4711",
                                      workspace_name="Bench Analytics", slug=slug, plan="enterprise")
    workspace = signup.workspace
    connection.set_tenant(workspace)
    report: dict[str, Any] = {"events": events, "runs_per_query": runs, "tz": "America/New_York",
                              "range": "last 30 days ending now (the default)", "target_p95_ms": TARGET_P95_MS,
                              "load_average_1m": {"before": round(os.getloadavg()[0], 2)}}
    try:
        embeds = []
        for index in range(4):
            origins = [f"https://site{index}.example", f"https://shop{index}.example"]
            embed = embed_create(name=f"widget {index}", allowed_origins=origins)
            embeds += [(embed.pk, origin) for origin in origins]
        documents = Document.objects.bulk_create([
            Document(title=f"Document {n:03d}", status=DocumentStatus.INDEXED, sha256=f"{n:064x}")
            for n in range(200)])
        document_ids = [d.pk for d in documents]
        now = timezone.now()
        started = time.perf_counter()
        copied = _copy(_rows(events, start=now - timedelta(days=90), end=now - timedelta(minutes=1), embeds=embeds,
                             documents=document_ids))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE analytics_event")
        report["insert_seconds"] = round(time.perf_counter() - started, 1)
        log(f"copied {copied} events in {report['insert_seconds']} s")

        started = time.perf_counter()
        rebuilt = services.analytics_rebuild()
        report["rebuild"] = {"seconds": round(time.perf_counter() - started, 1), **{
            k: rebuilt[k] for k in ("hourly_rows", "daily_rows", "questions_clustered", "clusters_created")}}
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
            cursor.execute("SELECT count(*) FROM analytics_hourlykeyedrollup")
            report["rebuild"]["hourly_keyed_rows"] = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM analytics_dailykeyedrollup")
            report["rebuild"]["daily_keyed_rows"] = cursor.fetchone()[0]
        log(f"rebuild: {report['rebuild']}")

        day = selectors.analytics_filters_parse({"tz": "America/New_York"})
        hour = selectors.analytics_filters_parse({"tz": "America/New_York", "interval": "hour"})
        queries = {
            "summary": lambda s: selectors.analytics_summary(day, source=s),
            "queries_over_time_day": lambda s: selectors.analytics_queries_over_time(day, source=s),
            "queries_over_time_hour": lambda s: selectors.analytics_queries_over_time(hour, source=s),
            "top_queries": lambda s: selectors.analytics_top_queries(day, source=s),
            "unanswered": lambda s: selectors.analytics_unanswered(day, source=s),
            "documents": lambda s: selectors.analytics_documents(day, source=s),
            "embeds": lambda s: selectors.analytics_embeds(day, source=s),
            "quality_day": lambda s: selectors.analytics_quality(day, source=s),
            "handoffs": lambda s: selectors.analytics_handoffs(day, source=s),
        }
        results: dict[str, Any] = {}
        for name, query in queries.items():
            same = query("rollup") == query("raw")
            samples: dict[str, list[float]] = {"rollup": [], "raw": []}
            for _ in range(runs):
                for source in ("rollup", "raw"):
                    t0 = time.perf_counter()
                    query(source)
                    samples[source].append((time.perf_counter() - t0) * 1000)
            rollup, raw = _stats(samples["rollup"]), _stats(samples["raw"])
            results[name] = {"rollup_ms": rollup, "raw_ms": raw, "raw_over_rollup_p95": round(raw["p95"] / rollup["p95"], 1),
                             "identical": same, "under_target": rollup["p95"] < TARGET_P95_MS}
            log(f"{name}: {results[name]}")
        report["queries"] = results
        report["load_average_1m"]["after_queries"] = round(os.getloadavg()[0], 2)
        report["all_identical"] = all(r["identical"] for r in results.values())
        report["all_under_target"] = all(r["under_target"] for r in results.values())

        # The answer path's cost: one receiver INSERT.
        samples = []
        for n in range(200):
            t0 = time.perf_counter()
            services.event_record(kind="feedback_given", feedback=1, conversation_id=uuid.uuid4(), embed_id=embeds[0][0],
                                  origin=embeds[0][1])
            samples.append((time.perf_counter() - t0) * 1000)
        report["event_record_ms"] = _stats(samples)
        # The beat job after one more hour of events.
        extra = _copy(_rows(max(1, events // (90 * 24)), start=now - timedelta(hours=1), end=now, embeds=embeds,
                            documents=document_ids, seed=12))
        t0 = time.perf_counter()
        services.rollups_update()
        report["rollups_update_after_one_hour"] = {"events": extra,
                                                   "ms": round((time.perf_counter() - t0) * 1000, 1)}
    finally:
        connection.set_schema_to_public()
        from django.core.management import call_command
        import io

        call_command("delete_workspace", "--slug", slug, "--yes", "--json", stdout=io.StringIO())
    print(json.dumps(report, default=str))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "work":
        work_main(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.analytics")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(quick=args.quick, events=args.events)
    result["_meta"] = {"bench": "analytics", "at": datetime.now(UTC).isoformat(), "quick": args.quick,
                       "events": result.get("events"), "machine": {"cpus": os.cpu_count()}}
    out = Path(__file__).resolve().parent / "results" / "analytics.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
