from celery import shared_task

from tenants import billing, provisioning


@shared_task(name="tenants.workspace_pool_refill", ignore_result=True)
def workspace_pool_refill() -> int:
    return provisioning.pool_refill()


@shared_task(name="tenants.billing_periods_roll", ignore_result=True)
def billing_periods_roll() -> int:
    """Celery beat (CELERY_BEAT_SCHEDULE): close ended billing periods and grant the new ones. Runs in the public
    schema (billing lives there); a workspace's first use in a new period rolls it lazily anyway."""
    return billing.subscriptions_roll_due()
