"""Plans, billing periods, the credit ledger, plan changes, overage pricing, limits and warnings (docs/billing.md).

Everything runs on the real test database through the services; time-dependent rules are exercised by passing
`now` to the services (the period arithmetic is pure, the rest takes the instant it acts at).
"""
from __future__ import annotations

import csv
import io
import math
import secrets
from datetime import UTC, datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.core import mail
from django.db import IntegrityError, transaction

from accounts.models import AuditEntry, Membership
from accounts.services import (
    api_key_create,
    audit_record,
    invitation_create,
    invitation_revoke,
    membership_create,
    workspace_ownership_transfer,
    workspace_signup,
)
from config.errors import ApplicationError, NotFound, QuotaExceeded, ValidationFailed
from tenants import billing
from tenants.models import LedgerEntry, LedgerKind, Plan, Subscription, UsageAlert, Workspace
from tenants.services import workspace_create
from tests.factories import PASSWORD, UserFactory, WorkspaceWithOwner, member, unique_slug

# --- helpers ---------------------------------------------------------------------------------------------------


def workspace_on(plan: str) -> WorkspaceWithOwner:
    owner, result = workspace_signup(
        email=f"owner-{secrets.token_hex(4)}@example.test", password=PASSWORD, workspace_name="Billing Co",
        slug=unique_slug("bill"), plan=plan,
    )
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def plan_make(**overrides) -> Plan:
    """A hidden plan for one test (plans are data: staff create them in the admin)."""
    values = dict(code=f"t-{secrets.token_hex(4)}", name="Test plan", tier=0, is_public=False, price=Decimal("10.00"),
                  overage_price=Decimal("0.0500"), allow_overage=False, monthly_credits=10, max_documents=5,
                  max_storage_bytes=1000, max_widgets=1, max_seats=3, api_requests_per_minute=10,
                  chat_messages_per_minute=5, allowed_providers=["builtin"])
    values.update(overrides)
    return Plan.objects.create(**values)


def subscription(ws: WorkspaceWithOwner) -> Subscription:
    return Subscription.objects.get(workspace=ws.workspace)


def ledger_sum(ws: WorkspaceWithOwner) -> int:
    return sum(LedgerEntry.objects.filter(workspace=ws.workspace).values_list("amount", flat=True))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def drain(ws: WorkspaceWithOwner, *, leave: int) -> None:
    """Take the balance down to `leave` with a manual adjustment (an operator's)."""
    balance = billing.credit_balance(workspace=ws.workspace)
    if balance != leave:
        billing.credits_grant(workspace=ws.workspace, amount=leave - balance, reason="test: set the balance")


# --- period arithmetic (pure) ----------------------------------------------------------------------------------


def test_the_last_microsecond_of_a_month_belongs_to_its_period():
    anchor = utc(2025, 1, 1)
    assert billing.period_bounds(anchor=anchor, at=utc(2025, 1, 31, 23, 59, 59, 999999)) == (utc(2025, 1, 1), utc(2025, 2, 1))
    assert billing.period_bounds(anchor=anchor, at=utc(2025, 2, 1)) == (utc(2025, 2, 1), utc(2025, 3, 1))
    assert billing.period_bounds(anchor=anchor, at=utc(2025, 12, 31, 23, 59, 59)) == (utc(2025, 12, 1), utc(2026, 1, 1))


def test_an_anchor_on_the_31st_clamps_to_short_months_and_comes_back():
    anchor = utc(2023, 1, 31, 10, 0)
    starts = [billing.period_bounds(anchor=anchor, at=utc(2023, m, 28, 12, 0) if m != 1 else anchor)[0]
              for m in (1, 3, 5)]
    assert starts == [anchor, utc(2023, 2, 28, 10, 0), utc(2023, 4, 30, 10, 0)]
    # Feb 28 09:59:59 still belongs to January's period; 10:00 opens February's, which runs to Mar 31 (not Mar 28).
    assert billing.period_bounds(anchor=anchor, at=utc(2023, 2, 28, 9, 59, 59)) == (anchor, utc(2023, 2, 28, 10, 0))
    assert billing.period_bounds(anchor=anchor, at=utc(2023, 2, 28, 10, 0)) == (utc(2023, 2, 28, 10, 0), utc(2023, 3, 31, 10, 0))


def test_leap_years():
    assert billing.period_bounds(anchor=utc(2024, 1, 31), at=utc(2024, 2, 29, 12)) == (utc(2024, 2, 29), utc(2024, 3, 31))
    assert billing.period_bounds(anchor=utc(2023, 1, 31), at=utc(2023, 3, 1)) == (utc(2023, 2, 28), utc(2023, 3, 31))
    leap = utc(2024, 2, 29, 8)
    assert billing.period_bounds(anchor=leap, at=utc(2025, 2, 28, 8)) == (utc(2025, 2, 28, 8), utc(2025, 3, 29, 8))
    assert billing.period_bounds(anchor=leap, at=utc(2028, 2, 29, 8)) == (utc(2028, 2, 29, 8), utc(2028, 3, 29, 8))
    assert billing.period_bounds(anchor=leap, at=utc(2028, 2, 29, 7, 59)) == (utc(2028, 1, 29, 8), utc(2028, 2, 29, 8))


