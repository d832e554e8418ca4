"""Data retention: a workspace's conversations older than its `conversation_retention_days` are purged.

"Older" is measured from the conversation's last activity (its last message, else its start). A purge deletes the
conversation, its messages (internal notes included) and its replay log in Redis, then sends
`chat.signals.conversations_purged` so the floors above can drop what they copied (analytics keeps its counts but
forgets the question texts). Runs by beat for every workspace (`chat.retention_purge_all`) and inside one workspace
here.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat.events import ConversationLog, sync_client
from chat.models import Conversation
from chat.notifications import notified_key
from chat.signals import conversations_purged

logger = logging.getLogger(__name__)
BATCH = 500


def conversations_purge_expired(*, days: int, now: datetime | None = None) -> int:
    """Purge, in the current workspace schema, every conversation idle for more than `days` days. Returns the count."""
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    schema = connection.schema_name
    purged = 0
    while True:
        expired = list(
            Conversation.objects.annotate(active_at=Coalesce(F("last_message_at"), F("created_at")))
            .filter(active_at__lt=cutoff).order_by("pk").values_list("pk", "public_id")[:BATCH]
        )
        if not expired:
            break
        ids = [pk for pk, _ in expired]
        public_ids = [str(public_id) for _, public_id in expired]
        with transaction.atomic():
            Conversation.objects.filter(pk__in=ids).delete()  # messages go with them (cascade)
            transaction.on_commit(lambda public_ids=public_ids: conversations_purged.send(
                sender=Conversation, public_ids=public_ids))
        _logs_delete(schema, [public_id for _, public_id in expired])
        purged += len(ids)
    if purged:
        logger.info("retention: purged %s conversations older than %s days", purged, days)
    return purged


def _logs_delete(schema: str, public_ids: list) -> None:
    keys: list[str] = []
    for public_id in public_ids:
        log = ConversationLog.of(schema, Conversation(public_id=public_id))
        keys += [log.seq_key, log.stream_key, log.lock_key, notified_key(schema, public_id)]
    try:
        sync_client().delete(*keys)
    except Exception:  # noqa: BLE001 — the logs expire by themselves (CHAT_EVENT_LOG_TTL)
        logger.warning("retention: could not delete %s replay logs; they expire on their own", len(public_ids))
