"""Running credit totals per (workspace, period), kept by a trigger on ledger INSERTs (tenants.models.CreditPeriodTotals).

The trigger adds each new entry to its period's row; a period without a row gets one made from the full sum of its
entries (the new one included), so periods from before this migration need no backfill. Ledger rows are never
updated (0003's trigger), and deleted only with their workspace, whose totals go with it.
"""
import django.db.models.deletion
from django.db import migrations, models

TOTALS_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION tenants_ledger_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    granted bigint := CASE WHEN NEW.kind IN ('grant', 'adjustment') THEN NEW.amount ELSE 0 END;
    spent bigint := CASE WHEN NEW.kind IN ('usage', 'overage', 'refund') THEN -NEW.amount ELSE 0 END;
BEGIN
    UPDATE public.tenants_creditperiodtotals
       SET balance = balance + NEW.amount, available = available + granted, used = used + spent
     WHERE workspace_id = NEW.workspace_id AND period_start = NEW.period_start;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO public.tenants_creditperiodtotals (workspace_id, period_start, balance, available, used)
    SELECT NEW.workspace_id, NEW.period_start, coalesce(sum(amount), 0),
           coalesce(sum(amount) FILTER (WHERE kind IN ('grant', 'adjustment')), 0),
           -coalesce(sum(amount) FILTER (WHERE kind IN ('usage', 'overage', 'refund')), 0)
      FROM public.tenants_ledgerentry WHERE workspace_id = NEW.workspace_id AND period_start = NEW.period_start
    ON CONFLICT (workspace_id, period_start) DO NOTHING;
    IF NOT FOUND THEN
        -- Another transaction made the row meanwhile (its sum could not see this uncommitted entry): add it.
        UPDATE public.tenants_creditperiodtotals
           SET balance = balance + NEW.amount, available = available + granted, used = used + spent
         WHERE workspace_id = NEW.workspace_id AND period_start = NEW.period_start;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER tenants_ledgerentry_totals AFTER INSERT ON tenants_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION tenants_ledger_totals();
"""
TOTALS_TRIGGER_REVERSE_SQL = """
DROP TRIGGER IF EXISTS tenants_ledgerentry_totals ON tenants_ledgerentry;
DROP FUNCTION IF EXISTS tenants_ledger_totals();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0004_retention_and_exports'),
    ]

    operations = [
        migrations.CreateModel(
            name='CreditPeriodTotals',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period_start', models.DateTimeField()),
                ('balance', models.BigIntegerField(default=0)),
                ('available', models.BigIntegerField(default=0)),
                ('used', models.BigIntegerField(default=0)),
                ('workspace', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenants.workspace')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('workspace', 'period_start'), name='credit_totals_period')],
            },
        ),
        migrations.RunSQL(TOTALS_TRIGGER_SQL, TOTALS_TRIGGER_REVERSE_SQL),
    ]