def test_periods_tile_time_without_gaps_or_overlaps():
    """For anchors on the 28th-31st of every month of a leap and a common year, 30 consecutive periods chain:
    each ends where the next starts, the last microsecond stays in its period, and each is 28-31 days long."""
    for year in (2023, 2024):
        for month in range(1, 13):
            for day in (28, 29, 30, 31):
                try:
                    anchor = utc(year, month, day, 23, 59, 59)
                except ValueError:
                    continue
                start, end = billing.period_bounds(anchor=anchor, at=anchor)
                assert start == anchor
                for _ in range(30):
                    assert billing.period_bounds(anchor=anchor, at=end - timedelta(microseconds=1)) == (start, end)
                    nxt = billing.period_bounds(anchor=anchor, at=end)
                    assert nxt[0] == end and timedelta(days=28) <= end - start <= timedelta(days=31)
                    start, end = nxt
                    assert start.day == min(day, [31, 29 if start.year % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30,
                                                  31, 30, 31][start.month - 1])


def test_periods_are_computed_in_utc():
    anchor = datetime(2025, 3, 1, 0, 30, tzinfo=dt_timezone(timedelta(hours=2)))  # = Feb 28 22:30 UTC
    start, end = billing.period_bounds(anchor=anchor, at=anchor)
    assert start == utc(2025, 2, 28, 22, 30) and end == utc(2025, 3, 28, 22, 30)
    with pytest.raises(ValueError):
        billing.period_bounds(anchor=datetime(2025, 1, 1), at=datetime(2025, 2, 1))  # naive
    with pytest.raises(ValueError):
        billing.period_bounds(anchor=utc(2025, 1, 1), at=utc(2024, 12, 31))


def test_a_month_names_the_period_that_starts_in_it():
    anchor = utc(2024, 1, 31, 6)
    assert billing.period_for_month(anchor=anchor, month="2024-02") == (utc(2024, 2, 29, 6), utc(2024, 3, 31, 6))
    assert billing.period_for_month(anchor=anchor, month="2024-01") == (anchor, utc(2024, 2, 29, 6))
    for bad in ("2024-13", "2024-1", "24-01", "2023-12", "januar"):
        with pytest.raises(ValidationFailed):
            billing.period_for_month(anchor=anchor, month=bad)


# --- plans and subscriptions -----------------------------------------------------------------------------------


def test_seeded_plans_are_ordered_and_priced():
    plans = {p.code: p for p in billing.plan_list()}
    assert list(plans) == ["free", "starter", "pro", "enterprise"]
    assert plans["free"].price == 0 and not plans["free"].allow_overage
    assert plans["pro"].price == Decimal("99.00") and plans["pro"].allow_overage
    assert plans["enterprise"].max_documents is None  # unlimited


def test_signup_opens_the_first_period_and_grants_the_plans_credits():
    signup_began = datetime.now(UTC)
    ws = workspace_on("starter")
    signup_ended = datetime.now(UTC)
    sub = subscription(ws)
    assert sub.anchor == sub.period_start and sub.period_end == billing.period_bounds(anchor=sub.anchor, at=sub.anchor)[1]
    # Anchored at the signup itself (bracketed by clock reads, not by a duration that a loaded machine could exceed).
    assert signup_began <= ws.workspace.created_at <= signup_ended and signup_began <= sub.anchor <= signup_ended
    [grant] = LedgerEntry.objects.filter(workspace=ws.workspace)
    assert (grant.kind, grant.amount, grant.charge, grant.period_start) == ("grant", 2000, Decimal("19.00"), sub.period_start)
    assert billing.credit_balance(workspace=ws.workspace) == 2000


def test_unknown_plans_are_refused_with_a_clear_code_and_leave_nothing():
    slug = unique_slug("nope")
    with pytest.raises(ValidationFailed) as caught:
        workspace_create(slug=slug, name="Nope", plan="gold")
    assert caught.value.code == "plan_unknown" and "pro" in caught.value.details["allowed"]
    assert not Workspace.objects.filter(slug=slug).exists()


def test_the_database_refuses_a_plan_code_that_names_no_plan():
    ws = workspace_on("free")
    with pytest.raises(IntegrityError), transaction.atomic():
        Workspace.objects.filter(pk=ws.workspace.pk).update(plan="no-such-plan")


