"""The credit step reads a period's running totals (tenants.models.CreditPeriodTotals, kept by a trigger on ledger
inserts) instead of summing the period: they must always equal the ledger's own sums — through every kind of entry,
period rolls, concurrent consumers, and periods whose entries were written before the trigger existed."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tenants import billing
from tenants.models import CreditPeriodTotals, LedgerEntry, LedgerKind
from tests.tenants.test_billing import drain, workspace_on
from tests.tenants.test_credits_concurrency import run_at_once


def assert_totals_match_the_ledger(workspace) -> None:
    periods = set(LedgerEntry.objects.filter(workspace=workspace).values_list("period_start", flat=True))
    assert periods, "the workspace has no ledger entries: nothing was tested"
    for period_start in periods:
        kept = billing._period_totals(workspace.pk, period_start)
        summed = billing._period_totals_summed(workspace.pk, period_start)
        assert kept == summed, (period_start, kept, summed)


def test_totals_follow_every_kind_of_entry_and_the_period_roll():
    ws = workspace_on("pro")
    workspace = ws.workspace
    for n in range(5):
        billing.credits_consume(workspace=workspace, reference=f"message:t{n}")
    billing.credits_refund(workspace=workspace, reference="message:t1")
    billing.credits_consume(workspace=workspace, reference="message:t1")  # the retry, charged as message:t1#2
    billing.credits_grant(workspace=workspace, amount=7, reason="goodwill")
    billing.credits_grant(workspace=workspace, amount=-3, reason="correction")
    assert_totals_match_the_ledger(workspace)
    before = billing.credit_totals(workspace=workspace)
    assert before.used == 5 and before.balance == before.available - 5, before

    # The next period: an expiry closes this one, a grant opens the next (both through the trigger).
    later = billing.subscription_get(workspace=workspace).period_end + timedelta(days=1)
    billing.credits_consume(workspace=workspace, reference="message:next", now=later)
    assert_totals_match_the_ledger(workspace)
    expiry = LedgerEntry.objects.filter(workspace=workspace, kind=LedgerKind.EXPIRY).get()
    assert billing._period_totals(workspace.pk, expiry.period_start).balance == 0


def test_totals_stay_exact_under_concurrent_consumers():
    ws = workspace_on("free")
    drain(ws, leave=30)
    run_at_once([
        (lambda n=n: billing.credits_consume(workspace=ws.workspace, reference=f"message:c{n}")) for n in range(40)
    ])
    assert billing.credit_balance(workspace=ws.workspace) == 0
    assert_totals_match_the_ledger(ws.workspace)


def test_a_period_from_before_the_trigger_gets_its_totals_from_the_whole_ledger():
    ws = workspace_on("pro")
    workspace = ws.workspace
    for n in range(3):
        billing.credits_consume(workspace=workspace, reference=f"message:old{n}")
    # As if those entries were written by a release without the trigger: the period has no totals row.
    CreditPeriodTotals.objects.filter(workspace=workspace).delete()
    billing.credits_consume(workspace=workspace, reference="message:new", now=timezone.now())
    assert_totals_match_the_ledger(workspace)
    assert billing.credit_totals(workspace=workspace).used == 4
