"""Chat's periodic work."""
from __future__ import annotations

import logging

from celery import shared_task
from django_tenants.utils import tenant_context

from config.celery import WorkspaceTask

logger = logging.getLogger(__name__)


@shared_task(name="chat.retention_purge_all", ignore_result=True)
def retention_purge_all() -> int:
    """Beat: apply every active workspace's retention rule (chat.retention). One workspace failing skips only it."""
    from chat.retention import conversations_purge_expired
    from tenants.models import Workspace, WorkspaceStatus

    total = 0
    for workspace in Workspace.objects.filter(conversation_retention_days__gt=0, status=WorkspaceStatus.ACTIVE):
        try:
            with tenant_context(workspace):
                total += conversations_purge_expired(days=workspace.conversation_retention_days)
        except Exception:
            logger.exception("retention: purge failed", extra={"workspace": workspace.slug})
    return total


@shared_task(bind=True, base=WorkspaceTask, name="chat.handoff_notify", ignore_result=True, max_retries=3,
             default_retry_delay=60)
def handoff_notify(self, public_id: str, handoff_at: str) -> str:
    """A customer asked for a person `notify_after_seconds` ago: e-mail the agents if still nobody is there."""
    from chat.notifications import handoff_notification_send

    try:
        return handoff_notification_send(public_id=public_id, handoff_at=handoff_at)
    except Exception as exc:  # the mail server refused: try again a little later
        raise self.retry(exc=exc) from None


@shared_task(base=WorkspaceTask, name="chat.digest_send", ignore_result=True)
def digest_send() -> str:
    """One workspace's daily digest, when its local morning has come (chat.notifications.digest_send). A mail
    failure leaves today's digest unsent: the next hourly run tries again."""
    from chat.notifications import digest_send as workspace_digest_send

    return workspace_digest_send()


@shared_task(name="chat.digest_send_all", ignore_result=True)
def digest_send_all() -> int:
    """Beat, hourly: one `chat.digest_send` per active workspace, sent from inside its schema (the schema travels in
    the task header); each decides whether its digest is due."""
    from django_tenants.utils import schema_context

    from tenants.models import Workspace, WorkspaceStatus

    sent = 0
    for schema_name in (Workspace.objects.filter(status=WorkspaceStatus.ACTIVE).exclude(schema_name="public")
                        .values_list("schema_name", flat=True)):
        with schema_context(schema_name):
            digest_send.delay()
        sent += 1
    return sent