def test_ledger_entries_are_append_only_in_the_database():
    ws = workspace_on("free")
    entry = LedgerEntry.objects.filter(workspace=ws.workspace).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=10**6)
    assert LedgerEntry.objects.get(pk=entry.pk).amount == 100


def test_a_workspace_from_before_billing_gets_its_subscription_on_first_use():
    ws = workspace_on("free")
    # What a workspace created before the billing migration looks like: no subscription, no ledger.
    LedgerEntry.objects.filter(workspace=ws.workspace).delete()
    Subscription.objects.filter(workspace=ws.workspace).delete()
    assert billing.credit_balance(workspace=ws.workspace) == 100
    sub = subscription(ws)
    assert sub.anchor == ws.workspace.created_at and sub.period_start <= datetime.now(UTC) < sub.period_end


# --- consuming, refunding, granting ----------------------------------------------------------------------------


def test_consume_is_idempotent_per_reference_and_refund_gives_it_back_once():
    ws = workspace_on("free")
    first = billing.credits_consume(workspace=ws.workspace, reference="message:1")
    again = billing.credits_consume(workspace=ws.workspace, reference="message:1")
    assert first.pk == again.pk and first.kind == LedgerKind.USAGE and first.amount == -1
    assert billing.credit_balance(workspace=ws.workspace) == 99
    refund = billing.credits_refund(workspace=ws.workspace, reference="message:1")
    assert (refund.kind, refund.amount) == ("refund", 1)
    assert billing.credits_refund(workspace=ws.workspace, reference="message:1").pk == refund.pk
    assert billing.credit_balance(workspace=ws.workspace) == 100 == ledger_sum(ws)
    with pytest.raises(NotFound):
        billing.credits_refund(workspace=ws.workspace, reference="message:never")
    with pytest.raises(ValidationFailed):
        billing.credits_consume(workspace=ws.workspace, reference="  ")
    with pytest.raises(ValidationFailed):
        billing.credits_consume(workspace=ws.workspace, amount=0, reference="message:2")


def test_out_of_credits_is_quota_exceeded_with_what_was_hit_and_how_to_lift_it():
    ws = workspace_on("free")
    drain(ws, leave=1)
    billing.credits_consume(workspace=ws.workspace, reference="message:last")
    with pytest.raises(QuotaExceeded) as caught:
        billing.credits_consume(workspace=ws.workspace, reference="message:one-too-many")
    error = caught.value
    assert error.code == "quota_exceeded" and error.status_code == 402
    assert {"meter", "limit", "used", "how_to_lift"} <= set(error.details)
    assert error.details["meter"] == "credits" and error.details["limit"] == 1 and error.details["used"] == 1
    assert "Upgrade" in error.details["how_to_lift"]
    assert billing.credit_balance(workspace=ws.workspace) == 0 == ledger_sum(ws)
    assert not LedgerEntry.objects.filter(workspace=ws.workspace, reference="message:one-too-many").exists()


def test_manual_adjustments_need_a_reason_never_go_below_zero_and_are_audited():
    ws = workspace_on("free")
    entry = billing.credits_grant(workspace=ws.workspace, amount=25, reason="support goodwill", actor=ws.owner)
    assert (entry.kind, entry.amount, entry.actor_label) == ("adjustment", 25, ws.owner.email)
    assert billing.credit_balance(workspace=ws.workspace) == 125
    with pytest.raises(ValidationFailed):
        billing.credits_grant(workspace=ws.workspace, amount=5, reason="  ")
    with pytest.raises(ValidationFailed):
        billing.credits_grant(workspace=ws.workspace, amount=-126, reason="claw back too much")
    audit = AuditEntry.objects.get(workspace=ws.workspace, action="credits.adjusted")
    assert audit.actor == ws.owner and audit.data["amount"] == 25 and audit.data["reason"] == "support goodwill"
    billing.credits_grant(workspace=ws.workspace, amount=1, reason="once", reference="ticket-7")
    with pytest.raises(ApplicationError) as caught:
        billing.credits_grant(workspace=ws.workspace, amount=1, reason="once", reference="ticket-7")
    assert caught.value.status_code == 409


# --- periods in use --------------------------------------------------------------------------------------------


def test_rollover_expires_the_balance_grants_the_new_period_and_is_idempotent():
    ws = workspace_on("starter")
    sub = subscription(ws)
    first_start, first_end = sub.period_start, sub.period_end
    billing.credits_consume(workspace=ws.workspace, amount=30, reference="bulk:1")
    billing.subscription_roll(workspace=ws.workspace, now=first_end - timedelta(microseconds=1))
    assert subscription(ws).period_start == first_start  # the last microsecond still belongs to the old period
    billing.subscription_roll(workspace=ws.workspace, now=first_end)
    billing.subscription_roll(workspace=ws.workspace, now=first_end + timedelta(hours=1))  # again: nothing new
    sub = subscription(ws)
    assert sub.period_start == first_end
    expiry = LedgerEntry.objects.get(workspace=ws.workspace, kind="expiry")
    assert (expiry.amount, expiry.period_start) == (-1970, first_start)
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind="grant", period_start=first_end).count() == 1
    assert billing.credit_balance(workspace=ws.workspace) == 2000 == ledger_sum(ws)
    # The closed period's invoice is still there, computed from its entries.
    assert billing.invoice_preview(workspace=ws.workspace, period_start=first_start).total == Decimal("19.00")


