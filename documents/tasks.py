"""Celery tasks of the knowledge base. They take ids, run in the workspace's schema (WorkspaceTask), and call the
pipeline; retry timing is decided here, the rest in documents/pipeline.py."""
from __future__ import annotations

import random

from celery import shared_task

from config.celery import WorkspaceTask
from documents import pipeline, services


@shared_task(
    bind=True, base=WorkspaceTask, name="documents.ingest", acks_late=True, reject_on_worker_lost=True,
    ignore_result=True, max_retries=None,  # the pipeline counts attempts and gives up (DOCUMENT_RETRY_MAX)
)
def document_ingest(self, document_id: int, run_token: str) -> str:
    delivered = (self.request.delivery_info or {}).get("routing_key") or ""
    queue = delivered or services.ingest_queues()[0]
    try:
        outcome = pipeline.document_ingest_run(
            document_id=document_id, run_token=run_token, retries=self.request.retries, queue=delivered
        )
    except pipeline.RetryLater as later:
        soft, hard = services.queue_time_limits(queue)
        raise self.retry(countdown=later.countdown, queue=queue, soft_time_limit=soft, time_limit=hard) from None
    except pipeline.Busy:
        # Another delivery of this document is running; come back shortly without spending a retry.
        services.pipeline_send(document_id=document_id, run_token=run_token, queue=queue,
                               countdown=pipeline.BUSY_COUNTDOWN + random.uniform(0, 2))
        return "busy"
    if outcome.reroute_queue:
        services.pipeline_send(document_id=document_id, run_token=run_token, queue=outcome.reroute_queue)
    return outcome.result


@shared_task(name="documents.stalled_resend_all", ignore_result=True)
def documents_stalled_resend_all() -> int:
    """Celery beat (CELERY_BEAT_SCHEDULE): in every workspace, send again the jobs of documents stalled for longer
    than DOCUMENT_STALLED_AFTER (a broker restarted without persistence loses queued messages). Sent from inside each
    schema, so the jobs carry it."""
    from django_tenants.utils import schema_context

    from tenants.models import Workspace

    resent = 0
    for schema_name in Workspace.objects.exclude(schema_name="public").values_list("schema_name", flat=True):
        with schema_context(schema_name):
            resent += len(services.documents_stalled_resend())
    return resent


@shared_task(
    bind=True, base=WorkspaceTask, name="documents.source_run", acks_late=True, reject_on_worker_lost=True,
    ignore_result=True,
)
def source_run(self, run_id: int) -> str:
    """One slice of a website crawl or re-sync (documents/sources.py); sends itself again while pages are left."""
    from documents import sources

    outcome = sources.source_run_execute(run_id=run_id)
    if outcome == "continue":
        sources.source_run_send(run_id=run_id)
    return outcome


@shared_task(name="documents.sources_sync_due_all", ignore_result=True)
def sources_sync_due_all() -> int:
    """Celery beat (CELERY_BEAT_SCHEDULE): in every workspace, start the re-syncs that their schedule (daily,
    weekly) makes due, and send again the runs whose worker went away (SOURCE_STALLED_AFTER without a heartbeat)."""
    from django_tenants.utils import schema_context

    from documents import sources
    from tenants.models import Workspace

    started = 0
    for schema_name in Workspace.objects.exclude(schema_name="public").values_list("schema_name", flat=True):
        with schema_context(schema_name):
            started += len(sources.sources_sync_due())
            sources.source_runs_stalled_resume()
    return started

