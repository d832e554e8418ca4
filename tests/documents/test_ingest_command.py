"""`manage.py ingest`, `reindex` and `failed_jobs` per the operator contract, against the real worker."""
from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import connection

from documents.models import Document
from documents.vectors import vectors_count
from tests.documents.test_pipeline import FIXTURES, manual_text, workspace_schema
from tests.factories import workspace_with_owner
from tests.live import BASE_DIR, process_env

CONTRACT_KEYS = {"documents", "indexed", "failed", "chunks", "seconds"}
HUNG_AFTER_SECONDS = 720  # the thousand-file ingest still pending then is hung (liveness; speed is benched)


def run_command(*args: str) -> tuple[int, dict, str]:
    """call_command in this process: exit status, the JSON it printed, and stderr."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    try:
        call_command(*args, "--json", stdout=out, stderr=err)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    finally:
        connection.set_schema_to_public()
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, f"--json prints exactly one JSON document: {out.getvalue()!r}"
    return status, json.loads(lines[0]), err.getvalue()


@pytest.fixture(scope="module")
def ws(django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Command Co")


def test_ingest_a_folder_recursively_and_wait(ws, celery_worker, tmp_path):
    (tmp_path / "guides" / "deep").mkdir(parents=True)
    (tmp_path / "guides" / "setup.md").write_text(manual_text(title="Setup", sections=2, paragraphs=3, seed=21))
    (tmp_path / "guides" / "deep" / "faq.txt").write_text("Can I return a parcel? Yes, within 30 days. "
                                                          + secrets.token_hex(6))
    (tmp_path / "guides" / "deep" / "guide.pdf").write_bytes((FIXTURES / "guide.pdf").read_bytes())
    (tmp_path / "guides" / ".hidden.txt").write_text("never read")
    status, result, _err = run_command("ingest", "--workspace", ws.workspace.slug, "--wait", str(tmp_path / "guides"))
    assert status == 0, result
    assert CONTRACT_KEYS <= set(result)
    assert result["documents"] == 3 and result["indexed"] == 3 and result["failed"] == 0
    with workspace_schema(ws.workspace):
        documents = list(Document.objects.filter(original_name__in=["setup.md", "faq.txt", "guide.pdf"]))
        assert len(documents) == 3 and all(d.status == "indexed" for d in documents)
        assert result["chunks"] == sum(d.chunk_count for d in documents)
    assert sum(vectors_count(schema_name=ws.workspace.schema_name, document_id=d.pk) for d in documents) \
        == result["chunks"]

    # The same folder again: nothing new, nothing doubled, still success.
    status, again, _err = run_command("ingest", "--workspace", ws.workspace.slug, "--wait", str(tmp_path / "guides"))
    assert status == 0 and again["duplicates"] == 3 and again["indexed"] == 3 and again["chunks"] == result["chunks"]


def test_ingest_exits_1_when_any_document_fails(ws, celery_worker, tmp_path):
    (tmp_path / "ok.txt").write_text("A fine document. " + secrets.token_hex(6))
    (tmp_path / "photo.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "locked.pdf").write_bytes((FIXTURES / "encrypted.pdf").read_bytes())
    status, result, _err = run_command("ingest", "--workspace", ws.workspace.slug, "--wait", str(tmp_path))
    assert status == 1
    assert result["documents"] == 3 and result["indexed"] == 1 and result["failed"] == 2
    codes = sorted(error["code"] for error in result["errors"])
    assert codes == ["unsupported_type"], "upload-time refusals are listed with their code"


def test_ingest_without_wait_queues_and_returns(ws, celery_worker, tmp_path):
    (tmp_path / "later.txt").write_text("Queued now, indexed later. " + secrets.token_hex(6))
    status, result, _err = run_command("ingest", "--workspace", ws.workspace.slug, str(tmp_path / "later.txt"))
    assert status == 0 and result["documents"] == 1 and result["queued"] == 1 and result["failed"] == 0


def test_ingest_refuses_unknown_workspace_and_missing_path(ws, tmp_path):
    status, result, _err = run_command("ingest", "--workspace", "no-such-ws", str(tmp_path))
    assert status == 1 and result["error"]["code"] == "workspace_not_found"
    status, result, _err = run_command("ingest", "--workspace", ws.workspace.slug, str(tmp_path / "missing"))
    assert status == 1 and result["error"]["code"] == "not_found"


@pytest.mark.slow
@pytest.mark.timeout(HUNG_AFTER_SECONDS + 180)
def test_a_thousand_files_at_once_are_all_indexed(celery_worker, tmp_path):
    from tenants.models import Workspace

    fresh = workspace_with_owner(name="Thousand Files")
    Workspace.objects.filter(pk=fresh.workspace.pk).update(plan="starter")  # free allows 500 documents
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(1000):
        (folder / f"note-{index:04d}.txt").write_text(
            f"Note {index}: the code for locker {index} is {secrets.token_hex(4)}. Ask the front desk.")
    # Liveness, not speed (throughput is measured in bench/ingest.py): the command gives up (exit 1, "pending" in
    # its report) if the worker hasn't finished by then, so a hung pipeline fails here instead of waiting forever.
    status, result, _err = run_command("ingest", "--workspace", fresh.workspace.slug, "--wait",
                                       "--timeout", str(HUNG_AFTER_SECONDS), str(folder))
    assert status == 0, f"hung or failed: {result}"
    assert result["documents"] == 1000 and result["indexed"] == 1000 and result["failed"] == 0
    assert result["chunks"] == 1000 and "pending" not in result
    assert vectors_count(schema_name=fresh.workspace.schema_name) == 1000
    with workspace_schema(fresh.workspace):
        assert Document.objects.filter(status="indexed").count() == 1000


def test_reindex_command_rebuilds_without_duplicates(ws, celery_worker):
    status, result, _err = run_command("reindex", "--workspace", ws.workspace.slug, "--wait")
    # Everything is rebuilt; the encrypted PDF of the earlier test fails again, so the command exits 1.
    assert status == 1 and result["queued"] >= 5 and result["failed"] == 1
    assert result["indexed"] == result["queued"] - 1
    with workspace_schema(ws.workspace):
        indexed = list(Document.objects.filter(status="indexed"))
        for document in indexed:
            assert document.chunks.count() == document.chunk_count
            assert vectors_count(schema_name=ws.workspace.schema_name, document_id=document.pk) == document.chunk_count
        one = indexed[0]
    status, result, _err = run_command("reindex", "--workspace", ws.workspace.slug, "--document", str(one.pk), "--wait")
    assert status == 0 and result["documents"] == [one.pk] and result["indexed"] == 1
    status, result, _err = run_command("reindex", "--workspace", ws.workspace.slug, "--document", "999999")
    assert status == 1 and result["error"]["code"] == "not_found"


def test_failed_jobs_lists_and_retries(ws, celery_worker):
    status, result, _err = run_command("failed_jobs", "--workspace", ws.workspace.slug)
    assert status == 0
    assert [job["error_code"] for job in result["failed"]] == ["encrypted_file"]
    failed_id = result["failed"][0]["id"]
    status, result, _err = run_command("failed_jobs", "--workspace", ws.workspace.slug, "--retry")
    assert status == 0 and result["retried"] == [failed_id]
    with workspace_schema(ws.workspace):
        assert Document.objects.get(pk=failed_id).status in ("queued", "processing", "failed")


def test_ingest_as_a_real_process_prints_only_json(ws, celery_worker, tmp_path):
    (tmp_path / "proc.md").write_text("# Process\n\nRun as the operator would. " + secrets.token_hex(6))
    completed = subprocess.run(
        [sys.executable, "manage.py", "ingest", "--workspace", ws.workspace.slug, "--wait", "--json",
         str(tmp_path / "proc.md")],
        cwd=BASE_DIR, env=process_env(connection.settings_dict), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["documents"] == 1 and result["indexed"] == 1 and result["chunks"] >= 1
