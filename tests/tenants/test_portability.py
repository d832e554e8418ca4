"""export_workspace / import_workspace: a workspace with real ingested knowledge, conversations, a widget, members
and analytics goes into one archive and comes back as a new workspace with the same rows, files, vectors and
answers; broken, hostile or incompatible archives are refused with a stable code and leave nothing behind."""
from __future__ import annotations

import io
import json
import secrets
import tarfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import tenant_context

from tests.factories import member, workspace_with_owner

POLICY = """# Returns

You can return any item within 30 days of delivery for a full refund. Start a return from the Orders page.
Refunds reach your card within five working days after the parcel arrives at our warehouse.
"""


def command(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command(*args, "--json", stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, json.loads(out.getvalue())


def _rows(workspace) -> dict[str, tuple[int, list]]:
    from tenants.portability import workspace_models

    with tenant_context(workspace):
        return {m._meta.label_lower: (m._default_manager.count(), sorted(m._default_manager.values_list("pk", flat=True)))
                for m in workspace_models()}


@pytest.fixture(scope="module")
def source(django_db_setup, django_db_blocker, celery_worker):
    """A workspace with an ingested upload, a typed FAQ, an answered conversation, a widget and an agent."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from chat.services import conversation_start, customer_message_post
    from documents import services as documents
    from documents.models import Document, DocumentStatus
    from embeds.services import embed_create

    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Export Co")
        agent = member(ws.workspace, "agent")
        with tenant_context(ws.workspace):
            upload = documents.document_upload(
                uploaded_file=SimpleUploadedFile("returns.md", POLICY.encode(), content_type="text/markdown"),
                uploaded_by=ws.owner)
            documents.document_create_faq(question="Do you ship abroad?", answer="Yes, to 30 countries.")
            conversation = conversation_start(channel="api", title="Refunds", created_by=ws.owner)
            customer_message_post(conversation=conversation, text="How long do refunds take?", author=ws.owner)
            embed = embed_create(name="site", allowed_origins=["https://shop.example"], created_by=ws.owner,
                                 starter_questions=["How long do refunds take?"],
                                 lead_form={"when": "before_chat", "fields": {"email": "required"}})
            from chat.services import conversation_lead_save

            widget_chat = conversation_start(channel="widget", embed_id=embed.pk, visitor_id="v-export")
            conversation_lead_save(conversation=widget_chat, values={"email": "lead@example.test"},
                                   stage="before_chat")
            from documents.curated import curated_answer_create

            ws.curated_id = curated_answer_create(question="Can I return a gift?",
                                                  answer="Yes, with the gift receipt, within 60 days.",
                                                  examples=["Returning a present"], actor=ws.owner).pk
        import time

        from analytics.models import Event, EventKind

        deadline = time.monotonic() + 240
        while True:
            with tenant_context(ws.workspace):
                statuses = set(Document.objects.values_list("status", flat=True))
                # The worker records a document's "ingested" event once its INDEXED state has committed: wait for
                # those too, or the export can be taken between the two and miss an event the source then has.
                ingested = Event.objects.filter(kind=EventKind.DOCUMENT_INGESTED).count()
                documents_total = Document.objects.count()
            if statuses == {DocumentStatus.INDEXED} and ingested == documents_total:
                break
            assert DocumentStatus.FAILED not in statuses and time.monotonic() < deadline, statuses
            time.sleep(0.5)
        ws.agent = agent
        ws.upload_id = upload.pk
        return ws


def test_export_then_import_gives_the_same_workspace(source, tmp_path, django_db_blocker):
    from documents.models import Document
    from documents.vectors import vectors_count, vectors_query
    from documents.embedding import embedder
    from accounts.models import Membership
    from tenants.models import Workspace

    archive = tmp_path / "export.tar.gz"
    with django_db_blocker.unblock():
        code, exported = command("export_workspace", "--workspace", source.workspace.slug, "--output", str(archive))
        assert code == 0, exported
        assert exported["counts"]["documents.document"] == 2 and exported["counts"]["chat.message"] >= 1
        assert "documents" in exported["parts"] and "members" in exported["parts"]
        slug = f"imp-{secrets.token_hex(3)}"
        code, imported = command("import_workspace", "--archive", str(archive), "--slug", slug,
                                 "--owner-email", source.owner.email)
        assert code == 0, imported
        target = Workspace.objects.get(slug=slug)
        assert _rows(target) == _rows(source.workspace)  # every model: same count, same primary keys
        with tenant_context(target):
            document = Document.objects.get(pk=source.upload_id)
            assert document.file.startswith(f"workspaces/{target.schema_name}/")
            from django.core.files.storage import default_storage

            assert default_storage.open(document.file).read() == POLICY.encode()
        assert vectors_count(schema_name=target.schema_name) == vectors_count(schema_name=source.workspace.schema_name) > 0
        query = list(embedder().embed(["how long until my refund arrives"])[0])
        hits_source = vectors_query(schema_name=source.workspace.schema_name, embedding=query, limit=3)
        hits_target = vectors_query(schema_name=target.schema_name, embedding=query, limit=3)
        assert [h.chunk_id for h in hits_target] == [h.chunk_id for h in hits_source]
        # Curated answers come along and are served in the new workspace (issue #17).
        from chat.answering import answer_once
        from documents.models import CuratedAnswer

        with tenant_context(target):
            copied = CuratedAnswer.objects.get(pk=source.curated_id)
            assert copied.answer == "Yes, with the gift receipt, within 60 days."
            assert copied.examples == ["Returning a present"] and copied.created_by == source.owner
            assert answer_once(question="Can I return a gift?")["curated_answer_id"] == source.curated_id
        # The widget's chips and lead form, and the lead on its conversation (issue #18), come along.
        from chat.models import Lead
        from embeds.models import Embed

        with tenant_context(target):
            copied_embed = Embed.objects.get(name="site")
            assert copied_embed.starter_questions == ["How long do refunds take?"]
            assert copied_embed.lead_form["fields"]["email"] == "required"
            lead = Lead.objects.select_related("conversation").get()
            assert lead.email == "lead@example.test" and lead.conversation.visitor_id == "v-export"
        assert Membership.objects.get(workspace=target, user=source.agent).role == "agent"
        assert Membership.objects.get(workspace=target, user=source.owner).role == "owner"
        # The source is untouched and still its own.
        with tenant_context(source.workspace):
            assert Document.objects.get(pk=source.upload_id).file.startswith(
                f"workspaces/{source.workspace.schema_name}/")


def test_an_export_holds_only_its_own_workspace(source, other_tenant, tmp_path, django_db_blocker):
    from chat.services import conversation_start

    marker = f"other-secret-{secrets.token_hex(4)}"
    archive = tmp_path / "only.tar.gz"
    with django_db_blocker.unblock():
        with tenant_context(other_tenant.workspace):
            conversation_start(channel="api", title=marker)
        code, _ = command("export_workspace", "--workspace", source.workspace.slug, "--output", str(archive))
        assert code == 0
    with tarfile.open(archive) as tar:
        for info in tar.getmembers():
            if info.isfile():
                data = tar.extractfile(info).read()
                assert marker.encode() not in data, info.name
                assert other_tenant.owner.email.encode() not in data, info.name


def _archive_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / f"{secrets.token_hex(3)}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("case", ["not-a-tar", "no-manifest", "traversal", "wrong-format", "other-migrations"])
def test_bad_archives_are_refused_and_leave_nothing(case, source, tmp_path, django_db_blocker):
    from tenants.models import Workspace

    with django_db_blocker.unblock():
        good = tmp_path / "good.tar.gz"
        assert command("export_workspace", "--workspace", source.workspace.slug, "--output", str(good))[0] == 0
        with tarfile.open(good) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())
        if case == "not-a-tar":
            path = tmp_path / "x.tar.gz"
            path.write_bytes(b"this is not an archive")
            expected = "archive_invalid"
        elif case == "no-manifest":
            path, expected = _archive_with(tmp_path, {"data/x.jsonl": b"{}"}), "archive_invalid"
        elif case == "traversal":
            path = _archive_with(tmp_path, {"manifest.json": json.dumps(manifest).encode(), "../../evil": b"x"})
            expected = "archive_invalid"
        elif case == "wrong-format":
            path = _archive_with(tmp_path, {"manifest.json": json.dumps({**manifest, "format": "zip"}).encode()})
            expected = "archive_invalid"
        else:
            tampered = {**manifest, "migrations": manifest["migrations"] + ["chat.9999_from_the_future"]}
            with tarfile.open(good) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
            members["manifest.json"] = json.dumps(tampered).encode()
            path, expected = _archive_with(tmp_path, members), "archive_incompatible"
        slug = f"bad-{secrets.token_hex(3)}"
        code, body = command("import_workspace", "--archive", str(path), "--slug", slug, "--owner-email",
                             source.owner.email)
        assert code == 1 and body["error"]["code"] == expected, body
        assert not Workspace.objects.filter(slug=slug).exists()
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [f"ws_{slug.replace('-', '_')}"])
            assert cursor.fetchone()[0] == 0
