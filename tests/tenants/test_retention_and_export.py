"""Data retention (chat.retention, run by beat) and the owner's export from the dashboard."""
from __future__ import annotations

import io
import json
import tarfile
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from tests.factories import member, workspace_with_owner


def _conversation(workspace, *, days_idle: float, text: str = "Where is my parcel?"):
    from chat.events import ConversationLog
    from chat.models import Conversation
    from chat.services import conversation_start, customer_message_post

    with tenant_context(workspace):
        conversation = conversation_start(channel="api", title=text)
        customer_message_post(conversation=conversation, text=text)
        when = timezone.now() - timedelta(days=days_idle)
        Conversation.objects.filter(pk=conversation.pk).update(last_message_at=when, created_at=when)
        ConversationLog.of(workspace.schema_name, conversation).append_sync([{"type": "status", "status": "bot"}])
        return conversation


def _exists(workspace, conversation) -> bool:
    from chat.models import Conversation, Message

    with tenant_context(workspace):
        found = Conversation.objects.filter(pk=conversation.pk).exists()
        assert found == Message.objects.filter(conversation_id=conversation.pk).exists()
        return found


def _log_keys(workspace, conversation) -> int:
    from chat.events import ConversationLog, sync_client

    log = ConversationLog.of(workspace.schema_name, conversation)
    return sync_client().exists(log.seq_key, log.stream_key)


def test_the_beat_purges_only_what_each_workspace_said_to_forget():
    from chat.tasks import retention_purge_all
    from tenants.services import workspace_retention_set

    keeping = workspace_with_owner(name="Keeps everything")
    forgetting = workspace_with_owner(name="Forgets after 30 days")
    workspace_retention_set(workspace=forgetting.workspace, days=30)
    old_kept = _conversation(keeping.workspace, days_idle=400)
    old_gone = _conversation(forgetting.workspace, days_idle=31)
    recent = _conversation(forgetting.workspace, days_idle=29)
    assert _log_keys(forgetting.workspace, old_gone) == 2

    assert retention_purge_all() >= 1

    assert not _exists(forgetting.workspace, old_gone) and _log_keys(forgetting.workspace, old_gone) == 0
    assert _exists(forgetting.workspace, recent) and _log_keys(forgetting.workspace, recent) == 2
    assert _exists(keeping.workspace, old_kept)  # retention 0: kept forever, however old


def test_purged_conversations_are_announced(django_db_blocker):
    from chat.retention import conversations_purge_expired
    from chat.signals import conversations_purged

    ws = workspace_with_owner(name="Announces")
    old = _conversation(ws.workspace, days_idle=10)
    heard: list[list[str]] = []

    def listen(sender, *, public_ids, **kwargs):
        heard.append(public_ids)

    conversations_purged.connect(listen, weak=False, dispatch_uid="test-retention-listen")
    try:
        with tenant_context(ws.workspace):
            assert conversations_purge_expired(days=7) == 1
    finally:
        conversations_purged.disconnect(dispatch_uid="test-retention-listen")
    assert heard == [[str(old.public_id)]]


@pytest.mark.parametrize("value,saved", [("90", 90), ("0", 0), ("-1", None), ("abc", None), ("99999", None)])
def test_staff_set_retention_from_the_settings_page(value, saved, host_client):
    from tenants.models import Workspace

    ws = workspace_with_owner(name="Retention form")
    client = host_client(ws.host)
    client.force_login(ws.owner)
    response = client.post("/settings/retention/", {"days": value})
    assert response.status_code == 302
    stored = Workspace.objects.get(pk=ws.workspace.pk).conversation_retention_days
    assert stored == (saved if saved is not None else 0)
    agent = member(ws.workspace, "agent")
    client.force_login(agent)
    assert client.post("/settings/retention/", {"days": "5"}).status_code == 403
    assert Workspace.objects.get(pk=ws.workspace.pk).conversation_retention_days == stored


def test_the_owner_exports_from_the_dashboard_and_only_the_owner_downloads(celery_worker, host_client):
    from tenants.models import ExportStatus, WorkspaceExport

    ws = workspace_with_owner(name="Exports from dashboard")
    other = workspace_with_owner(name="Someone else")
    _conversation(ws.workspace, days_idle=1, text="Do you deliver on Sundays?")
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    admin = host_client(ws.host)
    admin.force_login(member(ws.workspace, "admin"))
    assert admin.post("/settings/export/").status_code == 403

    assert owner.post("/settings/export/").status_code == 302
    deadline = time.monotonic() + 120
    while (export := WorkspaceExport.objects.get(workspace=ws.workspace)).status == ExportStatus.PENDING:
        assert time.monotonic() < deadline, celery_worker.log_tail()
        time.sleep(0.3)
    assert export.status == ExportStatus.READY, export.error
    page = owner.get("/settings/").content.decode()
    assert f"/settings/export/{export.pk}/download/" in page

    response = owner.get(f"/settings/export/{export.pk}/download/")
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    data = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        messages = tar.extractfile("data/chat.message.jsonl").read().decode()
    assert manifest["workspace"]["slug"] == ws.workspace.slug and "Do you deliver on Sundays?" in messages
    assert admin.get(f"/settings/export/{export.pk}/download/").status_code == 403

    stranger = host_client(other.host)
    stranger.force_login(other.owner)
    assert stranger.get(f"/settings/export/{export.pk}/download/").status_code == 404  # not theirs


def test_analytics_keeps_the_counts_but_forgets_the_words_of_purged_conversations():
    from analytics.models import Event
    from chat.retention import conversations_purge_expired

    ws = workspace_with_owner(name="Forgets the words")
    old = _conversation(ws.workspace, days_idle=40, text="My account number is 12345678")
    kept = _conversation(ws.workspace, days_idle=1, text="Do you ship to Norway?")
    with tenant_context(ws.workspace):
        assert Event.objects.filter(conversation_id=old.public_id).exclude(question_text="").exists()
        before = Event.objects.count()
        assert conversations_purge_expired(days=30) == 1
        assert Event.objects.count() == before  # the counts stay
        assert not Event.objects.filter(question_text__contains="12345678").exists()
        assert Event.objects.filter(conversation_id=kept.public_id, question_text="Do you ship to Norway?").exists()
