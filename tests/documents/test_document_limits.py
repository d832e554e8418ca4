"""Documents count against the workspace's plan (tenants.billing): document count and storage, on every way in (API
upload, the dashboard, text and FAQ entries, URL import — at request time and again when the page is fetched —,
`manage.py ingest`, new versions). Over the limit is 402 plan_limit and keeps nothing: no file, no row, no vector.
The check runs under billing's advisory lock, so simultaneous uploads can't overshoot; deleting frees quota."""
from __future__ import annotations

import io
import json
import secrets
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection

from accounts.services import api_key_create
from documents import services
from documents.models import Document
from documents.vectors import _store, vector_collection_name, vectors_count
from tenants import billing
from tenants.models import Plan, Workspace
from tests.documents.test_documents_api import API, assert_error, unique_text, wait_api
from tests.documents.test_pipeline import site, url_worker, wait_settled, workspace_schema  # noqa: F401 (fixtures)
from tests.factories import workspace_with_owner

GB = 1024**3


def plan_make(**limits) -> Plan:
    """A hidden plan for one test (plans are data; staff create them in the admin)."""
    values = dict(code=f"docs-{secrets.token_hex(4)}", name="Docs test plan", tier=0, is_public=False,
                  price=Decimal("0"), monthly_credits=10, max_documents=None, max_storage_bytes=None,
                  max_widgets=None, max_seats=None, allowed_providers=["builtin"])
    values.update(limits)
    return Plan.objects.create(**values)


def plan_set(ws, **limits) -> Plan:
    plan = plan_make(**limits)
    Workspace.objects.filter(pk=ws.workspace.pk).update(plan=plan.code)
    return plan


def stored_files(ws) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "workspaces" / ws.workspace.schema_name
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def snapshot(ws) -> tuple[list[int], list[Path], int]:
    """What the workspace holds: document ids, stored files, and vectors that belong to no document (a worker may
    be indexing the documents that were accepted meanwhile, so their vectors come and go; orphans never may)."""
    with workspace_schema(ws.workspace):
        ids = sorted(Document.objects.values_list("id", flat=True))
        with _store.collection(vector_collection_name(ws.workspace.schema_name)) as (_client, collection):
            metadatas = [] if collection is None else collection.get(include=["metadatas"])["metadatas"]
    owners = [metadata["document_id"] for metadata in metadatas]
    return ids, stored_files(ws), sum(1 for owner in owners if owner not in ids)


@pytest.fixture
def ws(django_db_blocker):
    """A fresh workspace per test: limits are about what one workspace holds."""
    with django_db_blocker.unblock():
        created = workspace_with_owner(name="Limits Co")
        _key, secret = api_key_create(workspace=created.workspace, name="writer", scopes=["read", "write"])
    created.key = f"Api-Key {secret}"  # type: ignore[attr-defined]
    return created


@pytest.fixture
def api(ws, host_client):
    client = host_client(ws.host)

    def call(method: str, path: str, **kwargs):
        return getattr(client, method)(path, HTTP_AUTHORIZATION=ws.key, **kwargs)

    return call


def fill(api, count: int) -> list[int]:
    ids = []
    for n in range(count):
        response = api("post", API, data={"file": SimpleUploadedFile(f"fill{n}.txt", unique_text(f"fill{n}"))})
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    return ids


def assert_plan_limit(response, meter: str, *, limit: int, plan: Plan) -> dict:
    error = assert_error(response, 402, "plan_limit")
    details = error["details"]
    assert details["meter"] == meter and details["limit"] == limit and details["plan"] == plan.code, details
    assert details["how_to_lift"] and details["lift_url"] == "/settings/billing/"
    return error


# --- every way in -------------------------------------------------------------------------------------------------


def test_api_upload_over_the_document_count_stores_nothing(ws, api):
    plan = plan_set(ws, max_documents=2)
    fill(api, 2)
    before = snapshot(ws)
    response = api("post", API, data={"file": SimpleUploadedFile("over.txt", unique_text("over"))})
    error = assert_plan_limit(response, "documents", limit=2, plan=plan)
    assert error["details"]["used"] == 2 and error["details"]["adding"] == 1
    assert snapshot(ws) == before and len(before[1]) == 2


def test_api_upload_over_storage_stores_nothing(ws, api):
    first = unique_text("first")
    plan = plan_set(ws, max_storage_bytes=len(first) + 10)
    assert api("post", API, data={"file": SimpleUploadedFile("first.txt", first)}).status_code == 201
    before = snapshot(ws)
    response = api("post", API, data={"file": SimpleUploadedFile("big.txt", unique_text("second"))})
    error = assert_plan_limit(response, "storage_bytes", limit=len(first) + 10, plan=plan)
    assert error["details"]["used"] == len(first)
    assert snapshot(ws) == before


def test_batch_upload_answers_per_file_and_stops_at_the_limit(ws, api):
    plan_set(ws, max_documents=2)
    files = [SimpleUploadedFile(f"b{n}.txt", unique_text(f"b{n}")) for n in range(4)]
    response = api("post", f"{API}batch/", data={"files": files})
    with workspace_schema(ws.workspace):
        assert Document.objects.count() == 2
    assert "plan_limit" in response.content.decode()
    assert len(stored_files(ws)) == 2


def test_text_faq_and_url_entries_over_the_limit_store_nothing(ws, api):
    plan = plan_set(ws, max_documents=1)
    fill(api, 1)
    before = snapshot(ws)
    for path, body in (("text/", {"title": "Hours", "text": "We open at 9."}),
                       ("faq/", {"question": "Ship abroad?", "answer": "Yes."}),
                       ("import-url/", {"url": "https://example.com/shipping"})):
        response = api("post", f"{API}{path}", data=body, content_type="application/json")
        assert_plan_limit(response, "documents", limit=1, plan=plan)
    assert snapshot(ws) == before


