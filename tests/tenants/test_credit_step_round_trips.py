"""The ordinary credit step of an answer is one round trip (issue #16): the subscription lock and the statement that
reads the period, its totals and an earlier charge and appends the USAGE entry go together. What it appends must be
what the general way appends, and everything out of the ordinary must still go the general way."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.errors import QuotaExceeded
from tenants import billing
from tenants.models import LedgerEntry, LedgerKind
from tests.tenants.test_billing import drain, plan_make, workspace_on
from tests.tenants.test_credit_totals import assert_totals_match_the_ledger


def test_an_ordinary_charge_is_one_round_trip_and_the_entry_is_the_ledgers():
    ws = workspace_on("pro")
    before = billing.credit_totals(workspace=ws.workspace)
    with CaptureQueriesContext(connection) as sent:
        entry = billing.credits_consume(workspace=ws.workspace, reference="message:rt1")
    assert len(sent.captured_queries) == 1, [q["sql"][:80] for q in sent.captured_queries]
    assert "FOR UPDATE" in sent.captured_queries[0]["sql"]
    stored = LedgerEntry.objects.get(pk=entry.pk)
    for name in ("workspace_id", "period_start", "kind", "amount", "charge", "plan", "reason", "reference",
                 "actor_label", "data"):
        assert getattr(stored, name) == getattr(entry, name), name
    assert stored.kind == LedgerKind.USAGE and stored.amount == -1 and stored.plan == ws.workspace.plan
    after = billing.credit_totals(workspace=ws.workspace)
    assert (after.balance, after.used) == (before.balance - 1, before.used + 1)
    assert_totals_match_the_ledger(ws.workspace)


def test_a_retry_refund_overage_refusal_and_roll_still_go_the_general_way():
    ws = workspace_on("pro")
    first = billing.credits_consume(workspace=ws.workspace, reference="message:g1")
    assert billing.credits_consume(workspace=ws.workspace, reference="message:g1").pk == first.pk  # a retry
    billing.credits_refund(workspace=ws.workspace, reference="message:g1")
    again = billing.credits_consume(workspace=ws.workspace, reference="message:g1")
    assert again.reference == "message:g1#2"
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind=LedgerKind.USAGE,
                                      reference__startswith="message:g1").count() == 2

    later = billing.subscription_get(workspace=ws.workspace).period_end + timedelta(days=1)
    rolled = billing.credits_consume(workspace=ws.workspace, reference="message:g2", now=later)
    assert rolled.period_start == billing.subscription_get(workspace=ws.workspace).period_start
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind=LedgerKind.EXPIRY).count() == 1
    assert_totals_match_the_ledger(ws.workspace)

    limited = workspace_on(plan_make(monthly_credits=2, allow_overage=False).code)
    drain(limited, leave=1)
    billing.credits_consume(workspace=limited.workspace, reference="message:l1")
    with pytest.raises(QuotaExceeded):
        billing.credits_consume(workspace=limited.workspace, reference="message:l2")
    assert billing.credit_balance(workspace=limited.workspace) == 0
    assert_totals_match_the_ledger(limited.workspace)


def test_writes_sent_along_share_the_round_trip_and_a_failing_one_never_costs_the_credit(caplog):
    ws = workspace_on("pro")
    pk = ws.workspace.pk
    before = billing.credit_balance(workspace=ws.workspace)
    with CaptureQueriesContext(connection) as sent:
        billing.credits_consume(workspace=ws.workspace, reference="message:a1",
                                along=[("UPDATE tenants_workspace SET name = %s WHERE id = %s", ["Along Co", pk])])
    assert len(sent.captured_queries) == 1
    ws.workspace.refresh_from_db()
    assert ws.workspace.name == "Along Co"

    entry = billing.credits_consume(workspace=ws.workspace, reference="message:a2", along=[("SELECT 1 / 0", [])])
    assert entry.reference == "message:a2" and LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert billing.credit_balance(workspace=ws.workspace) == before - 2
    assert "the writes sent with a credit step" in caplog.text
    assert_totals_match_the_ledger(ws.workspace)