def test_first_use_in_a_new_period_rolls_lazily_and_missed_periods_are_each_billed():
    ws = workspace_on("starter")
    sub = subscription(ws)
    anchor = sub.anchor
    third_period_start = billing.period_bounds(anchor=anchor, at=anchor + timedelta(days=95))[0]
    entry = billing.credits_consume(workspace=ws.workspace, reference="message:late", now=third_period_start + timedelta(seconds=1))
    assert entry.period_start == third_period_start
    grants = LedgerEntry.objects.filter(workspace=ws.workspace, kind="grant").order_by("period_start")
    assert len(grants) == 4  # the first period and the three that followed, each with the plan's price
    for grant in grants:
        invoice = billing.invoice_preview(workspace=ws.workspace, period_start=grant.period_start)
        assert invoice.total == Decimal("19.00") and invoice.period_start == grant.period_start
    assert LedgerEntry.objects.filter(workspace=ws.workspace, kind="expiry").count() == 3
    assert billing.credit_balance(workspace=ws.workspace) == 1999 == ledger_sum(ws)


def test_the_beat_task_rolls_due_subscriptions():
    from tenants.tasks import billing_periods_roll

    ws = workspace_on("free")
    billing_periods_roll()  # now: nothing of ours is due yet
    assert subscription(ws).period_start == subscription(ws).anchor
    end = subscription(ws).period_end
    assert billing.subscriptions_roll_due(now=end + timedelta(minutes=1)) >= 1
    assert subscription(ws).period_start == end


# --- plan changes mid-period -----------------------------------------------------------------------------------


def test_an_upgrade_is_immediate_with_prorated_credits_and_price():
    ws = workspace_on("free")
    sub = subscription(ws)
    halfway = sub.period_start + (sub.period_end - sub.period_start) / 2
    billing.credits_consume(workspace=ws.workspace, amount=40, reference="bulk:1", now=halfway - timedelta(days=1))
    change = billing.plan_change(workspace=ws.workspace, code="pro", actor=ws.owner, now=halfway)
    assert change.kind == "upgraded" and change.fraction_remaining == Decimal("0.5")
    assert change.credits_granted == (10_000 - 100) // 2 and change.charge == Decimal("49.50")
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "pro" == ws.workspace.plan
    assert billing.credit_balance(workspace=ws.workspace) == 100 - 40 + 4950
    invoice = billing.invoice_preview(workspace=ws.workspace)
    assert invoice.total == Decimal("49.50")
    assert [line.description for line in invoice.lines] == ["Upgrade to Pro, prorated"]
    audit = AuditEntry.objects.get(workspace=ws.workspace, action="plan.changed")
    assert audit.actor == ws.owner and audit.data["from"] == "free" and audit.data["to"] == "pro"


def test_an_upgrade_rounds_credits_up_and_the_charge_to_the_cent():
    ws = workspace_on("starter")
    sub = subscription(ws)
    a_third_left = sub.period_end - (sub.period_end - sub.period_start) / 3
    change = billing.plan_change(workspace=ws.workspace, code="pro", now=a_third_left)
    fraction = change.fraction_remaining
    assert Decimal("0.333333") <= fraction <= Decimal("0.333334")
    assert change.credits_granted == math.ceil(8000 * fraction) == 2667  # rounded up, in the customer's favour
    assert change.charge == (Decimal(80) * fraction).quantize(Decimal("0.01"))
    assert billing.invoice_preview(workspace=ws.workspace).total == Decimal("19.00") + change.charge


def test_a_downgrade_waits_for_the_period_end():
    ws = workspace_on("pro")
    sub = subscription(ws)
    mid = sub.period_start + timedelta(days=3)
    change = billing.plan_change(workspace=ws.workspace, code="starter", actor=ws.owner, now=mid)
    assert change.kind == "downgrade_scheduled" and change.effective_at == sub.period_end
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "pro"  # pro limits and credits until the end
    assert subscription(ws).scheduled_plan_id == "starter"
    assert billing.credit_balance(workspace=ws.workspace) == 10_000
    billing.subscription_roll(workspace=ws.workspace, now=sub.period_end)
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "starter"
    assert subscription(ws).scheduled_plan_id is None
    new_grant = LedgerEntry.objects.get(workspace=ws.workspace, kind="grant", period_start=sub.period_end)
    assert (new_grant.amount, new_grant.charge, new_grant.plan) == (2000, Decimal("19.00"), "starter")
    actions = list(AuditEntry.objects.filter(workspace=ws.workspace, action__startswith="plan.").order_by("id")
                   .values_list("action", "actor_label"))
    assert actions == [("plan.downgrade_scheduled", ws.owner.email), ("plan.changed", "system")]


