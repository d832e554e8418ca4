"""Plans, subscriptions, the credit ledger, plan limits, usage and the invoice preview (docs/billing.md).

Writes and reads of billing live here (one domain, one module): they share the period arithmetic and the locking
rule, and splitting them would put the rule in two places.

The locking rule, which makes the accounting exact: every write to a workspace's ledger happens in a transaction
that first locks the workspace's Subscription row (SELECT ... FOR UPDATE), then reads the balance as the SUM of the
ledger entries of the open period, then appends. PostgreSQL runs each statement of a READ COMMITTED transaction on a
fresh snapshot, so the SUM taken after the lock is granted sees every entry committed by the previous holder of the
lock; and no one appends without holding it. Fifty answers finishing at once therefore queue on the row and each
sees the balance the previous one left: no double spend, no negative balance unless the plan allows overage.

Floors: tenants is the lowest app. What it needs from the floors above (how many seats, documents, widgets a
workspace uses; writing the audit log; emailing owners) comes through the hooks below, which those apps register:
`usage_counter_register`, the signals `billing_changed` and `usage_threshold_reached`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q, QuerySet, Subquery, Sum
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string
from django_tenants.utils import schema_context

from config import metrics
from config.db import Statement, statements_run
from config.errors import ApplicationError, ErrorCode, NotFound, QuotaExceeded, ValidationFailed
from tenants.models import CreditPeriodTotals, LedgerEntry, LedgerKind, Plan, Subscription, UsageAlert, Workspace

logger = logging.getLogger(__name__)

CREDITS = "credits"
BILLING_PATH = "/settings/billing/"
ALERT_THRESHOLDS = (80, 100)
CENT = Decimal("0.01")
MICRO = Decimal("0.0001")
_MICROSECOND = timedelta(microseconds=1)
_MAX_ROLL_PERIODS = 1200  # a hundred years of missed periods; more means a corrupt anchor, not a sleepy beat

# Sent inside the transaction of a billing change (plan changed or scheduled, credits adjusted, overage switched).
# accounts records it in the audit log. kwargs: workspace, actor (a user or None), action, target, data.
billing_changed = Signal()
# Sent after commit when a meter first reaches 80 % or 100 % of its limit in a period; accounts emails the owners.
# kwargs: workspace, meter, label, threshold, used, limit, period_end.
usage_threshold_reached = Signal()
# Sent when a workspace's credit spend in the current hour spikes (spend_spike_watch); accounts e-mails the owners.
# kwargs: workspace, spent, baseline (hourly average of the previous 24 h), multiple, hour_start.
spend_spike_detected = Signal()


# --- meters ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meter:
    code: str
    label: str
    plan_field: str
    unit: str
    how_to_lift: str


METERS: dict[str, Meter] = {
    CREDITS: Meter(
        CREDITS, "Answers", "monthly_credits", "answers",
        "Upgrade the plan in Settings → Usage & billing, turn on overage if your plan offers it, or wait for the "
        "next billing period.",
    ),
    "documents": Meter(
        "documents", "Documents", "max_documents", "documents",
        "Delete documents you no longer need, or upgrade the plan in Settings → Usage & billing.",
    ),
    "storage_bytes": Meter(
        "storage_bytes", "Storage", "max_storage_bytes", "bytes",
        "Delete large documents you no longer need, or upgrade the plan in Settings → Usage & billing.",
    ),
    "widgets": Meter(
        "widgets", "Widgets", "max_widgets", "widgets",
        "Remove a widget you no longer use, or upgrade the plan in Settings → Usage & billing.",
    ),
    "seats": Meter(
        "seats", "Seats", "max_seats", "members and pending invitations",
        "Remove a member or revoke a pending invitation, or upgrade the plan in Settings → Usage & billing.",
    ),
}
LIMIT_METERS = tuple(code for code in METERS if code != CREDITS)
RATE_LIMITS = {"api_requests": "api_requests_per_minute", "chat_messages": "chat_messages_per_minute"}

UsageCounter = Callable[[Workspace], int]
_usage_counters: dict[str, UsageCounter] = {}


def usage_counter_register(meter: str, counter: UsageCounter) -> None:
    """A higher app tells billing how much of `meter` a workspace uses (called from its AppConfig.ready()).

    The counter gets the workspace and runs inside the workspace's schema; e.g. documents registers
    `usage_counter_register("documents", lambda ws: Document.objects.count())`.
    """
    if meter not in LIMIT_METERS:
        raise ValueError(f"unknown meter {meter!r}; one of {LIMIT_METERS}")
    _usage_counters[meter] = counter


def usage_count(*, workspace: Workspace, meter: str) -> int | None:
    """What `workspace` uses of `meter` now, or None when no app has registered a counter for it."""
    counter = _usage_counters.get(meter)
    if counter is None:
        return None
    if getattr(connection, "schema_name", None) == workspace.schema_name:
        return int(counter(workspace))
    with schema_context(workspace.schema_name):
        return int(counter(workspace))


def _usage_for_display(workspace: Workspace, meter: str) -> int | None:
    """usage_count for pages and reports: a failing counter of another app shows as "not measured" (and is logged)
    instead of taking the billing page down. Enforcement (plan_limit_check) never uses this: it fails closed."""
    try:
        with transaction.atomic():  # a savepoint: a failed query must not poison the caller's transaction
            return usage_count(workspace=workspace, meter=meter)
    except Exception:
        logger.exception("billing: the %s usage counter failed", meter)
        return None


# --- plans -----------------------------------------------------------------------------------------------------


def plan_get(*, code: str, selectable_from: str | None = None) -> Plan:
    """The plan with this code, or ValidationFailed `plan_unknown` naming the plans there are.

    With `selectable_from` (a workspace's current plan code): only what that workspace's owner may choose, the
    public plans and the current one; a hidden plan (offered by staff to someone else) is as unknown as a typo, and
    the error names the public plans only."""
    plans = Plan.objects.all()
    if selectable_from is not None:
        plans = plans.filter(Q(is_public=True) | Q(code=selectable_from))
    plan = plans.filter(code=(code or "").strip()).first()
    if plan is None:
        listed = plans if selectable_from is None else Plan.objects.filter(is_public=True)
        known = list(listed.order_by("tier", "code").values_list("code", flat=True))
        raise ValidationFailed(
            f"There is no plan {code!r}.", code=ErrorCode.PLAN_UNKNOWN,
            details={"field": "plan", "plan": str(code)[:40], "allowed": known},
        )
    return plan


def plan_list(*, public_only: bool = True) -> list[Plan]:
    plans = Plan.objects.order_by("tier", "code")
    return list(plans.filter(is_public=True) if public_only else plans)


def plan_for_workspace(*, workspace: Workspace) -> Plan:
    """The workspace's plan as stored now (its plan code read in the same query: one round trip)."""
    return Plan.objects.get(code=Subquery(Workspace.objects.filter(pk=workspace.pk).order_by().values("plan")))


def plan_limit(plan: Plan, meter: str) -> int | None:
    """The plan's limit of a meter; None is unlimited."""
    value = getattr(plan, METERS[meter].plan_field)
    return None if value is None else int(value)


def plan_rate_limit(*, workspace: Workspace, name: str) -> str | None:
    """The plan's rate for `name` ("api_requests" or "chat_messages") as a throttle rate ("60/m", the format of
    config.throttle), or None when the plan sets none. Callers enforce it (per workspace). Read fresh (a plan change
    counts at once) in one round trip: the REST API asks on every request (accounts.api_throttles)."""
    if name not in RATE_LIMITS:
        raise ValueError(f"unknown rate limit {name!r}; one of {tuple(RATE_LIMITS)}")
    per_minute = getattr(plan_for_workspace(workspace=workspace), RATE_LIMITS[name])
    return None if per_minute is None else f"{per_minute}/m"


def plan_provider_allowed(*, plan: Plan, provider: str) -> bool:
    allowed = plan.allowed_providers or []
    return "*" in allowed or provider in allowed


def plan_provider_check(*, workspace: Workspace, provider: str) -> None:
    """Refuse (plan_limit) an answer provider kind ("openai", "anthropic", ...) the workspace's plan doesn't include."""
    plan = plan_for_workspace(workspace=workspace)
    if not plan_provider_allowed(plan=plan, provider=provider):
        raise QuotaExceeded(
            f"The {plan.name} plan doesn't include the {provider} answer provider.",
            code=ErrorCode.PLAN_LIMIT,
            details={"meter": "providers", "provider": provider, "allowed": list(plan.allowed_providers or []),
                     "plan": plan.code, "how_to_lift": "Upgrade the plan in Settings → Usage & billing.",
                     "lift_url": BILLING_PATH},
        )


# --- billing periods -------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    if timezone.is_naive(value):
        raise ValueError("billing times must be timezone-aware")
    return value.astimezone(UTC)


def period_bounds(*, anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
    """The monthly billing period [start, end) that contains `at`, for periods anchored at `anchor`.

    Period n starts at anchor + n months, computed from the anchor each time (never from the previous period), with
    the day clamped to the month's length: an anchor on Jan 31 gives Feb 28 (29 in leap years), then Mar 31 again.
    The time of day is the anchor's, in UTC.
    """
    anchor, at = _utc(anchor), _utc(at)
    if at < anchor:
        raise ValueError("no billing period before the anchor")
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    start = anchor + relativedelta(months=months)
    if start > at:
        months -= 1
        start = anchor + relativedelta(months=months)
    return start, anchor + relativedelta(months=months + 1)


def period_for_month(*, anchor: datetime, month: str) -> tuple[datetime, datetime]:
    """The billing period that starts in calendar month `month` ("YYYY-MM", UTC). Every month holds exactly one
    period start, because starts are the anchor's day clamped into each month."""
    try:
        year, number = (int(part) for part in month.split("-"))
        if not 1 <= number <= 12 or len(month) != 7:
            raise ValueError
    except ValueError:
        raise ValidationFailed("Give the month as YYYY-MM.", details={"field": "month", "month": month}) from None
    anchor = _utc(anchor)
    months = (year - anchor.year) * 12 + (number - anchor.month)
    if months < 0:
        raise ValidationFailed(
            f"The workspace's billing starts in {anchor:%Y-%m}.", details={"field": "month", "month": month}
        )
    return anchor + relativedelta(months=months), anchor + relativedelta(months=months + 1)


# --- subscriptions and their lock ------------------------------------------------------------------------------


def _check_billable(workspace: Workspace) -> None:
    if workspace.schema_name == "public":
        raise ApplicationError("The public site has no subscription.", code=ErrorCode.WRONG_SCHEMA)


def subscription_start(*, workspace: Workspace, now: datetime | None = None) -> Subscription:
    """A new workspace's subscription, anchored now, with its first period opened and granted.
    Called by tenants.services.workspace_create inside its transaction."""
    _check_billable(workspace)
    now = _utc(now or timezone.now())
    start, end = period_bounds(anchor=now, at=now)
    plan = plan_get(code=workspace.plan)
    with transaction.atomic():  # nobody else sees the new row yet: no lock needed
        subscription = Subscription.objects.create(workspace=workspace, anchor=now, period_start=start, period_end=end)
        _period_grant(workspace.pk, plan, start, end)
    return subscription


def _period_grant(workspace_id: int, plan: Plan, start: datetime, end: datetime) -> LedgerEntry:
    return LedgerEntry.objects.create(
        workspace_id=workspace_id, period_start=start, kind=LedgerKind.GRANT, amount=plan.monthly_credits,
        charge=plan.price, plan=plan.code, reference=f"period:{start.isoformat()}", reason="period grant",
        actor_label="system", data={"period_end": end.isoformat()},
    )


@dataclass
class _Locked:
    subscription: Subscription
    workspace: Workspace  # fresh from the database (its plan may have changed since the caller loaded it)
    plan: Plan


def _locked(workspace: Workspace, now: datetime) -> _Locked:
    """Lock the workspace's subscription row and bring it to the period containing `now`. Call inside atomic()."""
    _check_billable(workspace)
    query = Subscription.objects.select_for_update(of=("self",)).select_related("workspace")
    subscription = query.filter(workspace_id=workspace.pk).first()
    if subscription is None:
        # A workspace from before billing existed: anchored at its creation, starting with the current period.
        start, _end = period_bounds(anchor=workspace.created_at, at=max(now, workspace.created_at))
        Subscription.objects.bulk_create(
            [Subscription(workspace_id=workspace.pk, anchor=workspace.created_at, period_start=start, period_end=start)],
            ignore_conflicts=True,
        )
        subscription = query.get(workspace_id=workspace.pk)
    fresh = subscription.workspace
    if now >= subscription.period_end:
        _roll(subscription, fresh, now)
    workspace.plan = fresh.plan  # the caller's copy follows
    return _Locked(subscription=subscription, workspace=fresh, plan=Plan.objects.get(code=fresh.plan))


def _period_balance(workspace_id: int, period_start: datetime) -> int:
    return _period_totals(workspace_id, period_start).balance


def _roll(subscription: Subscription, workspace: Workspace, now: datetime) -> None:
    """Open each period up to the one containing `now`: close the open one (an EXPIRY entry brings its balance to
    zero: unused credits don't carry over, overage was billed with it), apply a scheduled downgrade, and grant the
    new period's credits at the plan's price. Idempotent: the caller holds the lock, and each period's grant and
    expiry carry a unique reference."""
    closed: list[tuple[datetime, datetime]] = []
    for _ in range(_MAX_ROLL_PERIODS):
        if now < subscription.period_end:
            break
        opened = subscription.period_end > subscription.period_start
        if opened:
            balance = _period_balance(workspace.pk, subscription.period_start)
            if balance:
                LedgerEntry.objects.create(
                    workspace_id=workspace.pk, period_start=subscription.period_start, kind=LedgerKind.EXPIRY,
                    amount=-balance, plan=workspace.plan, reference=f"expiry:{subscription.period_start.isoformat()}",
                    reason="period closed: unused credits expire" if balance > 0 else "period closed: overage billed",
                    actor_label="system",
                )
            closed.append((subscription.period_start, subscription.period_end))
        start, end = period_bounds(anchor=subscription.anchor, at=subscription.period_end)
        if subscription.scheduled_plan_id and opened:
            old, new = workspace.plan, subscription.scheduled_plan_id
            workspace.plan = new
            Workspace.objects.filter(pk=workspace.pk).update(plan=new)
            subscription.scheduled_plan = None
            billing_changed.send(
                sender=Workspace, workspace=workspace, actor=None, action="plan.changed", target=new,
                data={"from": old, "to": new, "rule": "downgrade at period end", "effective_at": start.isoformat()},
            )
        _period_grant(workspace.pk, Plan.objects.get(code=workspace.plan), start, end)
        subscription.period_start, subscription.period_end = start, end
    else:
        raise ApplicationError("Billing periods could not be brought up to date.", code=ErrorCode.SERVER_ERROR)
    subscription.save(update_fields=["period_start", "period_end", "scheduled_plan", "updated_at"])
    if closed:
        def report() -> None:
            gateway = billing_gateway()
            for period_start, _period_end in closed:
                _gateway_call(gateway.period_closed, workspace=workspace,
                              invoice=invoice_preview(workspace=workspace, period_start=period_start))

        transaction.on_commit(report)


def subscription_roll(*, workspace: Workspace, now: datetime | None = None) -> Subscription:
    """Bring a workspace's subscription to the period containing `now` (idempotent)."""
    with transaction.atomic():
        return _locked(workspace, _utc(now or timezone.now())).subscription


def subscriptions_roll_due(*, now: datetime | None = None) -> int:
    """Roll every subscription whose period has ended (the Celery beat task; use also rolls lazily)."""
    now = _utc(now or timezone.now())
    rolled = 0
    due = Subscription.objects.filter(period_end__lte=now).select_related("workspace").order_by("period_end")
    for subscription in due.iterator(chunk_size=200):
        try:
            subscription_roll(workspace=subscription.workspace, now=now)
            rolled += 1
        except Exception:  # one broken workspace must not stop the others' periods
            logger.exception("billing: rolling %s failed", subscription.workspace.slug)
    return rolled


def subscription_get(*, workspace: Workspace) -> Subscription:
    """The workspace's subscription brought up to date (rolls if a period has ended)."""
    subscription = Subscription.objects.select_related("scheduled_plan").filter(workspace_id=workspace.pk).first()
    if subscription is None or timezone.now() >= subscription.period_end:
        subscription_roll(workspace=workspace)
        subscription = Subscription.objects.select_related("scheduled_plan").get(workspace_id=workspace.pk)
    return subscription


# --- credits ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditTotals:
    """A period's credits, all sums over its ledger entries."""

    balance: int  # what is left (negative: overage)
    available: int  # granted plus adjustments
    used: int  # usage plus overage minus refunds

    @property
    def overage(self) -> int:
        return max(0, -self.balance)


def _period_totals(workspace_id: int, period_start: datetime) -> CreditTotals:
    """One row (CreditPeriodTotals, kept by a trigger on ledger inserts): the same cost with 0 or a million entries in
    the period. A period without entries has no row: zero."""
    row = (CreditPeriodTotals.objects.filter(workspace_id=workspace_id, period_start=period_start)
           .values_list("balance", "available", "used").first())
    if row is None:
        return CreditTotals(balance=0, available=0, used=0)
    return CreditTotals(balance=int(row[0]), available=int(row[1]), used=int(row[2]))


def _period_totals_summed(workspace_id: int, period_start: datetime) -> CreditTotals:
    """The same totals summed from the ledger itself (what the trigger's rows must always equal; bench/credits.py
    measures it as the baseline)."""
    sums = LedgerEntry.objects.filter(workspace_id=workspace_id, period_start=period_start).aggregate(
        balance=Sum("amount"),
        available=Sum("amount", filter=Q(kind__in=[LedgerKind.GRANT, LedgerKind.ADJUSTMENT])),
        used=Sum("amount", filter=Q(kind__in=[LedgerKind.USAGE, LedgerKind.OVERAGE, LedgerKind.REFUND])),
    )
    return CreditTotals(balance=int(sums["balance"] or 0), available=int(sums["available"] or 0),
                        used=-int(sums["used"] or 0))


def _reference_clean(reference: str) -> str:
    reference = (reference or "").strip()
    if not reference or len(reference) > 200:
        raise ValidationFailed("A credit movement needs a reference of at most 200 characters (e.g. message:42).",
                               details={"field": "reference"})
    return reference


def credits_consume(
    *, workspace: Workspace, amount: int = 1, reason: str = "answer", reference: str, now: datetime | None = None,
    along: list[Statement] | None = None,
) -> LedgerEntry:
    """Spend `amount` credits for `reference` (e.g. "message:42"), atomically; call it before the work starts.
    The entry's `reference` says under which reference it was charged: a reference that was charged and refunded
    (a failed attempt) is charged again as `message:42#2`, then `#3`, … — refund what the entry names.

    `along`: the caller's writes to send in the same round trip, committed with the credit step's first
    transaction (an answer's question bookkeeping); if they fail, the credit is taken without them and they are
    sent once more on their own (a failure then is logged, not raised: give only writes whose loss is acceptable).

    Returns the USAGE entry (or the OVERAGE entry when nothing was covered by credits; a consumption that is partly
    covered writes both, with the same reference). Idempotent per reference: a retry returns the first entry and
    spends nothing. Raises QuotaExceeded (402, code quota_exceeded, details {meter, limit, used, how_to_lift, ...})
    when the balance can't cover it and the plan (or the owner's cap) doesn't allow overage.
    """
    if not isinstance(amount, int) or amount < 1:
        raise ValidationFailed("Consume at least one credit.", details={"field": "amount"})
    reference = _reference_clean(reference)
    now = _utc(now or timezone.now())
    _check_billable(workspace)
    fast = _credits_consume_covered(workspace=workspace, amount=amount, reason=reason, reference=reference, now=now,
                                    along=along or [])
    if fast is not None:
        entry, period_end, totals_after = fast
        if totals_after.available > 0 and totals_after.used * 100 >= ALERT_THRESHOLDS[0] * totals_after.available:
            _alerts_raise(workspace=workspace, meter=CREDITS, used=totals_after.used, limit=totals_after.available,
                          period_start=entry.period_start, period_end=period_end)
        metrics.credits_observe(reason, amount)
        spend_spike_watch(workspace=workspace, amount=amount, now=now)
        return entry
    alerts: list[UsageAlert] = []
    with transaction.atomic():
        locked = _locked(workspace, now)
        subscription, plan = locked.subscription, locked.plan
        earlier = (LedgerEntry.objects.filter(workspace_id=workspace.pk, reference=reference,
                                              kind__in=[LedgerKind.USAGE, LedgerKind.OVERAGE]).order_by("id").first())
        if earlier is not None:
            if not LedgerEntry.objects.filter(workspace_id=workspace.pk, kind=LedgerKind.REFUND,
                                              reference=reference).exists():
                return earlier
            # That attempt failed and was given back (an answer retried after an error): this one is charged anew,
            # under the next attempt's reference (`message:42#2`), which the caller refunds if it fails too.
            base, _, attempt = reference.partition("#")
            following = int(attempt) + 1 if attempt.isdigit() else 2
            return credits_consume(workspace=workspace, amount=amount, reason=reason, now=now,
                                   reference=f"{base}#{following}")
        totals = _period_totals(workspace.pk, subscription.period_start)
        covered = max(0, min(totals.balance, amount))
        beyond = amount - covered
        if beyond and not (plan.allow_overage and subscription.overage_enabled):
            raise _quota_exceeded(plan, subscription, totals, amount)
        common = dict(workspace_id=workspace.pk, period_start=subscription.period_start, plan=plan.code,
                      reason=(reason or "answer")[:200], reference=reference, actor_label="system")
        entries = []
        if covered:
            entries.append(LedgerEntry.objects.create(kind=LedgerKind.USAGE, amount=-covered, **common))
        if beyond:
            entries.append(LedgerEntry.objects.create(
                kind=LedgerKind.OVERAGE, amount=-beyond, charge=(plan.overage_price * beyond).quantize(MICRO),
                data={"unit_price": str(plan.overage_price)}, **common,
            ))
        after = CreditTotals(balance=totals.balance - amount, available=totals.available, used=totals.used + amount)
        if after.available > 0:
            alerts = _alerts_raise(workspace=locked.workspace, meter=CREDITS, used=after.used, limit=after.available,
                                   period_start=subscription.period_start, period_end=subscription.period_end)
    metrics.credits_observe(reason, amount)
    spend_spike_watch(workspace=workspace, amount=amount, now=now)
    return entries[0]


# The common case of the credit step in one round trip (issue #16): two statements sent together, one implicit
# transaction. The first takes the subscription row lock (the locking rule above); the second, whose snapshot is
# taken once the lock is granted (READ COMMITTED: one snapshot per statement), reads the period, the plan, the
# running totals and an earlier charge of the reference, and appends the USAGE entry only when all is ordinary: the
# period is open, no charge of this reference exists, and the balance covers the amount. Anything else (no
# subscription yet, a period to roll, a retry, overage, a refusal) appends nothing and goes the general way below,
# which decides it under the lock as before.
_COVERED_LOCK_SQL = "SELECT 1 FROM {subscription} WHERE workspace_id = %s FOR UPDATE"
_COVERED_SQL = """
WITH s AS (
    SELECT s.period_start, s.period_end, w.plan
    FROM {subscription} s JOIN {workspace} w ON w.id = s.workspace_id
    WHERE s.workspace_id = %s
), t AS (
    SELECT t.balance, t.available, t.used
    FROM {totals} t JOIN s ON t.period_start = s.period_start WHERE t.workspace_id = %s
), earlier AS (
    SELECT 1 FROM {ledger}
    WHERE workspace_id = %s AND reference = %s AND kind IN ('usage', 'overage') LIMIT 1
), added AS (
    INSERT INTO {ledger} (workspace_id, period_start, kind, amount, charge, plan, reason, reference, actor_label,
                          data, created_at)
    SELECT %s, s.period_start, 'usage', %s, 0, s.plan, %s, %s, 'system', '{{}}'::jsonb, %s
    FROM s JOIN t ON true
    WHERE %s < s.period_end AND t.balance >= %s AND NOT EXISTS (SELECT 1 FROM earlier)
    RETURNING id, period_start, plan, created_at
)
SELECT added.id, added.period_start, added.plan, added.created_at, s.period_end, t.balance, t.available, t.used
FROM added JOIN s ON true JOIN t ON true
"""


def _credits_consume_covered(
    *, workspace: Workspace, amount: int, reason: str, reference: str, now: datetime, along: list[Statement]
) -> tuple[LedgerEntry, datetime, CreditTotals] | None:
    """(the USAGE entry, the period's end, the totals after it) when the ordinary case applied; None: nothing was
    appended, the caller takes the general way. `along` goes last in the same transaction (after the lock: nothing
    of the caller's is held while the credit step queues on the subscription row)."""
    try:
        return _covered_send(workspace=workspace, amount=amount, reason=reason, reference=reference, now=now,
                             along=along)
    except (OperationalError, InterfaceError):  # the connection is gone: the caller's error, with or without along
        raise
    except DatabaseError as exc:
        if not along:
            if isinstance(exc, IntegrityError):  # a twin of this reference was appended meanwhile: the general
                return None  # way returns it
            raise
        logger.warning("billing: the writes sent with a credit step failed; the credit goes without them",
                       exc_info=True)
    result = _credits_consume_covered(workspace=workspace, amount=amount, reason=reason, reference=reference,
                                      now=now, along=[])
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            statements_run(along)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        logger.warning("billing: the writes sent with a credit step were dropped", exc_info=True)
    return result


def _covered_send(
    *, workspace: Workspace, amount: int, reason: str, reference: str, now: datetime, along: list[Statement]
) -> tuple[LedgerEntry, datetime, CreditTotals] | None:
    quote = connection.ops.quote_name
    tables = {"subscription": quote(Subscription._meta.db_table), "workspace": quote(Workspace._meta.db_table),
              "totals": quote(CreditPeriodTotals._meta.db_table), "ledger": quote(LedgerEntry._meta.db_table)}
    reason = (reason or "answer")[:200]
    created_at = timezone.now()
    pk = workspace.pk
    # Inside a caller's transaction, a savepoint keeps a failure here from aborting it (the lock stays the caller's
    # until it commits, as with _locked).
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        _locked_rows, rows, *_along = statements_run([
            (_COVERED_LOCK_SQL.format(**tables), [pk]),
            (_COVERED_SQL.format(**tables),
             [pk, pk, pk, reference, pk, -amount, reason, reference, created_at, now, amount]),
            *along,
        ])
    if not rows:
        return None
    entry_id, period_start, plan_code, created, period_end, balance, available, used = rows[0]
    entry = LedgerEntry(id=entry_id, workspace_id=pk, period_start=period_start, kind=LedgerKind.USAGE,
                        amount=-amount, charge=Decimal(0), plan=plan_code, reason=reason, reference=reference,
                        actor_label="system", data={}, created_at=created)
    entry._state.adding, entry._state.db = False, LedgerEntry.objects.db
    workspace.plan = plan_code  # the caller's copy follows, as with _locked
    after = CreditTotals(balance=int(balance) - amount, available=int(available), used=int(used) + amount)
    return entry, period_end, after


_SPIKE_BASELINE_HOURS = 24


def spend_spike_watch(*, workspace: Workspace, amount: int, now: datetime) -> bool:
    """Count `amount` credits into this workspace's hourly spend (Redis, keyed by its schema) and, the first time in
    an hour that the hour's spend reaches SPEND_SPIKE_MIN_ANSWERS and exceeds SPEND_SPIKE_MULTIPLE times the hourly
    average of the previous 24 hours, log a warning and send `spend_spike_detected` (accounts e-mails the owners
    and records it in the audit log). True when it alerted. Redis trouble never stops an answer."""
    import redis
    from django.core.cache import cache

    multiple = float(settings.SPEND_SPIKE_MULTIPLE)
    if multiple <= 0:
        return False
    hour = int(now.timestamp() // 3600)
    prefix = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}:spend:{workspace.schema_name}"
    try:
        client = cache._cache.get_client(write=True)
        with client.pipeline() as pipe:
            pipe.incrby(f"{prefix}:{hour}", amount)
            pipe.expire(f"{prefix}:{hour}", (_SPIKE_BASELINE_HOURS + 2) * 3600)
            pipe.mget([f"{prefix}:{h}" for h in range(hour - _SPIKE_BASELINE_HOURS, hour)])
            spent, _expiry, earlier = pipe.execute()
        baseline = sum(int(v or 0) for v in earlier) / _SPIKE_BASELINE_HOURS
        if spent < settings.SPEND_SPIKE_MIN_ANSWERS or spent <= multiple * baseline:
            return False
        if not client.set(f"{prefix}:alerted:{hour}", 1, nx=True, ex=2 * 3600):
            return False  # already told this hour
    except (redis.RedisError, OSError):
        logger.warning("billing: spend spike watch unavailable (Redis)", exc_info=True)
        return False
    hour_start = datetime.fromtimestamp(hour * 3600, tz=UTC)
    logger.warning("billing: spend spike in %s: %s credits since %s, hourly average %.1f over the previous %s h",
                   workspace.schema_name, spent, hour_start.isoformat(), baseline, _SPIKE_BASELINE_HOURS)
    transaction.on_commit(lambda: spend_spike_detected.send_robust(
        sender=Workspace, workspace=workspace, spent=int(spent), baseline=baseline, multiple=multiple,
        hour_start=hour_start))
    return True


def _quota_exceeded(plan: Plan, subscription: Subscription, totals: CreditTotals, amount: int) -> QuotaExceeded:
    renews = subscription.period_end
    if plan.allow_overage and not subscription.overage_enabled:
        how = (f"Turn overage back on in Settings → Usage & billing (answers beyond the credits cost "
               f"{plan.overage_price.normalize()} {plan.currency} each), upgrade the plan, or wait until {renews:%Y-%m-%d}.")
    else:
        how = f"Upgrade the plan in Settings → Usage & billing, or wait until the credits renew on {renews:%Y-%m-%d}."
    return QuotaExceeded(
        f"This workspace has used its {totals.available} answers for this billing period.",
        code=ErrorCode.QUOTA_EXCEEDED,
        details={"meter": CREDITS, "limit": totals.available, "used": totals.used, "requested": amount,
                 "balance": totals.balance, "plan": plan.code, "period_end": renews.isoformat(),
                 "how_to_lift": how, "lift_url": BILLING_PATH},
    )


def credits_refund(*, workspace: Workspace, reference: str, reason: str = "answer failed") -> LedgerEntry:
    """Give back what was spent for `reference` (an answer that failed). Idempotent: a second refund returns the
    first. The refund lands in the current period; a refunded overage also takes its charge off the invoice.
    Raises NotFound when nothing was spent for `reference`."""
    reference = _reference_clean(reference)
    with transaction.atomic():
        locked = _locked(workspace, _utc(timezone.now()))
        refunded = LedgerEntry.objects.filter(workspace_id=workspace.pk, kind=LedgerKind.REFUND,
                                              reference=reference).first()
        if refunded is not None:
            return refunded
        spent = list(LedgerEntry.objects.filter(workspace_id=workspace.pk, reference=reference,
                                                kind__in=[LedgerKind.USAGE, LedgerKind.OVERAGE]))
        if not spent:
            raise NotFound("Nothing was spent for this reference.", details={"reference": reference})
        overage_units = -sum(e.amount for e in spent if e.kind == LedgerKind.OVERAGE)
        return LedgerEntry.objects.create(
            workspace_id=workspace.pk, period_start=locked.subscription.period_start, kind=LedgerKind.REFUND,
            amount=-sum(e.amount for e in spent), charge=-sum((e.charge for e in spent), Decimal(0)),
            plan=locked.plan.code, reason=(reason or "answer failed")[:200], reference=reference,
            actor_label="system",
            data={"overage_units": overage_units, "spent_in_period": spent[0].period_start.isoformat()},
        )


def credits_grant(
    *, workspace: Workspace, amount: int, reason: str, actor: Any = None, actor_label: str = "",
    reference: str = "",
) -> LedgerEntry:
    """A manual adjustment of the current period's credits, with a reason (operators, support). `amount` may be
    negative to take credits back, but never below a zero balance. With a `reference`, a repeat is refused.
    Recorded in the audit log (billing_changed) as credits.adjusted."""
    if not isinstance(amount, int) or amount == 0:
        raise ValidationFailed("Give a non-zero whole number of credits.", details={"field": "amount"})
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why the credits are adjusted.", details={"field": "reason"})
    reference = (reference or "").strip()[:200]
    label = (actor_label or (str(actor) if actor is not None else "operator"))[:200]
    with transaction.atomic():
        locked = _locked(workspace, _utc(timezone.now()))
        period_start = locked.subscription.period_start
        if reference and LedgerEntry.objects.filter(workspace_id=workspace.pk, kind=LedgerKind.ADJUSTMENT,
                                                    reference=reference).exists():
            raise ValidationFailed("This adjustment was made already.", code=ErrorCode.CONFLICT,
                                   details={"reference": reference}, status_code=409)
        if amount < 0:
            balance = _period_balance(workspace.pk, period_start)
            if balance + amount < 0:
                raise ValidationFailed(
                    f"Only {max(balance, 0)} credits are left to take back.",
                    details={"field": "amount", "balance": balance},
                )
        entry = LedgerEntry.objects.create(
            workspace_id=workspace.pk, period_start=period_start, kind=LedgerKind.ADJUSTMENT, amount=amount,
            plan=locked.plan.code, reason=reason[:200], reference=reference, actor_label=label,
        )
        billing_changed.send(
            sender=Workspace, workspace=locked.workspace, actor=actor, action="credits.adjusted",
            target=f"{amount:+d} credits", data={"amount": amount, "reason": reason[:200], "entry": entry.pk,
                                                  "by": label},
        )
    return entry


def credit_balance(*, workspace: Workspace) -> int:
    """Credits left in the current period (negative: overage), summed from the ledger."""
    subscription = subscription_get(workspace=workspace)
    return _period_balance(workspace.pk, subscription.period_start)


def credit_totals(*, workspace: Workspace, period_start: datetime | None = None) -> CreditTotals:
    if period_start is None:
        period_start = subscription_get(workspace=workspace).period_start
    return _period_totals(workspace.pk, period_start)


def ledger_history(*, workspace: Workspace, period_start: datetime | None = None) -> QuerySet[LedgerEntry]:
    """The workspace's ledger entries, newest first (optionally one period's)."""
    entries = LedgerEntry.objects.filter(workspace_id=workspace.pk)
    if period_start is not None:
        entries = entries.filter(period_start=period_start)
    return entries.order_by("-created_at", "-id")


# --- plan changes ----------------------------------------------------------------------------------------------


@dataclass
class PlanChange:
    """What a plan change did. kind: upgraded (now, prorated grant and charge), downgrade_scheduled (at period
    end), downgrade_cancelled (a scheduled downgrade dropped), unchanged."""

    kind: str
    from_plan: str
    to_plan: str
    effective_at: datetime
    credits_granted: int = 0
    charge: Decimal = Decimal("0")
    fraction_remaining: Decimal | None = None


def plan_change(
    *, workspace: Workspace, code: str, actor: Any = None, now: datetime | None = None, include_hidden: bool = False
) -> PlanChange:
    """Move a workspace to another plan. The rule (docs/billing.md):

    - Upgrade (a plan of a higher tier): immediate. The period keeps its dates; the workspace gets the difference in
      monthly credits times the fraction of the period that remains (rounded up), and the invoice gets the price
      difference times that fraction (rounded to the cent). A scheduled downgrade is dropped.
    - Downgrade (same or lower tier): scheduled for the end of the period; until then the current plan's limits and
      credits stay. Choosing the current plan again drops a scheduled downgrade.

    Owners choose among the public plans (and their current one); `include_hidden` is for platform staff and the
    payment gateway moving a workspace onto a plan that isn't offered.
    """
    new = plan_get(code=code, selectable_from=None if include_hidden else workspace.plan)
    now = _utc(now or timezone.now())
    with transaction.atomic():
        locked = _locked(workspace, now)
        subscription, old, fresh = locked.subscription, locked.plan, locked.workspace
        start, end = subscription.period_start, subscription.period_end
        if new.code == old.code:
            if subscription.scheduled_plan_id is None:
                return PlanChange(kind="unchanged", from_plan=old.code, to_plan=new.code, effective_at=now)
            dropped = subscription.scheduled_plan_id
            subscription.scheduled_plan = None
            subscription.save(update_fields=["scheduled_plan", "updated_at"])
            change = PlanChange(kind="downgrade_cancelled", from_plan=old.code, to_plan=new.code, effective_at=now)
            billing_changed.send(sender=Workspace, workspace=fresh, actor=actor, action="plan.downgrade_cancelled",
                                 target=dropped, data={"plan": old.code, "dropped": dropped})
        elif new.tier > old.tier:
            fraction = (Decimal((end - now) // _MICROSECOND) / Decimal((end - start) // _MICROSECOND)).quantize(
                Decimal("0.000001"))
            fraction = min(max(fraction, Decimal(0)), Decimal(1))
            credits = max(0, math.ceil(Decimal(new.monthly_credits - old.monthly_credits) * fraction))
            charge = max(Decimal(0), ((new.price - old.price) * fraction).quantize(CENT, rounding=ROUND_HALF_UP))
            fresh.plan = new.code
            Workspace.objects.filter(pk=fresh.pk).update(plan=new.code)
            workspace.plan = new.code
            subscription.scheduled_plan = None
            subscription.save(update_fields=["scheduled_plan", "updated_at"])
            if credits or charge:
                LedgerEntry.objects.create(
                    workspace_id=fresh.pk, period_start=start, kind=LedgerKind.GRANT, amount=credits, charge=charge,
                    plan=new.code, reference=f"upgrade:{new.code}:{now.isoformat()}",
                    reason=f"upgrade {old.code} → {new.code}, prorated", actor_label=str(actor or "system")[:200],
                    data={"from": old.code, "to": new.code, "fraction_remaining": str(fraction)},
                )
            change = PlanChange(kind="upgraded", from_plan=old.code, to_plan=new.code, effective_at=now,
                                credits_granted=credits, charge=charge, fraction_remaining=fraction)
            billing_changed.send(sender=Workspace, workspace=fresh, actor=actor, action="plan.changed",
                                 target=new.code, data={"from": old.code, "to": new.code, "rule": "upgrade now",
                                                        "credits_granted": credits, "charge": str(charge)})
        else:
            subscription.scheduled_plan = new
            subscription.save(update_fields=["scheduled_plan", "updated_at"])
            change = PlanChange(kind="downgrade_scheduled", from_plan=old.code, to_plan=new.code, effective_at=end)
            billing_changed.send(sender=Workspace, workspace=fresh, actor=actor, action="plan.downgrade_scheduled",
                                 target=new.code, data={"from": old.code, "to": new.code,
                                                        "effective_at": end.isoformat()})
        transaction.on_commit(lambda: _gateway_call(billing_gateway().plan_changed, workspace=fresh, change=change))
    return change



def overage_set(*, workspace: Workspace, enabled: bool, actor: Any = None) -> Subscription:
    """The owner's spending cap: with overage off, answers beyond the credits are refused even on plans that bill
    overage."""
    with transaction.atomic():
        locked = _locked(workspace, _utc(timezone.now()))
        subscription = locked.subscription
        if subscription.overage_enabled != enabled:
            subscription.overage_enabled = enabled
            subscription.save(update_fields=["overage_enabled", "updated_at"])
            billing_changed.send(sender=Workspace, workspace=locked.workspace, actor=actor,
                                 action="billing.overage_enabled" if enabled else "billing.overage_disabled",
                                 target=locked.plan.code, data={"enabled": enabled})
    return subscription


# --- plan limits and warnings ----------------------------------------------------------------------------------


def plan_limit_lock(*, workspace: Workspace, meter: str) -> None:
    """Serialise check-then-create for one workspace and meter until the transaction ends (a PostgreSQL advisory
    lock), so two requests can't both take the last document slot or seat. Call inside atomic(), before counting."""
    if meter not in LIMIT_METERS:
        raise ValueError(f"unknown meter {meter!r}; one of {LIMIT_METERS}")
    if not connection.in_atomic_block:
        raise RuntimeError("plan_limit_lock needs a transaction (transaction.atomic())")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"billing:{meter}:{workspace.pk}"])


def plan_limit_check(*, workspace: Workspace, meter: str, adding: int = 1, used: int | None = None) -> None:
    """Refuse, before the work starts, what would take `meter` past the plan's limit.

    `meter` is one of documents, storage_bytes, widgets, seats; `adding` what the work adds (1 document, the file's
    bytes, ...); `used` what is in use now, or None to ask the counter the owning app registered. Raises
    QuotaExceeded with code plan_limit (402) and details {meter, limit, used, adding, plan, how_to_lift}. Records the
    80 % / 100 % warnings (once per period; owners get an email). Answer credits go through credits_consume.
    """
    if meter not in LIMIT_METERS:
        raise ValueError(f"unknown meter {meter!r}; one of {LIMIT_METERS}")
    plan = plan_for_workspace(workspace=workspace)
    limit = plan_limit(plan, meter)
    if limit is None:
        return
    if used is None:
        used = usage_count(workspace=workspace, meter=meter)
        if used is None:
            raise RuntimeError(f"no usage counter registered for {meter!r}: pass used= or register one")
    spec = METERS[meter]
    if used + adding > limit:
        _alerts_for_limit(workspace, meter, used=max(used, limit), limit=limit)
        raise QuotaExceeded(
            f"The {plan.name} plan allows {_amount(meter, limit)} {spec.label.lower()}; "
            f"this workspace uses {_amount(meter, used)}.",
            code=ErrorCode.PLAN_LIMIT,
            details={"meter": meter, "limit": limit, "used": used, "adding": adding, "plan": plan.code,
                     "how_to_lift": spec.how_to_lift, "lift_url": BILLING_PATH},
        )
    _alerts_for_limit(workspace, meter, used=used + adding, limit=limit)


def _amount(meter: str, value: int) -> str:
    if meter == "storage_bytes":
        return f"{value / (1024 * 1024):.0f} MB" if value >= 1024 * 1024 else f"{value} bytes of"
    return str(value)


def _alerts_for_limit(workspace: Workspace, meter: str, *, used: int, limit: int) -> None:
    if limit <= 0 or used * 100 < ALERT_THRESHOLDS[0] * limit:
        return
    subscription = subscription_get(workspace=workspace)
    _alerts_raise(workspace=workspace, meter=meter, used=used, limit=limit,
                  period_start=subscription.period_start, period_end=subscription.period_end)


def _alerts_raise(
    *, workspace: Workspace, meter: str, used: int, limit: int, period_start: datetime, period_end: datetime
) -> list[UsageAlert]:
    """Record the thresholds `used` has reached that weren't recorded this period; tell the owners after commit."""
    raised: list[UsageAlert] = []
    for threshold in ALERT_THRESHOLDS:
        if used * 100 < threshold * limit:
            continue
        try:
            with transaction.atomic():  # a savepoint: a concurrent twin's insert wins, ours is a no-op
                alert = UsageAlert.objects.create(workspace_id=workspace.pk, meter=meter, threshold=threshold,
                                                  period_start=period_start, used=used, limit=limit)
        except IntegrityError:
            continue
        raised.append(alert)

        def notify(alert: UsageAlert = alert) -> None:
            usage_threshold_reached.send_robust(
                sender=Workspace, workspace=workspace, meter=meter, label=METERS[meter].label,
                threshold=alert.threshold, used=alert.used, limit=alert.limit, period_end=period_end,
            )

        transaction.on_commit(notify)
    return raised


def usage_alerts_current(*, workspace: Workspace) -> list[UsageAlert]:
    """This period's warnings, the highest threshold per meter (for the dashboard banner)."""
    subscription = Subscription.objects.filter(workspace_id=workspace.pk).only("period_start").first()
    if subscription is None:
        return []
    best: dict[str, UsageAlert] = {}
    for alert in UsageAlert.objects.filter(workspace_id=workspace.pk, period_start=subscription.period_start):
        if alert.meter not in best or alert.threshold > best[alert.meter].threshold:
            best[alert.meter] = alert
    return sorted(best.values(), key=lambda a: (-a.threshold, a.meter))


# --- usage and the invoice preview -----------------------------------------------------------------------------


@dataclass
class InvoiceLine:
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


@dataclass
class Invoice:
    """Computed from the ledger entries of one period (their `charge`), never stored: plan price on the period's
    grant, prorated upgrades, overage, refunded overage."""

    workspace: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[InvoiceLine] = field(default_factory=list)
    overage_units: int = 0
    total: Decimal = Decimal("0.00")
    final: bool = False  # the period has ended

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["period_start"], data["period_end"] = self.period_start.isoformat(), self.period_end.isoformat()
        data["total"] = str(self.total)
        data["lines"] = [{**line, "unit_price": str(line["unit_price"]), "amount": str(line["amount"])}
                         for line in data["lines"]]
        return data


def invoice_preview(*, workspace: Workspace, period_start: datetime | None = None) -> Invoice:
    """The invoice of a period (default: the current one): the sum of its ledger entries' charges, itemised."""
    subscription = subscription_get(workspace=workspace)
    if period_start is None:
        period_start, period_end = subscription.period_start, subscription.period_end
    else:
        period_start, period_end = period_bounds(anchor=subscription.anchor, at=period_start)
    entries = list(LedgerEntry.objects.filter(workspace_id=workspace.pk, period_start=period_start).order_by("id"))
    plans = {p.code: p for p in Plan.objects.filter(code__in={e.plan for e in entries} | {workspace.plan})}
    currency = plans[workspace.plan].currency if workspace.plan in plans else "USD"
    invoice = Invoice(workspace=workspace.slug, period_start=period_start, period_end=period_end, currency=currency,
                      final=period_end <= timezone.now())
    overage: dict[Decimal, tuple[int, Decimal]] = {}  # unit price -> (answers, their charges)
    refunded_units, refunded_charge = 0, Decimal(0)
    for entry in entries:
        if entry.kind == LedgerKind.GRANT and entry.charge:
            plan = plans.get(entry.plan)
            name = plan.name if plan else entry.plan
            description = (f"{name} plan, {period_start:%Y-%m-%d} – {period_end:%Y-%m-%d}"
                           if entry.reference.startswith("period:") else f"Upgrade to {name}, prorated")
            invoice.lines.append(InvoiceLine(description, 1, entry.charge, entry.charge))
        elif entry.kind == LedgerKind.OVERAGE:
            unit = Decimal(entry.data.get("unit_price", "0"))
            units, charged = overage.get(unit, (0, Decimal(0)))
            overage[unit] = (units - entry.amount, charged + entry.charge)
        elif entry.kind == LedgerKind.REFUND and entry.charge:
            refunded_units += int(entry.data.get("overage_units", 0))
            refunded_charge += entry.charge
    for unit, (units, charged) in sorted(overage.items()):
        invoice.lines.append(InvoiceLine(f"Overage answers at {unit.normalize()} {currency}", units, unit, charged))
        invoice.overage_units += units
    if refunded_units or refunded_charge:
        invoice.lines.append(InvoiceLine("Refunded overage (failed answers)", -refunded_units, Decimal(0),
                                         refunded_charge))
        invoice.overage_units -= refunded_units
    # Every entry with a charge is on exactly one line above, so the lines add up to the ledger's total.
    invoice.total = sum((e.charge for e in entries), Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)
    for line in invoice.lines:
        line.amount = line.amount.quantize(CENT, rounding=ROUND_HALF_UP)
    return invoice


@dataclass
class MeterUsage:
    meter: str
    label: str
    unit: str
    used: int | None  # None: not measured (no app registered a counter)
    limit: int | None  # None: unlimited
    percent: int | None

    @property
    def level(self) -> str:
        if self.percent is None:
            return "ok"
        return "over" if self.percent >= 100 else "warn" if self.percent >= 80 else "ok"


def _meter_usage(meter: str, used: int | None, limit: int | None) -> MeterUsage:
    spec = METERS[meter]
    percent = None if used is None or not limit else min(999, (used * 100) // limit)
    return MeterUsage(meter=meter, label=spec.label, unit=spec.unit, used=used, limit=limit, percent=percent)


def usage_summary(*, workspace: Workspace, month: str | None = None) -> dict[str, Any]:
    """This period's (or `month`'s period's) usage per meter, credits, plan and the invoice preview.

    Credits are per period (from the ledger). Documents, storage, widgets and seats are what is in use now: they
    are counts of things that exist, not of a period's activity.
    """
    subscription = subscription_get(workspace=workspace)
    plan = plan_for_workspace(workspace=workspace)
    if month:
        period_start, period_end = period_for_month(anchor=subscription.anchor, month=month)
        if period_start > subscription.period_start:
            raise ValidationFailed("That billing period has not started yet.",
                                   details={"field": "month", "month": month})
    else:
        period_start, period_end = subscription.period_start, subscription.period_end
    totals = _period_totals(workspace.pk, period_start)
    meters = [_meter_usage(CREDITS, totals.used, totals.available)]
    meters += [_meter_usage(m, _usage_for_display(workspace, m), plan_limit(plan, m)) for m in LIMIT_METERS]
    invoice = invoice_preview(workspace=workspace, period_start=period_start)
    entries = LedgerEntry.objects.filter(workspace_id=workspace.pk, period_start=period_start)
    return {
        "workspace": workspace.slug,
        "plan": plan_as_dict(plan),
        "scheduled_plan": subscription.scheduled_plan_id,
        "overage_enabled": subscription.overage_enabled,
        "overage_allowed": plan.allow_overage and subscription.overage_enabled,
        "period": {"start": period_start.isoformat(), "end": period_end.isoformat(),
                   "month": f"{period_start:%Y-%m}", "current": period_start == subscription.period_start},
        "meters": {m.meter: {"label": m.label, "unit": m.unit, "used": m.used, "limit": m.limit,
                             "percent": m.percent} for m in meters},
        "credits": {"balance": totals.balance, "available": totals.available, "used": totals.used,
                    "overage": invoice.overage_units, "entries": entries.count()},
        "invoice": invoice.as_dict(),
        "rate_limits": {name: getattr(plan, fieldname) for name, fieldname in RATE_LIMITS.items()},
    }


def meter_usages(summary: dict[str, Any]) -> list[MeterUsage]:
    return [MeterUsage(meter=code, label=m["label"], unit=m["unit"], used=m["used"], limit=m["limit"],
                       percent=m["percent"]) for code, m in summary["meters"].items()]


def plan_as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "code": plan.code, "name": plan.name, "tier": plan.tier, "currency": plan.currency,
        "price": str(plan.price), "overage_price": str(plan.overage_price), "allow_overage": plan.allow_overage,
        "limits": {"credits": plan.monthly_credits, "documents": plan.max_documents,
                   "storage_bytes": plan.max_storage_bytes, "widgets": plan.max_widgets, "seats": plan.max_seats,
                   "api_requests_per_minute": plan.api_requests_per_minute,
                   "chat_messages_per_minute": plan.chat_messages_per_minute},
        "allowed_providers": list(plan.allowed_providers or []),
    }


def ledger_entry_as_dict(entry: LedgerEntry) -> dict[str, Any]:
    return {"id": entry.pk, "created_at": entry.created_at.isoformat(), "kind": entry.kind, "amount": entry.amount,
            "charge": str(entry.charge), "plan": entry.plan, "reason": entry.reason, "reference": entry.reference,
            "actor": entry.actor_label, "period_start": entry.period_start.isoformat()}


# --- the payment gateway seam ----------------------------------------------------------------------------------


class BillingGateway(Protocol):
    """Where a payment provider plugs in (settings.BILLING_GATEWAY, a dotted path to a class with this shape).

    Billing never waits on it: the methods are called after the billing transaction commits, and an exception is
    logged, not raised. A real gateway would create the customer on the first plan change, charge or record the
    prorated upgrade, turn `period_closed` invoices into real ones, and report failed payments back through a
    webhook view that calls `plan_change` (e.g. to drop to free) -- the ledger stays the source of truth.
    """

    name: str

    def plan_changed(self, *, workspace: Workspace, change: PlanChange) -> None: ...

    def period_closed(self, *, workspace: Workspace, invoice: Invoice) -> None: ...

    def payment_method_url(self, *, workspace: Workspace) -> str | None: ...


class NoopBillingGateway:
    """No payment provider: plans change and invoices are computed, nothing is charged."""

    name = "none"

    def plan_changed(self, *, workspace: Workspace, change: PlanChange) -> None:
        logger.info("billing: plan change (no gateway)", extra={"workspace": workspace.slug, "kind": change.kind,
                                                                  "to": change.to_plan})

    def period_closed(self, *, workspace: Workspace, invoice: Invoice) -> None:
        logger.info("billing: period closed (no gateway)", extra={"workspace": workspace.slug,
                                                                   "total": str(invoice.total)})

    def payment_method_url(self, *, workspace: Workspace) -> str | None:
        return None


def billing_gateway() -> BillingGateway:
    path = getattr(settings, "BILLING_GATEWAY", "") or "tenants.billing.NoopBillingGateway"
    return import_string(path)()


def _gateway_call(method: Callable[..., Any], **kwargs: Any) -> None:
    try:
        method(**kwargs)
    except Exception:
        logger.exception("billing gateway call %s failed", getattr(method, "__name__", method))
