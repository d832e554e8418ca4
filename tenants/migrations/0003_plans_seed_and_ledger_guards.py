"""Seed the plans, tie Workspace.plan to them in the database, and make the credit ledger append-only.

- Plans are data (platform staff edit them in the admin); these are the starting values.
- `tenants_workspace.plan` keeps holding a plan *code* (the operator contract passes codes: `--plan pro`); a foreign
  key to `tenants_plan.code` makes the database refuse a code that names no plan. Codes already in use that are not
  seeded here become hidden plans with the free plan's limits, so no existing workspace is broken by the constraint.
- A trigger refuses UPDATE on ledger rows: entries are appended, never rewritten (a purge still deletes them).
"""
from decimal import Decimal

from django.db import migrations

MB = 1024 * 1024
GB = 1024 * MB

PLANS = [
    dict(code="free", name="Free", tier=0, price=Decimal("0"), overage_price=Decimal("0"), allow_overage=False,
         monthly_credits=100, max_documents=500, max_storage_bytes=500 * MB, max_widgets=1, max_seats=10,
         api_requests_per_minute=60, chat_messages_per_minute=30, allowed_providers=["builtin"]),
    dict(code="starter", name="Starter", tier=1, price=Decimal("19.00"), overage_price=Decimal("0.0400"),
         allow_overage=True, monthly_credits=2_000, max_documents=2_000, max_storage_bytes=2 * GB, max_widgets=3,
         max_seats=15, api_requests_per_minute=300, chat_messages_per_minute=120,
         allowed_providers=["builtin", "openai"]),
    dict(code="pro", name="Pro", tier=2, price=Decimal("99.00"), overage_price=Decimal("0.0300"), allow_overage=True,
         monthly_credits=10_000, max_documents=10_000, max_storage_bytes=20 * GB, max_widgets=10, max_seats=50,
         api_requests_per_minute=1_200, chat_messages_per_minute=600,
         allowed_providers=["builtin", "openai", "anthropic"]),
    dict(code="enterprise", name="Enterprise", tier=3, price=Decimal("499.00"), overage_price=Decimal("0.0200"),
         allow_overage=True, monthly_credits=100_000, max_documents=None, max_storage_bytes=None, max_widgets=None,
         max_seats=None, api_requests_per_minute=6_000, chat_messages_per_minute=3_000, allowed_providers=["*"]),
]


def plans_seed(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    Workspace = apps.get_model("tenants", "Workspace")
    for values in PLANS:
        # Only plans that are missing: applied again after a rollback, the seed must not reset what staff edited.
        Plan.objects.get_or_create(code=values["code"], defaults=values)
    free = next(p for p in PLANS if p["code"] == "free")
    seeded = {p["code"] for p in PLANS}
    for code in set(Workspace.objects.values_list("plan", flat=True)) - seeded:
        Plan.objects.create(**{**free, "code": code, "name": code.title(), "is_public": False})


def plans_unseed(apps, schema_editor):
    pass  # dropping the table (0002 reversed) removes them


PLAN_FK_SQL = """
ALTER TABLE tenants_workspace ADD CONSTRAINT tenants_workspace_plan_fk
    FOREIGN KEY (plan) REFERENCES tenants_plan (code) ON DELETE RESTRICT;
CREATE INDEX tenants_workspace_plan_idx ON tenants_workspace (plan);
"""
PLAN_FK_REVERSE_SQL = """
DROP INDEX IF EXISTS tenants_workspace_plan_idx;
ALTER TABLE tenants_workspace DROP CONSTRAINT IF EXISTS tenants_workspace_plan_fk;
"""

LEDGER_APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION tenants_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit ledger entries are append-only (entry %)', OLD.id USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER tenants_ledgerentry_append_only BEFORE UPDATE ON tenants_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION tenants_ledger_append_only();
"""
LEDGER_APPEND_ONLY_REVERSE_SQL = """
DROP TRIGGER IF EXISTS tenants_ledgerentry_append_only ON tenants_ledgerentry;
DROP FUNCTION IF EXISTS tenants_ledger_append_only();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0002_plan_ledgerentry_subscription_usagealert"),
    ]

    operations = [
        migrations.RunPython(plans_seed, plans_unseed),
        migrations.RunSQL(PLAN_FK_SQL, PLAN_FK_REVERSE_SQL),
        migrations.RunSQL(LEDGER_APPEND_ONLY_SQL, LEDGER_APPEND_ONLY_REVERSE_SQL),
    ]
