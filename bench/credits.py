"""bench/credits: the cost of one answer's credit step (tenants.billing.credits_consume) with an empty period and
with 1,000,000 ledger entries in the period, side by side with the old way of reading the totals (summing the
period's entries, `_period_totals_summed`) at both sizes.

    python -m bench credits            # 1,000,000 entries (quick: 100,000)

Setup: a database of its own (`<db>_bench_credits`, created and migrated on first use), a fresh workspace on a plan
with overage (so no consumption is refused). Both sizes measure the ordinary charge (a balance that covers it: one
round trip); the filled period is also measured in overage first (the general way), reported apart. The entries are INSERTed in one statement through the ledger's trigger,
as the product writes them. Target (issue #16): the consume step costs the same at both sizes (ratio ≈ 1), while the
summed read grows with the period.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CCGPT_DATA_DIR", BASE_DIR / ".data"))
FOLDER = DATA_DIR / "bench-credits"
SIZES = {False: {"entries": 1_000_000, "runs": 300}, True: {"entries": 100_000, "runs": 100}}


def bench_env() -> dict[str, str]:
    from bench._support import services_env

    services = services_env()
    database = urlsplit(services.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/customercare"))
    name = (database.path.lstrip("/") or "customercare") + "_bench_credits"
    redis = urlsplit(services.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false",
        DATABASE_URL=urlunsplit(database._replace(path=f"/{name}")),
        REDIS_URL=urlunsplit(redis._replace(path=f"/{os.environ.get('BENCH_CREDITS_REDIS_DB', '14')}")),
        CHROMA_PATH=str(FOLDER / "chroma"), MEDIA_ROOT=str(FOLDER / "media"), LOG_LEVEL="WARNING",
        WORKSPACE_POOL_SIZE="0", WORKSPACE_POOL_REFILL="inline", PYTHONUNBUFFERED="1",
    )
    return env


def run(quick: bool = False) -> dict[str, Any]:
    from bench._support import database_create, manage

    size = SIZES[quick]
    env = bench_env()
    database_create(env["DATABASE_URL"])
    manage(env, "migrate_schemas", "--noinput", "-v", "0")
    manage(env, "setup_platform", "--json")
    result = subprocess.run([sys.executable, "-m", "bench.credits", "work", str(size["entries"]), str(size["runs"])],
                            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"bench credits failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _timed_ms(fn: Any, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
            "mean_ms": round(statistics.fmean(samples), 3)}


def work(entries: int, runs: int) -> dict[str, Any]:
    import django

    django.setup()
    import secrets

    from django.db import connection

    from accounts.services import workspace_signup
    from tenants import billing
    from tenants.models import LedgerEntry

    owner, signup = workspace_signup(email=f"bench-{secrets.token_hex(4)}@example.test", password="Bench-pass-4711",
                                     workspace_name="Credits bench", slug=f"credits-{secrets.token_hex(3)}",
                                     plan="enterprise")
    workspace = signup.workspace  # enterprise allows overage: no consumption is refused
    period_start = billing.subscription_get(workspace=workspace).period_start
    counter = iter(range(10_000_000))

    def consume() -> None:
        billing.credits_consume(workspace=workspace, reference=f"message:bench-{next(counter)}")

    def summed() -> None:
        billing._period_totals_summed(workspace.pk, period_start)

    consume()  # warm: the period's totals row exists from here on
    empty = {"consume": _timed_ms(consume, runs), "summed_baseline": _timed_ms(summed, runs)}
    # A million answers' entries in one statement: with the per-row trigger that is a million updates of one row in
    # one transaction (quadratic in PostgreSQL; the product writes one entry per transaction). So the filler goes in
    # with the trigger off (this bench's own database) and the period's row is then set to exactly what the trigger
    # keeps: the sums of the ledger. The consume step measured afterwards runs through the trigger as always.
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE public.tenants_ledgerentry DISABLE TRIGGER tenants_ledgerentry_totals")
        try:
            cursor.execute(
                "INSERT INTO public.tenants_ledgerentry (workspace_id, period_start, kind, amount, charge, plan, "
                "reason, reference, actor_label, data, created_at) SELECT %s, %s, 'usage', -1, 0, 'enterprise', "
                "'answer', 'message:filler-' || n, 'system', '{}'::jsonb, now() FROM generate_series(1, %s) AS n",
                [workspace.pk, period_start, entries])
        finally:
            cursor.execute("ALTER TABLE public.tenants_ledgerentry ENABLE TRIGGER tenants_ledgerentry_totals")
        summed_now = billing._period_totals_summed(workspace.pk, period_start)
        cursor.execute("UPDATE public.tenants_creditperiodtotals SET balance = %s, available = %s, used = %s "
                       "WHERE workspace_id = %s AND period_start = %s",
                       [summed_now.balance, summed_now.available, summed_now.used, workspace.pk, period_start])
        cursor.execute("ANALYZE public.tenants_ledgerentry")
    fill_seconds = time.perf_counter() - started
    # The filler's usage took the balance below zero: consumptions now go the general way under the lock (overage),
    # which the empty period's did not. Measured as such, then the balance is given back (an operator's adjustment,
    # through the trigger) so that the full period's ordinary charge is measured on the same path as the empty one's.
    overage = {"consume": _timed_ms(consume, runs)}
    left = billing.credit_balance(workspace=workspace)
    billing.credits_grant(workspace=workspace, amount=entries + 10 * runs - min(left, 0), reason="bench: balance back")
    full = {"consume": _timed_ms(consume, runs), "summed_baseline": _timed_ms(summed, runs)}
    kept = billing._period_totals(workspace.pk, period_start)
    exact = kept == billing._period_totals_summed(workspace.pk, period_start)
    in_period = LedgerEntry.objects.filter(workspace_id=workspace.pk, period_start=period_start).count()
    return {
        "entries_in_period": in_period, "fill_seconds": round(fill_seconds, 1), "runs": runs,
        "empty_period": empty, "full_period": full,
        "full_period_in_overage": {**overage, "note": "balance below zero: the general way under the lock (overage "
                                   "entry), not the one-round-trip ordinary charge"},
        "consume_ratio_full_to_empty_p50": round(full["consume"]["p50_ms"] / empty["consume"]["p50_ms"], 3),
        "baseline_summed_ratio_full_to_empty_p50": round(
            full["summed_baseline"]["p50_ms"] / empty["summed_baseline"]["p50_ms"], 1),
        "totals_equal_ledger_sums": exact,
        "target": "consume ratio ≈ 1 (the same cost at 0 and at 1,000,000 entries)",
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "work":
        print(json.dumps(work(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
