"""Celery tasks of analytics: beat fans out over the workspaces; each workspace's update runs in its schema."""
from __future__ import annotations

import logging

from celery import shared_task

from config.celery import WorkspaceTask

logger = logging.getLogger(__name__)


@shared_task(name="analytics.rollups_update", base=WorkspaceTask, ignore_result=True, acks_late=True)
def rollups_update() -> None:
    from analytics import services

    services.rollups_update()


@shared_task(name="analytics.rollups_update_all", ignore_result=True)
def rollups_update_all() -> int:
    """Celery beat: one `analytics.rollups_update` per workspace, sent from inside its schema (the schema travels in
    the task header)."""
    from django_tenants.utils import schema_context

    from tenants.models import Workspace

    sent = 0
    for schema_name in Workspace.objects.exclude(schema_name="public").values_list("schema_name", flat=True):
        with schema_context(schema_name):
            rollups_update.delay()
        sent += 1
    return sent


@shared_task(name="analytics.webhook_deliver", base=WorkspaceTask, ignore_result=True, acks_late=True)
def webhook_deliver(delivery_id: int) -> str:
    from analytics.webhooks import webhook_delivery_attempt

    return webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="analytics.webhook_event_fan_out", base=WorkspaceTask, ignore_result=True, acks_late=True)
def webhook_event_fan_out(envelope: dict, endpoint_ids: list[int]) -> int:
    from analytics.webhooks import webhook_event_fan_out as fan_out

    return len(fan_out(envelope=envelope, endpoint_ids=endpoint_ids))


@shared_task(name="analytics.webhook_deliveries_due", base=WorkspaceTask, ignore_result=True, acks_late=True)
def webhook_deliveries_due() -> int:
    from analytics.webhooks import webhook_deliveries_due as due

    return due()


@shared_task(name="analytics.webhook_deliveries_due_all", ignore_result=True)
def webhook_deliveries_due_all() -> int:
    """Celery beat, every minute: each workspace with deliveries sends its due retries and forgets old ones
    (docs/webhooks.md)."""
    from django.db import connection
    from django_tenants.utils import schema_context

    from tenants.models import Workspace

    sent = 0
    for schema_name in Workspace.objects.exclude(schema_name="public").values_list("schema_name", flat=True):
        with schema_context(schema_name):
            with connection.cursor() as cursor:  # most workspaces have no endpoint: skip them without a task
                cursor.execute("SELECT EXISTS (SELECT 1 FROM analytics_webhookdelivery)")
                if not cursor.fetchone()[0]:
                    continue
            webhook_deliveries_due.delay()
        sent += 1
    return sent