def test_choosing_the_current_plan_cancels_a_scheduled_downgrade_and_an_upgrade_overrides_it():
    ws = workspace_on("pro")
    billing.plan_change(workspace=ws.workspace, code="free")
    assert billing.plan_change(workspace=ws.workspace, code="pro").kind == "downgrade_cancelled"
    assert subscription(ws).scheduled_plan_id is None
    assert billing.plan_change(workspace=ws.workspace, code="pro").kind == "unchanged"
    billing.plan_change(workspace=ws.workspace, code="starter")
    assert billing.plan_change(workspace=ws.workspace, code="enterprise").kind == "upgraded"
    assert subscription(ws).scheduled_plan_id is None
    with pytest.raises(ValidationFailed) as caught:
        billing.plan_change(workspace=ws.workspace, code="platinum")
    assert caught.value.code == "plan_unknown"


# --- overage ---------------------------------------------------------------------------------------------------


def test_overage_is_priced_per_answer_split_from_covered_usage_and_refundable():
    ws = workspace_on("starter")  # 2000 credits, 19.00, overage 0.04 per answer
    drain(ws, leave=2)
    first = billing.credits_consume(workspace=ws.workspace, amount=5, reference="batch:1")
    entries = {e.kind: e for e in LedgerEntry.objects.filter(workspace=ws.workspace, reference="batch:1")}
    assert first.kind == "usage" and entries["usage"].amount == -2
    assert entries["overage"].amount == -3 and entries["overage"].charge == Decimal("0.1200")
    billing.credits_consume(workspace=ws.workspace, reference="answer:2")  # all overage now
    assert billing.credit_balance(workspace=ws.workspace) == -4 == ledger_sum(ws)
    invoice = billing.invoice_preview(workspace=ws.workspace)
    assert invoice.overage_units == 4 and invoice.total == Decimal("19.16")
    assert [(line.quantity, line.amount) for line in invoice.lines] == [(1, Decimal("19.00")), (4, Decimal("0.16"))]
    assert sum(line.amount for line in invoice.lines) == invoice.total

    billing.credits_refund(workspace=ws.workspace, reference="batch:1")  # the answer failed after all
    invoice = billing.invoice_preview(workspace=ws.workspace)
    assert invoice.overage_units == 1 and invoice.total == Decimal("19.04")
    assert billing.credit_balance(workspace=ws.workspace) == 1


def test_the_owner_can_cap_spending_by_turning_overage_off():
    ws = workspace_on("starter")
    drain(ws, leave=0)
    billing.overage_set(workspace=ws.workspace, enabled=False, actor=ws.owner)
    with pytest.raises(QuotaExceeded) as caught:
        billing.credits_consume(workspace=ws.workspace, reference="answer:1")
    assert "overage" in caught.value.details["how_to_lift"].lower()
    billing.overage_set(workspace=ws.workspace, enabled=True, actor=ws.owner)
    assert billing.credits_consume(workspace=ws.workspace, reference="answer:1").kind == "overage"
    actions = set(AuditEntry.objects.filter(workspace=ws.workspace).values_list("action", flat=True))
    assert {"billing.overage_disabled", "billing.overage_enabled"} <= actions


def test_overage_of_a_closed_period_stays_on_its_invoice():
    ws = workspace_on("starter")
    drain(ws, leave=0)
    billing.credits_consume(workspace=ws.workspace, amount=10, reference="bulk:over")
    sub = subscription(ws)
    billing.subscription_roll(workspace=ws.workspace, now=sub.period_end)
    closed = billing.invoice_preview(workspace=ws.workspace, period_start=sub.period_start)
    assert closed.overage_units == 10 and closed.total == Decimal("19.40")
    expiry = LedgerEntry.objects.get(workspace=ws.workspace, kind="expiry")
    assert expiry.amount == 10 and "overage" in expiry.reason  # the debt is settled by the invoice, not carried
    assert billing.credit_balance(workspace=ws.workspace) == 2000 == ledger_sum(ws)


# --- limits, rate limits, providers ----------------------------------------------------------------------------