def test_new_version_over_storage_keeps_the_old_version(ws, api):
    plan = plan_set(ws, max_storage_bytes=200)
    document_id = fill(api, 1)[0]  # about 90 bytes
    before = snapshot(ws)
    response = api("post", f"{API}{document_id}/version/",
                   data={"file": SimpleUploadedFile("v2.txt", unique_text("v2") * 3)})
    error = assert_plan_limit(response, "storage_bytes", limit=200, plan=plan)
    assert error["details"]["used"] == 0, "the version it replaces does not count"
    assert snapshot(ws) == before
    # A version that fits replaces the old one (its size is not counted twice).
    response = api("post", f"{API}{document_id}/version/",
                   data={"file": SimpleUploadedFile("v3.txt", unique_text("v3") * 2)})
    assert response.status_code in (200, 202), response.content


def test_dashboard_upload_and_forms_over_the_limit_store_nothing(ws, host_client):
    plan_set(ws, max_documents=0)
    client = host_client(ws.host)
    client.force_login(ws.owner)
    # The dashboard's drag-and-drop posts to the API with the session (static/js/knowledge.js).
    response = client.post(API, data={"file": SimpleUploadedFile("drop.txt", unique_text("drop"))})
    assert_error(response, 402, "plan_limit")
    for path, body in (("/knowledge/add-text/", {"title": "Hours", "text": "We open at 9."}),
                       ("/knowledge/add-faq/", {"question": "Ship abroad?", "answer": "Yes."}),
                       ("/knowledge/import-url/", {"url": "https://example.com/returns"})):
        response = client.post(path, data=body, follow=True)
        assert response.status_code == 200
        shown = [str(m) for m in response.context["messages"]]
        assert any("plan allows 0 documents" in m for m in shown), shown
    assert snapshot(ws) == ([], [], 0)


def test_ingest_command_over_the_limit_stores_nothing_and_says_why(ws, tmp_path):
    plan_set(ws, max_documents=2)
    for n in range(3):
        (tmp_path / f"manual{n}.txt").write_bytes(unique_text(f"manual{n}"))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("ingest", "--workspace", ws.workspace.slug, "--json", str(tmp_path), stdout=out,
                     stderr=io.StringIO())
    connection.set_schema_to_public()
    assert exit_.value.code == 1
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["queued"] == 2 and [e["code"] for e in summary["errors"]] == ["plan_limit"]
    ids, files, _vectors = snapshot(ws)
    assert len(ids) == 2 and len(files) == 2


def test_url_page_over_storage_fails_when_fetched_and_keeps_no_file(ws, url_worker, site, settings):  # noqa: F811
    settings.DOCUMENT_QUEUE, settings.URL_IMPORT_ALLOW_PRIVATE = url_worker[1], True
    plan_set(ws, max_storage_bytes=100)  # the test page is a few hundred bytes
    with workspace_schema(ws.workspace):
        document_id = services.document_import_url(url=site.url("/page")).pk
    document = wait_settled(ws.workspace, document_id)
    assert document.status == "failed" and document.error_code == "plan_limit", document.error_message
    assert document.file == "" and document.size_bytes == 0
    assert stored_files(ws) == []
    assert vectors_count(schema_name=ws.workspace.schema_name) == 0


# --- counters, deleting, and the race -----------------------------------------------------------------------------


def test_usage_counters_follow_uploads_and_deletes_and_deleting_frees_quota(ws, api, celery_worker):
    plan = plan_set(ws, max_documents=2)
    ids = fill(api, 2)
    sizes = []
    for document_id in ids:
        body = wait_api(api, document_id)
        assert body["status"] == "indexed"
        sizes.append(body["size_bytes"])
    assert billing.usage_count(workspace=ws.workspace, meter="documents") == 2
    assert billing.usage_count(workspace=ws.workspace, meter="storage_bytes") == sum(sizes)
    assert_plan_limit(api("post", API, data={"file": SimpleUploadedFile("x.txt", unique_text("x"))}),
                      "documents", limit=2, plan=plan)

    assert api("delete", f"{API}{ids[0]}/").status_code == 204
    assert billing.usage_count(workspace=ws.workspace, meter="documents") == 1
    assert billing.usage_count(workspace=ws.workspace, meter="storage_bytes") == sizes[1]
    response = api("post", API, data={"file": SimpleUploadedFile("again.txt", unique_text("again"))})
    assert response.status_code == 201, response.content
    assert wait_api(api, response.json()["id"])["status"] == "indexed"
    # The billing page and usage_report see the same numbers.
    summary = billing.usage_summary(workspace=ws.workspace)
    assert summary["meters"]["documents"]["used"] == 2 and summary["meters"]["documents"]["limit"] == 2


def test_simultaneous_uploads_over_http_store_exactly_the_limit(ws, live_server):
    plan_set(ws, max_documents=3, max_storage_bytes=GB)
    start = threading.Barrier(8)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        start.wait()
        response = live_server.request(
            "post", ws.host, API, headers={"Authorization": ws.key},
            files={"file": (f"race{n}.txt", unique_text(f"race{n}"), "text/plain")},
        )
        try:
            code = "" if response.status_code == 201 else response.json()["error"]["code"]
        except ValueError:
            code = response.text[:300]
        with lock:
            results.append((response.status_code, code))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [(201, "")] * 3 + [(402, "plan_limit")] * 5, results
    ids, files, _vectors = snapshot(ws)
    assert len(ids) == 3 and len(files) == 3
