from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class WorkspaceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Workspace(TenantMixin):
    """A customer's workspace: one PostgreSQL schema holds everything it owns."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    plan = models.CharField(max_length=40, default="free")
    status = models.CharField(max_length=20, choices=WorkspaceStatus.choices, default=WorkspaceStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    # Conversations (with their messages and event logs) older than this many days are purged by beat; 0 keeps them.
    conversation_retention_days = models.PositiveIntegerField(default=0)

    # Schemas are provisioned and purged by tenants.services, never implicitly by save()/delete().
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return self.schema_name == "public"


class Domain(DomainMixin):
    pass


class SchemaTemplate(models.Model):
    """The DDL of the migrated template schema, rendered once per migration state (see tenants.provisioning)."""

    fingerprint = models.CharField(max_length=64, unique=True)
    sql = models.TextField()
    migrations = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)


class PooledSchema(models.Model):
    """A pre-provisioned, empty workspace schema waiting to be taken by a signup."""

    schema_name = models.CharField(max_length=63, unique=True)
    fingerprint = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)


# --- plans, subscriptions, credits (issue #8; docs/billing.md) ----------------------------------------------------


class Plan(models.Model):
    """What a workspace may use and what it pays. Rows are data: platform staff edit them in the admin.

    `Workspace.plan` holds a plan's `code` (the operator contract speaks codes: `--plan pro`); the database refuses a
    code that names no plan (foreign key added by migration 0002). Limits left empty mean "unlimited".
    """

    code = models.SlugField(max_length=40, unique=True, help_text="Stable identifier; can't change once created.")
    name = models.CharField(max_length=80)
    tier = models.PositiveSmallIntegerField(
        default=0, help_text="Plans are ordered by tier: moving to a higher tier is an upgrade (immediate), to a "
        "lower one a downgrade (at the end of the billing period)."
    )
    is_public = models.BooleanField(default=True, help_text="Offered on the billing page.")
    currency = models.CharField(max_length=3, default="USD")
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0, help_text="Per monthly billing period.")
    overage_price = models.DecimalField(
        max_digits=10, decimal_places=4, default=0, help_text="Per answer beyond the period's credits."
    )
    allow_overage = models.BooleanField(default=False, help_text="Answer beyond the credits and bill the overage.")
    monthly_credits = models.PositiveIntegerField(help_text="Answers per billing period (one credit per answer).")
    max_documents = models.PositiveIntegerField(null=True, blank=True)
    max_storage_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    max_widgets = models.PositiveIntegerField(null=True, blank=True)
    max_seats = models.PositiveIntegerField(null=True, blank=True, help_text="Members plus pending invitations.")
    api_requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    chat_messages_per_minute = models.PositiveIntegerField(null=True, blank=True)
    allowed_providers = models.JSONField(
        default=list, blank=True,
        help_text='Answer provider kinds this plan may use, e.g. ["builtin", "openai"]; ["*"] allows every kind.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tier", "code"]

    def __str__(self) -> str:
        return self.code


class Subscription(models.Model):
    """A workspace's billing state: monthly periods anchored at creation, and a downgrade waiting for period end.

    The row is also the lock that serialises every credit movement of its workspace (SELECT ... FOR UPDATE).
    `period_start == period_end` means no period has been opened yet (the next use opens one and grants).
    """

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="subscription")
    anchor = models.DateTimeField(help_text="Periods start on this day and time of every month (clamped).")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    scheduled_plan = models.ForeignKey(
        Plan, to_field="code", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="A downgrade that takes effect when the current period ends.",
    )
    overage_enabled = models.BooleanField(
        default=True, help_text="The owner's spending cap: off refuses answers beyond the credits even if the plan "
        "allows overage."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["period_end"])]

    def __str__(self) -> str:
        return f"{self.workspace} {self.period_start:%Y-%m-%d}..{self.period_end:%Y-%m-%d}"


class LedgerKind(models.TextChoices):
    GRANT = "grant", "Grant"  # the period's credits, or a prorated top-up on upgrade
    USAGE = "usage", "Usage"  # an answer, covered by credits
    OVERAGE = "overage", "Overage"  # an answer beyond the credits (billed at the overage price)
    REFUND = "refund", "Refund"  # an answer that failed gives its credit back
    ADJUSTMENT = "adjustment", "Adjustment"  # an operator's manual change, with a reason
    EXPIRY = "expiry", "Expiry"  # closes a period: its balance does not carry over


class LedgerEntry(models.Model):
    """One credit movement. Append-only (a database trigger refuses UPDATE); the balance is their sum.

    `period_start` names the billing period an entry belongs to; the balance of a period is the sum of its entries,
    and because every period is closed by an EXPIRY entry, the sum of all of a workspace's entries is its balance too.
    `charge` is the money the entry adds to its period's invoice (plan price on a grant, overage on overage).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="ledger_entries")
    period_start = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=LedgerKind.choices)
    amount = models.IntegerField(help_text="Credits: positive adds, negative spends.")
    charge = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    plan = models.CharField(max_length=40, help_text="The plan in effect when the entry was written.")
    reason = models.CharField(max_length=200, blank=True)
    reference = models.CharField(max_length=200, blank=True, help_text="What the entry is for, e.g. message:42.")
    actor_label = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["workspace", "period_start"], name="ledger_workspace_period")]
        constraints = [
            # One charge, one refund, one grant or expiry per reference: retries can't spend or give twice.
            models.UniqueConstraint(
                fields=["workspace", "kind", "reference"],
                condition=models.Q(kind__in=["usage", "overage", "refund", "grant", "expiry"]) & ~models.Q(reference=""),
                name="ledger_unique_reference",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workspace_id} {self.kind} {self.amount:+d}"


class CreditPeriodTotals(models.Model):
    """A period's running credit totals, kept by a database trigger on every ledger INSERT (migration 0005), so that
    the answer path reads one row instead of summing the period's entries: the credit step costs the same with 0 and
    with a million entries. The ledger stays the truth (append-only); this is derived from it, exactly: the trigger
    runs in the inserting transaction, and a period's row is created from the full sum of its entries."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    balance = models.BigIntegerField(default=0)
    available = models.BigIntegerField(default=0)  # grants plus adjustments
    used = models.BigIntegerField(default=0)  # usage plus overage minus refunds

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "period_start"], name="credit_totals_period")]

    def __str__(self) -> str:
        return f"{self.workspace_id} {self.period_start:%Y-%m-%d} balance {self.balance}"


class UsageAlert(models.Model):
    """A usage warning (80 % or 100 % of a meter) that was raised; one per workspace, meter, threshold and period."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_alerts")
    meter = models.CharField(max_length=40)
    threshold = models.PositiveSmallIntegerField()
    period_start = models.DateTimeField()
    used = models.BigIntegerField()
    limit = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "meter", "threshold", "period_start"], name="usage_alert_once_per_period"
            )
        ]


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class WorkspaceExport(models.Model):
    """An export archive an owner asked for from the dashboard (tenants.portability); downloadable while it exists."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="exports")
    requested_by_id = models.BigIntegerField(null=True, blank=True)  # accounts.User, a higher floor: by id
    status = models.CharField(max_length=20, choices=ExportStatus.choices, default=ExportStatus.PENDING)
    path = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