def test_plan_limit_check_refuses_what_would_pass_the_limit_and_says_how_to_lift_it():
    plan = plan_make(max_documents=3, max_storage_bytes=None)
    ws = workspace_on(plan.code)
    billing.plan_limit_check(workspace=ws.workspace, meter="documents", adding=1, used=2)
    with pytest.raises(QuotaExceeded) as caught:
        billing.plan_limit_check(workspace=ws.workspace, meter="documents", adding=2, used=2)
    error = caught.value
    assert error.code == "plan_limit" and error.status_code == 402
    assert (error.details["meter"], error.details["limit"], error.details["used"], error.details["adding"]) == (
        "documents", 3, 2, 2)
    assert "Delete documents" in error.details["how_to_lift"]
    billing.plan_limit_check(workspace=ws.workspace, meter="storage_bytes", adding=10**12, used=10**12)  # unlimited
    with pytest.raises(ValueError):
        billing.plan_limit_check(workspace=ws.workspace, meter="credits", used=0)


def test_plan_limit_check_asks_the_registered_counter_when_not_told():
    plan = plan_make(max_widgets=2)
    ws = workspace_on(plan.code)
    previous = billing._usage_counters.get("widgets")  # embeds registers the real one; put it back afterwards
    try:
        billing.usage_counter_register("widgets", lambda workspace: 2 if workspace.pk == ws.workspace.pk else 0)
        with pytest.raises(QuotaExceeded) as caught:
            billing.plan_limit_check(workspace=ws.workspace, meter="widgets")
        assert caught.value.details["used"] == 2 and caught.value.details["limit"] == 2
        assert billing.usage_summary(workspace=ws.workspace)["meters"]["widgets"]["percent"] == 100
        billing._usage_counters.pop("widgets")
        with pytest.raises(RuntimeError):  # enforcement fails closed without a count
            billing.plan_limit_check(workspace=ws.workspace, meter="widgets")
        assert billing.usage_summary(workspace=ws.workspace)["meters"]["widgets"]["used"] is None
        with pytest.raises(ValueError):
            billing.usage_counter_register("answers", lambda workspace: 0)
    finally:
        if previous is not None:
            billing.usage_counter_register("widgets", previous)


def test_rate_limits_and_providers_come_from_the_plan():
    free, enterprise = workspace_on("free"), workspace_on("enterprise")
    assert billing.plan_rate_limit(workspace=free.workspace, name="api_requests") == "60/m"
    assert billing.plan_rate_limit(workspace=enterprise.workspace, name="chat_messages") == "3000/m"
    billing.plan_provider_check(workspace=free.workspace, provider="builtin")
    with pytest.raises(QuotaExceeded) as caught:
        billing.plan_provider_check(workspace=free.workspace, provider="openai")
    assert caught.value.code == "plan_limit" and caught.value.details["meter"] == "providers"
    billing.plan_provider_check(workspace=enterprise.workspace, provider="anthropic")


def test_seats_count_members_and_pending_invitations():
    plan = plan_make(max_seats=3)
    ws = workspace_on(plan.code)
    member(ws.workspace, "agent")  # owner + agent = 2
    invitation, _token = invitation_create(workspace=ws.workspace, email="third@example.test", role="viewer",
                                           invited_by=ws.owner, actor_role="owner")  # 3
    with pytest.raises(QuotaExceeded) as caught:
        invitation_create(workspace=ws.workspace, email="fourth@example.test", role="viewer", invited_by=ws.owner,
                          actor_role="owner")
    assert caught.value.code == "plan_limit" and caught.value.details["meter"] == "seats"
    assert caught.value.details["limit"] == 3 and caught.value.details["used"] == 3
    with pytest.raises(QuotaExceeded):
        membership_create(workspace=ws.workspace, user=UserFactory(), role="viewer")
    # Re-inviting the same person replaces their invitation: it doesn't need another seat.
    invitation_create(workspace=ws.workspace, email="third@example.test", role="agent", invited_by=ws.owner,
                      actor_role="owner")
    invitation_revoke(invitation=ws.workspace.invitations.get(email="third@example.test", revoked_at__isnull=True),
                      actor=ws.owner)
    invitation_create(workspace=ws.workspace, email="fourth@example.test", role="viewer", invited_by=ws.owner,
                      actor_role="owner")
    assert billing.usage_count(workspace=ws.workspace, meter="seats") == 3


