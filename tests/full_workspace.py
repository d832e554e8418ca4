"""A workspace full of real data, and a fingerprint of everything it owns.

`workspace_fill` puts rows of every kind into a workspace through the product's own services: members, API keys,
an invitation, audit entries, documents indexed by the real pipeline (chunks, vectors, a stored file), a widget
conversation with answers, feedback, a note and a handoff (with its analytics events), an embed, a ready export.

`workspace_fingerprint` hashes every row the workspace owns — each table of its schema, its rows in the shared
(public) tables, its members' user rows — plus its vector count and its media files. Two fingerprints taken
around a sweep of requests that must change nothing are equal, table for table.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.services import api_key_create, audit_record, invitation_create
from tests.factories import member

# Shared tables that point at a workspace by another name than `workspace_id`.
_SHARED_KEYS = {"tenants_workspace": "id", "tenants_domain": "tenant_id"}


@dataclass
class FilledWorkspace:
    marker: str
    ids: dict[str, Any]  # URL arguments and payload values that point at this workspace's own objects
    secrets: list[str] = field(default_factory=list)  # strings only this workspace's data contains
    users: dict[str, Any] = field(default_factory=dict)


def _document_indexed(*, title: str, text: str, upload: bytes | None = None) -> Any:
    from documents import services
    from documents.models import DocumentStatus
    from tests.factories import document_ingest_now

    if upload is None:
        document = services.document_create_text(title=title, text=text, markdown=True)
    else:
        document = services.document_upload(
            uploaded_file=SimpleUploadedFile(f"{title}.txt", upload, content_type="text/plain"), title=title
        )
    result = document_ingest_now(document)
    assert result == "indexed", (title, result)
    document.refresh_from_db()
    assert document.status == DocumentStatus.INDEXED, (title, document.status, document.error_code)
    return document


def workspace_fill(*, workspace: Any, owner: Any, marker: str | None = None) -> FilledWorkspace:
    """Rows of every kind, through the services; returns the ids URLs and payloads can point at."""
    from accounts.portability import export_run, workspace_export_request
    from accounts.selectors import membership_get
    from tests.analytics_dashboard.data import seed_workspace

    marker = marker or f"SECRET-{secrets.token_hex(6)}"
    users = {"owner": owner, **{role: member(workspace, role) for role in ("admin", "agent", "viewer")}}
    memberships = {role: workspace.memberships.get(user=user) for role, user in users.items()}
    key, _raw = api_key_create(workspace=workspace, name=f"key {marker}", scopes=["read", "write", "chat"])
    invitation, _token = invitation_create(
        workspace=workspace, email=f"invitee-{marker.lower()}@example.test", role="viewer", invited_by=owner,
        actor_role="owner",
    )
    audit_record(workspace=workspace, actor=owner, action="test.marker", target=marker)
    seeded = seed_workspace(workspace, owner, marker=marker)  # embed, widget conversation, answers, analytics
    with tenant_context(workspace):
        text_document = _document_indexed(
            title=f"Returns {marker}", text=f"# Returns\n\nReturns are accepted within 30 days. Code {marker}.")
        _document_indexed(title=f"Shipping {marker}", text="", upload=(
            f"Shipping takes three to five working days. Reference {marker}.\n" * 3).encode())
        source, run = _source_crawled(document=text_document, marker=marker)
        from chat.models import Message

        message = Message.objects.filter(conversation=seeded.conversation, role="assistant").order_by("pk").first()
        from documents.curated import curated_answer_create

        from chat.services import conversation_lead_save
        from embeds.services import embed_update

        embed_update(embed=seeded.embed, starter_questions=[f"How long is the return window {marker}?"],
                     lead_form={"when": "handoff", "fields": {"email": "required", "custom": "optional"},
                                "custom_label": f"Order {marker}"})
        conversation_lead_save(conversation=seeded.conversation, custom_label=f"Order {marker}", stage="handoff",
                               values={"email": f"lead-{marker.lower()}@example.test", "custom": marker})
        curated = curated_answer_create(question=f"What is the code {marker}?", answer=f"The code is {marker}.",
                                        examples=[f"Tell me code {marker}"], actor=owner, source_message_id=message.pk)
        webhook, delivery = _webhook_with_a_delivery(marker)
    export = workspace_export_request(workspace=workspace, user=owner)
    export_run(export_id=export.pk)  # a no-op when the session's worker took the queued job first: wait for it
    deadline = time.monotonic() + 120
    export.refresh_from_db()
    while export.status == "pending":
        assert time.monotonic() < deadline, "the worker's export never finished"
        time.sleep(0.1)
        export.refresh_from_db()
    assert export.status == "ready", export.status
    assert membership_get(workspace=workspace, membership_id=memberships["viewer"].pk) is not None
    ids = {
        "slug": workspace.slug,
        "membership_id": memberships["viewer"].pk,
        "admin_membership_id": memberships["admin"].pk,
        "agent_user_id": users["agent"].pk,
        "key_id": key.pk,
        "invitation_id": invitation.pk,
        "document_id": text_document.pk,
        "conversation_id": seeded.conversation.public_id,
        "visitor_id": seeded.conversation.visitor_id,  # visitor data rights (export, erase)
        "message_id": message.pk,
        "embed_id": seeded.embed.pk,
        "public_key": seeded.embed.public_key,
        "export_id": export.pk,
        "curated_answer_id": curated.pk,
        "source_id": source.pk,
        "run_id": run.pk,
        "webhook_id": webhook.pk,
        "delivery_id": delivery.pk,
        "token": "not-a-token",  # an invitation link is a bearer secret by design; its page is public
    }
    secrets_of = [marker, workspace.name, *(user.email for user in users.values())]
    return FilledWorkspace(marker=marker, ids=ids, secrets=secrets_of, users=users)


def _source_crawled(*, document: Any, marker: str) -> tuple[Any, Any]:
    """A website source with a finished crawl whose one page is `document`. Written as rows: a real crawl needs a
    site and a worker (tests/documents/test_sources.py has those), and a queued run would change the workspace while
    the sweeps fingerprint it."""
    from django.utils import timezone

    from documents.models import Source, SourcePage, SourceRun, SourceRunPage

    url = f"https://help.example/{marker.lower()}/"
    now = timezone.now()
    source = Source.objects.create(url=url, title=f"Help {marker}", last_synced_at=now)
    run = SourceRun.objects.create(source=source, status="completed", discovered=2, fetched=1, indexed=1, added=1,
                                   skipped=1, started_at=now, finished_at=now, heartbeat_at=now)
    SourceRunPage.objects.create(run=run, url=url, state="indexed", outcome="added", document_id=document.pk)
    SourceRunPage.objects.create(run=run, url=url + "private/", state="skipped", reason_code="robots_txt",
                                 reason=f"robots.txt {marker}")
    SourcePage.objects.create(source=source, url=url, document=document, etag=f'"{marker}"', content_sha256="0" * 64)
    return source, run


def _webhook_with_a_delivery(marker: str) -> tuple[Any, Any]:
    """An endpoint with one settled delivery, switched off so nothing retries while a sweep compares the rows: the
    test event is queued and the endpoint switched off in one transaction, then the attempt runs here (a worker that
    takes the message later finds it settled)."""
    from django.db import transaction

    from analytics import webhooks

    endpoint, _secret = webhooks.webhook_endpoint_create(url="https://example.com/hook", events=["source.synced"],
                                                         description=f"hook {marker}")
    with transaction.atomic():
        delivery = webhooks.webhook_test_send(endpoint=endpoint)
        endpoint = webhooks.webhook_endpoint_update(endpoint=endpoint, is_active=False)
    webhooks.webhook_delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "failed", delivery.status
    return endpoint, delivery


def _rows_digest(cursor: Any, query: str, params: list[Any]) -> tuple[int, str]:
    cursor.execute(f"SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM ({query}) r",
                   params)
    count, digest = cursor.fetchone()
    return count, digest


def workspace_fingerprint(workspace: Any) -> dict[str, tuple[int, str]]:
    """{table or store: (rows, digest)} over everything the workspace owns."""
    from documents.vectors import vectors_count

    schema = workspace.schema_name
    found: dict[str, tuple[int, str]] = {}
    connection.set_schema_to_public()  # schema-qualified queries below; the search path must not matter
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                       "AND table_type = 'BASE TABLE' ORDER BY 1", [schema])
        for (table,) in cursor.fetchall():
            found[f"{schema}.{table}"] = _rows_digest(cursor, f'SELECT * FROM "{schema}"."{table}"', [])
        cursor.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                       "'public' AND (column_name = 'workspace_id' OR (table_name, column_name) IN "
                       "(('tenants_workspace', 'id'), ('tenants_domain', 'tenant_id'))) ORDER BY 1")
        for table, column in cursor.fetchall():
            if _SHARED_KEYS.get(table, "workspace_id") != column:
                continue
            found[f"public.{table}"] = _rows_digest(
                cursor, f'SELECT * FROM public."{table}" WHERE "{column}" = %s', [workspace.pk])
        found["public.accounts_user (members)"] = _rows_digest(
            cursor, "SELECT u.* FROM public.accounts_user u JOIN public.accounts_membership m ON m.user_id = u.id "
                    "WHERE m.workspace_id = %s", [workspace.pk])
    found["chroma vectors"] = (vectors_count(schema_name=schema), "")
    media = Path(settings.MEDIA_ROOT) / "workspaces" / schema
    files = sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []
    digest = hashlib.md5()
    for path in files:
        digest.update(str(path.relative_to(media)).encode() + b"\0" + path.read_bytes())
    found["media files"] = (len(files), digest.hexdigest())
    return found


def fingerprint_diff(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return [f"{name}: {before.get(name)} -> {after.get(name)}" for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)]
