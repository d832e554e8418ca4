"""Exact accounting under concurrency (issue #8's acceptance): many consumers at the same instant, each in its own
thread with its own PostgreSQL connection, released together by a barrier."""
from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import connection

from accounts.services import invitation_create
from config.errors import ApplicationError, QuotaExceeded
from tenants import billing
from tenants.models import LedgerEntry, Plan
from tests.tenants.test_billing import drain, ledger_sum, plan_make, workspace_on


def run_at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run every job in its own thread (so its own DB connection), all starting together; return what each
    returned or raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def worker(index: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=60)
            results[index] = job()
        except BaseException as exc:  # noqa: BLE001 -- the test inspects what each consumer got
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a consumer hung"
    return results


def test_fifty_answers_with_ten_credits_left():
    ws = workspace_on("free")  # no overage on the free plan
    drain(ws, leave=10)
    results = run_at_once([
        (lambda n=n: billing.credits_consume(workspace=ws.workspace, reason="answer", reference=f"message:{n}"))
        for n in range(50)
    ])
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    unexpected = [r for r in results if not isinstance(r, (LedgerEntry, QuotaExceeded))]
    assert unexpected == []
    assert len(entries) == 10 and len(refused) == 40
    assert all(e.kind == "usage" and e.amount == -1 for e in entries)
    assert len({e.reference for e in entries}) == 10
    for error in refused:
        assert error.code == "quota_exceeded" and error.status_code == 402
        assert error.details["meter"] == "credits" and error.details["used"] == error.details["limit"]
        assert error.details["how_to_lift"]
    assert billing.credit_balance(workspace=ws.workspace) == 0
    assert ledger_sum(ws) == 0  # the balance is the ledger's sum, exactly
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind="usage").count() == 10


def test_fifty_answers_with_ten_credits_left_on_a_plan_with_overage():
    ws = workspace_on("starter")  # overage 0.04 per answer
    drain(ws, leave=10)
    results = run_at_once([
        (lambda n=n: billing.credits_consume(workspace=ws.workspace, reference=f"message:{n}")) for n in range(50)
    ])
    assert all(isinstance(r, LedgerEntry) for r in results), [r for r in results if not isinstance(r, LedgerEntry)]
    assert Counter(r.kind for r in results) == {"usage": 10, "overage": 40}
    assert billing.credit_balance(workspace=ws.workspace) == -40 == ledger_sum(ws)
    invoice = billing.invoice_preview(workspace=ws.workspace)
    assert invoice.overage_units == 40 and invoice.total == Decimal("19.00") + Decimal("1.60")


def test_consumptions_refunds_and_retries_racing_each_other_stay_exact():
    ws = workspace_on("free")
    drain(ws, leave=20)
    for n in range(10):
        billing.credits_consume(workspace=ws.workspace, reference=f"early:{n}")  # 10 left
    jobs: list[Callable[[], Any]] = []
    jobs += [(lambda n=n: billing.credits_refund(workspace=ws.workspace, reference=f"early:{n}")) for n in range(10)]
    jobs += [(lambda n=n: billing.credits_refund(workspace=ws.workspace, reference=f"early:{n}")) for n in range(10)]
    jobs += [(lambda n=n: billing.credits_consume(workspace=ws.workspace, reference=f"late:{n}")) for n in range(25)]
    jobs += [(lambda n=n: billing.credits_consume(workspace=ws.workspace, reference=f"late:{n}")) for n in range(5)]
    results = run_at_once(jobs)
    unexpected = [r for r in results if not isinstance(r, (LedgerEntry, QuotaExceeded))]
    assert unexpected == []
    # Every refund happened exactly once, whatever the order; every late answer was charged at most once.
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind="refund").count() == 10
    late = LedgerEntry.objects.filter(workspace=ws.workspace, kind="usage", reference__startswith="late:")
    assert late.count() == len({e.reference for e in late})
    balance = billing.credit_balance(workspace=ws.workspace)
    assert balance == 20 - 10 + 10 - late.count() == ledger_sum(ws)
    # 10 credits were there from the start, 10 more came back; no more than that was spent, never below zero.
    assert 10 <= late.count() <= 20 and balance >= 0
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    charged = {e.reference for e in late}
    assert len(charged) + len(refused) >= 25  # each late reference was charged or refused (duplicates: either)


def test_the_last_seat_goes_to_exactly_one_of_many_simultaneous_invitations():
    plan: Plan = plan_make(max_seats=3)
    ws = workspace_on(plan.code)  # the owner holds one seat; two are free
    marker = secrets.token_hex(3)
    results = run_at_once([
        (lambda n=n: invitation_create(workspace=ws.workspace, email=f"p{n}-{marker}@example.test", role="viewer",
                                       invited_by=ws.owner, actor_role="owner"))
        for n in range(12)
    ])
    created = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, ApplicationError) and r.code == "plan_limit"]
    assert len(created) == 2 and len(refused) == 10, results
    assert billing.usage_count(workspace=ws.workspace, meter="seats") == 3
