from celery import shared_task

from tenants import provisioning


@shared_task(name="tenants.workspace_pool_refill", ignore_result=True)
def workspace_pool_refill() -> int:
    return provisioning.pool_refill()