def test_warnings_at_80_and_100_percent_once_per_period_with_an_email_to_owners(host_client):
    plan = plan_make(monthly_credits=10, max_seats=None)  # (3 of 3 seats would warn too)
    ws = workspace_on(plan.code)
    admin = member(ws.workspace, "admin")
    agent = member(ws.workspace, "agent")
    mail.outbox.clear()
    for n in range(7):
        billing.credits_consume(workspace=ws.workspace, reference=f"answer:{n}")
    assert not UsageAlert.objects.filter(workspace=ws.workspace).exists() and mail.outbox == []
    billing.credits_consume(workspace=ws.workspace, reference="answer:7")  # 8 of 10
    billing.credits_consume(workspace=ws.workspace, reference="answer:8")
    assert list(UsageAlert.objects.filter(workspace=ws.workspace).values_list("meter", "threshold")) == [("credits", 80)]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [ws.owner.email] and "80%" in mail.outbox[0].subject
    billing.credits_consume(workspace=ws.workspace, reference="answer:9")  # 10 of 10
    with pytest.raises(QuotaExceeded):
        billing.credits_consume(workspace=ws.workspace, reference="answer:10")
    assert sorted(UsageAlert.objects.filter(workspace=ws.workspace).values_list("threshold", flat=True)) == [80, 100]
    assert len(mail.outbox) == 2 and "reached" in mail.outbox[1].subject

    owner_page = host_client(ws.host)
    owner_page.force_login(admin)
    body = owner_page.get("/").content.decode()
    assert "reached its plan&#x27;s limit of answers" in body or "reached its plan's limit of answers" in body
    agent_page = host_client(ws.host)
    agent_page.force_login(agent)
    assert 'data-testid="usage-banner"' not in agent_page.get("/").content.decode()

    # A new period starts quiet, and warns again when it gets there.
    sub = subscription(ws)
    billing.subscription_roll(workspace=ws.workspace, now=sub.period_end)
    assert billing.usage_alerts_current(workspace=ws.workspace) == []


def test_limit_warnings_for_other_meters():
    plan = plan_make(max_documents=5)
    ws = workspace_on(plan.code)
    mail.outbox.clear()
    billing.plan_limit_check(workspace=ws.workspace, meter="documents", adding=1, used=3)  # 4 of 5 = 80 %
    billing.plan_limit_check(workspace=ws.workspace, meter="documents", adding=1, used=3)  # again: no new warning
    assert [(a.meter, a.threshold) for a in billing.usage_alerts_current(workspace=ws.workspace)] == [("documents", 80)]
    assert len(mail.outbox) == 1 and "documents" in mail.outbox[0].subject


# --- usage summary, pages and API ------------------------------------------------------------------------------


def test_usage_summary_counts_this_period():
    ws = workspace_on("starter")
    member(ws.workspace, "agent")
    billing.credits_consume(workspace=ws.workspace, amount=3, reference="bulk:1")
    summary = billing.usage_summary(workspace=ws.workspace)
    assert summary["meters"]["credits"] == {"label": "Answers", "unit": "answers", "used": 3, "limit": 2000, "percent": 0}
    assert summary["meters"]["seats"]["used"] == 2 and summary["meters"]["seats"]["limit"] == 15
    assert summary["credits"] == {"balance": 1997, "available": 2000, "used": 3, "overage": 0, "entries": 2}
    assert summary["invoice"]["total"] == "19.00" and summary["period"]["current"]
    with pytest.raises(ValidationFailed):
        billing.usage_summary(workspace=ws.workspace, month="2999-01")


