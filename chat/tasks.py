"""Chat's periodic work."""
from __future__ import annotations

import logging

from celery import shared_task
from django_tenants.utils import tenant_context

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