def test_usage_api_and_subscription_api_follow_the_role_matrix(host_client):
    ws = workspace_on("free")
    admin, viewer = member(ws.workspace, "admin"), member(ws.workspace, "viewer")
    client = host_client(ws.host)
    client.force_login(admin)
    body = client.get("/api/v1/usage/").json()
    assert body["plan"]["code"] == "free" and body["meters"]["credits"]["limit"] == 100
    assert body["invoice"]["total"] == "0.00" and body["ledger"][0]["kind"] == "grant"
    assert client.get("/api/v1/usage/ledger/?period=current").json()["count"] == 1
    assert [p["code"] for p in client.get("/api/v1/plans/").json()] == ["free", "starter", "pro", "enterprise"]
    response = client.patch("/api/v1/subscription/", {"plan": "pro"}, content_type="application/json")
    assert response.status_code == 403  # an admin sees billing; only an owner changes it

    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    response = owner.patch("/api/v1/subscription/", {"plan": "pro"}, content_type="application/json")
    assert response.status_code == 200 and response.json()["change"]["kind"] == "upgraded"
    assert response.json()["plan"]["code"] == "pro"
    response = owner.patch("/api/v1/subscription/", {"plan": "gold"}, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "plan_unknown"
    assert owner.patch("/api/v1/subscription/", {}, content_type="application/json").status_code == 400

    viewer_client = host_client(ws.host)
    viewer_client.force_login(viewer)
    assert viewer_client.get("/api/v1/usage/").status_code == 403
    _key, raw = api_key_create(workspace=ws.workspace, name="monitor", scopes=["read"])
    keyed = host_client(ws.host, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert keyed.get("/api/v1/usage/").status_code == 200
    assert keyed.patch("/api/v1/subscription/", {"plan": "free"}, content_type="application/json").status_code == 403


def test_billing_page_shows_usage_and_lets_only_the_owner_change_the_plan(host_client):
    ws = workspace_on("free")
    admin = member(ws.workspace, "admin")
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    page = owner.get("/settings/billing/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="meters"' in html and "Upgrade now" in html and 'data-testid="credit-balance">100<' in html
    response = owner.post("/settings/billing/plan/", {"plan": "starter"})
    assert response.status_code == 302 and Workspace.objects.get(pk=ws.workspace.pk).plan == "starter"
    assert owner.post("/settings/billing/plan/", {"plan": "gold"}).status_code == 302
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "starter"
    owner.post("/settings/billing/overage/", {"enabled": "0"})
    assert subscription(ws).overage_enabled is False

    admin_client = host_client(ws.host)
    admin_client.force_login(admin)
    html = admin_client.get("/settings/billing/").content.decode()
    assert "Upgrade now" not in html and "Only an owner can change the plan" in html
    assert admin_client.post("/settings/billing/plan/", {"plan": "pro"}).status_code == 403
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "starter"


# --- team: ownership, audit --------------------------------------------------------------------------------------


def test_ownership_transfer_keeps_an_owner_and_is_audited(host_client):
    ws = workspace_on("free")
    admin, agent = member(ws.workspace, "admin"), member(ws.workspace, "agent")
    agent_membership = Membership.objects.get(workspace=ws.workspace, user=agent)
    with pytest.raises(ApplicationError) as caught:
        workspace_ownership_transfer(workspace=ws.workspace, to_membership=agent_membership, actor=admin)
    assert caught.value.status_code == 403
    workspace_ownership_transfer(workspace=ws.workspace, to_membership=agent_membership, actor=ws.owner)
    roles = dict(Membership.objects.filter(workspace=ws.workspace).values_list("user__email", "role"))
    assert roles[agent.email] == "owner" and roles[ws.owner.email] == "admin"
    entry = AuditEntry.objects.get(workspace=ws.workspace, action="workspace.ownership_transferred")
    assert entry.actor == ws.owner and entry.target == agent.email

    # The dashboard and the API take the same path; only owners may.
    new_owner = host_client(ws.host)
    new_owner.force_login(agent)
    back = Membership.objects.get(workspace=ws.workspace, user=ws.owner)
    response = new_owner.post("/team/transfer/", {"membership_id": back.pk})
    assert response.status_code == 302
    assert Membership.objects.get(pk=back.pk).role == "owner"
    former = host_client(ws.host)
    former.force_login(agent)  # an admin now
    response = former.post("/api/v1/ownership-transfer/", {"membership_id": back.pk}, content_type="application/json")
    assert response.status_code == 403
    assert Membership.objects.filter(workspace=ws.workspace, role="owner").count() == 1


def test_audit_log_exports_as_csv_from_the_page_and_the_api(host_client):
    ws = workspace_on("free")
    viewer = member(ws.workspace, "viewer")
    audit_record(workspace=ws.workspace, actor=ws.owner, action="embed.origins_changed", target="=HYPERLINK(\"x\")",
                 data={"added": ["https://shop.example"]})
    client = host_client(ws.host)
    client.force_login(ws.owner)
    for path in ("/settings/audit-log/export/", "/api/v1/audit-log/export/"):
        response = client.get(path, HTTP_ACCEPT="text/csv")
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        actions = [row["action"] for row in rows]
        assert actions[0] == "workspace.created" and "embed.origins_changed" in actions
        injected = next(row for row in rows if row["action"] == "embed.origins_changed")
        assert injected["target"] == "'=HYPERLINK(\"x\")" and injected["actor"] == ws.owner.email
        assert "shop.example" in injected["data"]
    viewer_client = host_client(ws.host)
    viewer_client.force_login(viewer)
    assert viewer_client.get("/settings/audit-log/export/").status_code == 403
    response = viewer_client.get("/api/v1/audit-log/export/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


def test_invitations_role_changes_and_removals_are_audited(host_client):
    ws = workspace_on("free")
    agent = member(ws.workspace, "agent")
    client = host_client(ws.host)
    client.force_login(ws.owner)
    client.post("/team/", {"email": "new@example.test", "role": "viewer"})
    invitation = ws.workspace.invitations.get(email="new@example.test")
    client.post(f"/team/invitations/{invitation.pk}/revoke/")
    membership = Membership.objects.get(workspace=ws.workspace, user=agent)
    client.post(f"/team/{membership.pk}/", {"action": "role", "role": "viewer"})
    client.post(f"/team/{membership.pk}/", {"action": "remove"})
    actions = list(AuditEntry.objects.filter(workspace=ws.workspace).order_by("id").values_list("action", "target"))
    assert actions[-4:] == [("member.invited", "new@example.test"), ("invitation.revoked", "new@example.test"),
                            ("member.role_changed", agent.email), ("member.removed", agent.email)]
