"""The knowledge-base API (/api/v1/documents/...) and dashboard pages, through the real middleware stack: every bad
input gets a 4xx with a stable code; roles and API-key scopes decide who may do what."""
from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.services import api_key_create
from documents.models import Document
from tests.documents.test_pipeline import FIXTURES, manual_text, workspace_schema
from tests.factories import member, workspace_with_owner

API = "/api/v1/documents/"
HUNG_AFTER_SECONDS = 300  # liveness only (pytest-timeout): a request still running then is hung; speed is in bench/
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def ws(django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_with_owner(name="Api Knowledge")


@pytest.fixture(scope="module")
def keys(ws, django_db_blocker):
    with django_db_blocker.unblock():
        _k, write = api_key_create(workspace=ws.workspace, name="writer", scopes=["read", "write"])
        _k, read = api_key_create(workspace=ws.workspace, name="reader", scopes=["read"])
    return {"write": f"Api-Key {write}", "read": f"Api-Key {read}"}


@pytest.fixture
def api(ws, keys, host_client):
    client = host_client(ws.host)

    def call(method: str, path: str, key: str = "write", **kwargs):
        return getattr(client, method)(path, HTTP_AUTHORIZATION=keys[key], **kwargs)

    return call


def upload(api, name: str, data: bytes, **fields):
    return api("post", API, data={"file": SimpleUploadedFile(name, data), **fields})


def unique_text(label: str = "doc") -> bytes:
    return f"{label} {secrets.token_hex(8)}\n\nHow to reset the router: hold the button for ten seconds.\n".encode()


def wait_api(api, document_id: int, until=("indexed", "failed"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api("get", f"{API}{document_id}/").json()
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


# --- the lifecycle -----------------------------------------------------------------------------------------------


def test_upload_list_detail_chunks_and_delete(api, ws, celery_worker):
    response = upload(api, "router.txt", unique_text("router"), title="Router guide")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["title"] == "Router guide" and created["status"] == "queued" and created["content_type"] == "txt"
    assert created["source"] == "upload" and created["original_name"] == "router.txt" and len(created["sha256"]) == 64
    assert created["note"] and created["queue"] == "ingest"

    detail = wait_api(api, created["id"])
    assert detail["status"] == "indexed" and detail["progress"] == 100 and detail["chunk_count"] >= 1
    assert "reset the router" in detail["text_preview"]
    assert detail["chunks_preview"][0]["ordinal"] == 0
    listed = api("get", API, data={"q": "router guide"}).json()
    assert [d["id"] for d in listed["results"]] == [created["id"]]
    assert api("get", API, data={"status": "indexed"}).json()["count"] >= 1
    chunks = api("get", f"{API}{created['id']}/chunks/").json()
    assert chunks["count"] == detail["chunk_count"] and "reset the router" in chunks["results"][0]["text"]

    assert api("delete", f"{API}{created['id']}/").status_code == 204
    assert_error(api("get", f"{API}{created['id']}/"), 404, "not_found")
    assert_error(api("delete", f"{API}{created['id']}/"), 404, "not_found")


def test_text_and_faq_entries(api, celery_worker):
    text = api("post", f"{API}text/", data={"title": "Opening hours", "text": "We open at 9 and close at 17. "
                                            + secrets.token_hex(4)}, content_type="application/json")
    assert text.status_code == 201 and text.json()["source"] == "text" and text.json()["content_type"] == "txt"
    faq = api("post", f"{API}faq/", data={"question": "Do you ship abroad?", "answer": "Yes, to 30 countries. "
                                          + secrets.token_hex(4)}, content_type="application/json")
    assert faq.status_code == 201 and faq.json()["source"] == "faq" and faq.json()["title"] == "Do you ship abroad?"
    detail = wait_api(api, faq.json()["id"])
    assert detail["status"] == "indexed"
    assert detail["chunks_preview"][0]["heading_path"].endswith("Do you ship abroad?")
    assert wait_api(api, text.json()["id"])["status"] == "indexed"


def test_retry_reindex_and_new_version(api, celery_worker):
    created = upload(api, "policy.md", unique_text("policy")).json()
    assert wait_api(api, created["id"])["status"] == "indexed"
    assert_error(api("post", f"{API}{created['id']}/retry/"), 409, "conflict")
    reindexed = api("post", f"{API}{created['id']}/reindex/")
    assert reindexed.status_code == 202 and reindexed.json()["status"] == "queued"
    assert wait_api(api, created["id"])["status"] == "indexed"
    version = api("post", f"{API}{created['id']}/version/",
                  data={"file": SimpleUploadedFile("policy-v2.md", unique_text("policy two"))})
    assert version.status_code == 202 and version.json()["version"] == 2
    final = wait_api(api, created["id"])
    assert final["status"] == "indexed" and final["original_name"] == "policy-v2.md"
    assert "policy two" in final["text_preview"]

    broken = upload(api, "broken.pdf", (FIXTURES / "corrupt.pdf").read_bytes()).json()
    assert wait_api(api, broken["id"])["status"] == "failed"
    failed = api("get", f"{API}failed/").json()
    assert broken["id"] in [d["id"] for d in failed["results"]]
    entry = next(d for d in failed["results"] if d["id"] == broken["id"])
    assert entry["error_code"] == "corrupt_file" and entry["note"]
    retried = api("post", f"{API}{broken['id']}/retry/")
    assert retried.status_code == 202 and retried.json()["status"] == "queued" and retried.json()["error_code"] == ""


# --- bad input: refused before any work starts -----------------------------------------------------------------


@pytest.mark.parametrize("name, data, status, code", [
    ("empty.txt", b"", 422, "empty_document"),
    ("blank.txt", b"   \n\n  ", 422, "empty_document"),
    ("photo.pdf", PNG, 415, "unsupported_type"),
    ("program.txt", (FIXTURES / "program.txt").read_bytes(), 415, "unsupported_type"),
    ("setup.txt", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(2000), 415, "unsupported_type"),
    ("garbage.md", random.Random(3).randbytes(50_000), 415, "unsupported_type"),
    ("archive.docx", b"PK\x03\x04" + random.Random(4).randbytes(5000), 422, "corrupt_file"),
])
def test_bad_files_are_refused_with_a_code_and_leave_nothing_behind(api, ws, name, data, status, code):
    with workspace_schema(ws.workspace):
        before = Document.objects.count()
    stored_before = _stored_files(ws)
    assert_error(upload(api, name, data), status, code)
    with workspace_schema(ws.workspace):
        assert Document.objects.count() == before
    assert _stored_files(ws) == stored_before


def _stored_files(ws) -> set[str]:
    root = Path(settings.MEDIA_ROOT) / "workspaces" / ws.workspace.schema_name
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_file_over_the_cap_is_refused_with_413(api, ws, settings):
    settings.DOCUMENT_MAX_BYTES = 10_000
    stored_before = _stored_files(ws)
    error = assert_error(upload(api, "big.txt", b"a" * 10_001), 413, "file_too_large")
    assert error["details"]["max_bytes"] == 10_000
    assert _stored_files(ws) == stored_before
    assert upload(api, "fits.txt", unique_text("fits")[:9_000]).status_code == 201


def test_upload_without_a_file_or_with_two_or_as_json(api):
    assert_error(api("post", API, data={"title": "x"}), 400, "file_required")
    two = {"file": [SimpleUploadedFile("a.txt", unique_text()), SimpleUploadedFile("b.txt", unique_text())]}
    assert_error(api("post", API, data=two), 400, "too_many_files")
    assert_error(api("post", API, data={"file": "x"}, content_type="application/json"), 415,
                 "unsupported_media_type")


@pytest.mark.timeout(HUNG_AFTER_SECONDS)
def test_a_thousand_files_in_one_request_get_a_clear_400(api, ws):
    files = [SimpleUploadedFile(f"f{i}.txt", f"file {i}".encode()) for i in range(1000)]
    stored_before = _stored_files(ws)
    error = assert_error(api("post", f"{API}batch/", data={"files": files}), 400, "too_many_files")
    assert error["details"]["max_files"] == settings.DATA_UPLOAD_MAX_NUMBER_FILES
    # Refused while parsing, not after storing a thousand files: nothing of them is kept.
    assert _stored_files(ws) == stored_before
    with workspace_schema(ws.workspace):
        assert not Document.objects.filter(original_name__in=[f"f{i}.txt" for i in range(1000)]).exists()


def test_batch_upload_answers_per_file(api, ws, settings):
    settings.DOCUMENT_MAX_BYTES = 50_000
    good = unique_text("batch")
    files = [SimpleUploadedFile("good.txt", good), SimpleUploadedFile("again.txt", good),
             SimpleUploadedFile("photo.pdf", PNG), SimpleUploadedFile("huge.txt", b"x" * 60_000)]
    response = api("post", f"{API}batch/", data={"files": files})
    assert response.status_code == 200, response.content
    results = {r["filename"]: r for r in response.json()["results"]}
    assert results["good.txt"]["status"] == 201
    assert results["again.txt"]["status"] == 409 and results["again.txt"]["error"]["code"] == "duplicate_document"
    assert results["again.txt"]["error"]["details"]["document_id"] == results["good.txt"]["document"]["id"]
    assert results["photo.pdf"]["error"]["code"] == "unsupported_type"
    assert results["huge.txt"]["status"] == 413 and results["huge.txt"]["error"]["code"] == "file_too_large"


@pytest.mark.parametrize("name", [
    "../../../../etc/passwd.txt", "..\\..\\windows\\win.ini.txt", "/abs/path/notes.txt", "....//....//x.txt",
    "\x1b[31mred\x1b[0m.txt", "\u202etxt.exe.md", "bell\x07\x08name.txt", ".hidden.txt", "con\r\ntrol.txt",
    ("long" * 200) + ".txt",
])
def test_path_traversal_and_control_characters_in_names_are_neutralised(api, ws, name):
    response = upload(api, name, unique_text("named"))
    assert response.status_code == 201, response.content
    stored_name = response.json()["original_name"]
    assert stored_name and "/" not in stored_name and "\\" not in stored_name and not stored_name.startswith(".")
    assert not any(ord(ch) < 32 or ord(ch) == 127 or ch in "\u202e\u200b" for ch in stored_name)
    assert len(stored_name) <= 200
    with workspace_schema(ws.workspace):
        stored = Document.objects.get(pk=response.json()["id"]).file
    path = Path(default_storage.path(stored)).resolve()
    root = (Path(settings.MEDIA_ROOT) / "workspaces" / ws.workspace.schema_name / "documents").resolve()
    assert root in path.parents and path.is_file()


def test_duplicate_content_is_a_409_naming_the_existing_document(api):
    data = unique_text("dup")
    first = upload(api, "one.txt", data)
    assert first.status_code == 201
    error = assert_error(upload(api, "two.txt", data), 409, "duplicate_document")
    assert error["details"]["document_id"] == first.json()["id"]
    error = assert_error(api("post", f"{API}text/", data={"title": "t", "text": data.decode()},
                             content_type="application/json"), 409, "duplicate_document")
    assert error["details"]["document_id"] == first.json()["id"]


@pytest.mark.parametrize("url, status, code", [
    ("ftp://example.com/file.txt", 400, "url_invalid"),
    ("javascript:alert(1)", 400, "url_invalid"),
    ("http://user:pw@example.com/", 400, "url_invalid"),
    ("http://127.0.0.1:8000/admin", 400, "url_forbidden"),
    ("http://10.0.0.7/", 400, "url_forbidden"),
    ("http://169.254.169.254/latest/meta-data/", 400, "url_forbidden"),
    ("http://[::ffff:127.0.0.1]/", 400, "url_forbidden"),
    ("http://localhost:6379/", 400, "url_forbidden"),
])
def test_bad_and_private_urls_are_refused_at_once(api, url, status, code):
    assert_error(api("post", f"{API}import-url/", data={"url": url}, content_type="application/json"), status, code)


@pytest.mark.parametrize("body", [{}, {"title": "t"}, {"title": "", "text": "x"}, {"title": "t", "text": "   "},
                                  {"title": "t" * 301, "text": "x"}])
def test_bad_text_entries_are_400(api, body):
    response = api("post", f"{API}text/", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid", "empty_document")


def test_plan_limits_are_enforced_before_work_starts(api, ws):
    # The limits are the workspace's Plan (tenants.billing); tests/documents/test_document_limits.py covers every path.
    from tenants.models import Plan, Workspace

    with workspace_schema(ws.workspace):
        count = Document.objects.count()
    plans = [Plan.objects.create(code=f"docs-{secrets.token_hex(4)}", name="Docs test plan", is_public=False,
                                 monthly_credits=10, max_documents=documents, max_storage_bytes=storage)
             for documents, storage in ((count, 10**12), (10**6, 1))]
    try:
        Workspace.objects.filter(pk=ws.workspace.pk).update(plan=plans[0].code)
        error = assert_error(upload(api, "over.txt", unique_text("over")), 402, "plan_limit")
        assert error["details"]["meter"] == "documents" and error["details"]["limit"] == count
        Workspace.objects.filter(pk=ws.workspace.pk).update(plan=plans[1].code)
        error = assert_error(upload(api, "over.txt", unique_text("over")), 402, "plan_limit")
        assert error["details"]["meter"] == "storage_bytes"
    finally:
        Workspace.objects.filter(pk=ws.workspace.pk).update(plan="free")


# --- who may do what -------------------------------------------------------------------------------------------------


def test_roles_and_scopes(ws, keys, api, host_client):
    viewer = member(ws.workspace, "viewer")
    outsider = workspace_with_owner(name="Outsider")
    client = host_client(ws.host)
    client.force_login(viewer)
    assert client.get(API).status_code == 200
    assert_error(client.post(API, data={"file": SimpleUploadedFile("v.txt", unique_text())}), 403,
                 "permission_denied")
    assert_error(api("post", API, key="read", data={"file": SimpleUploadedFile("r.txt", unique_text())}), 403,
                 "permission_denied")
    assert api("get", API, key="read").status_code == 200
    assert_error(host_client(ws.host).get(API), 401, "not_authenticated")
    stranger = host_client(ws.host)
    stranger.force_login(outsider.owner)
    assert_error(stranger.get(API), 403, "not_a_member")


def test_session_upload_needs_the_csrf_token(ws, host_client):
    client = host_client(ws.host, enforce_csrf_checks=True)
    client.force_login(ws.owner)
    page = client.get("/knowledge/")
    assert page.status_code == 200
    assert_error(client.post(API, data={"file": SimpleUploadedFile("c.txt", unique_text())}), 403,
                 "permission_denied")
    token = client.cookies["csrftoken"].value
    response = client.post(API, data={"file": SimpleUploadedFile("c.txt", unique_text())}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content


# --- dashboard pages -------------------------------------------------------------------------------------------------


def test_dashboard_pages_show_documents_status_and_failures(ws, api, host_client, celery_worker):
    good = upload(api, "shown.md", manual_text(title="Shown manual", sections=1, paragraphs=2, seed=11).encode())
    bad = upload(api, "locked.pdf", (FIXTURES / "encrypted.pdf").read_bytes())
    wait_api(api, good.json()["id"]), wait_api(api, bad.json()["id"])
    client = host_client(ws.host)
    client.force_login(ws.owner)
    page = client.get("/knowledge/").content.decode()
    assert "Shown manual" in page and "chip-indexed" in page and "knowledge.js" in page
    assert "password-protected" in page  # the failure in plain words
    assert "Shown manual" in client.get("/knowledge/?q=shown").content.decode()
    assert "Shown manual" not in client.get("/knowledge/?status=failed").content.decode()
    detail = client.get(f"/knowledge/{good.json()['id']}/").content.decode()
    assert "Section 1" in detail and "Chunks" in detail
    failed = client.get("/knowledge/failed/").content.decode()
    assert "locked" in failed and "encrypted_file" in failed
    assert client.get("/knowledge/999999/").status_code == 404


def test_dashboard_forms_add_text_faq_and_act_on_documents(ws, host_client, celery_worker):
    client = host_client(ws.host)
    client.force_login(ws.owner)
    response = client.post("/knowledge/add-text/", {"title": "Dashboard text", "text": "Typed " + secrets.token_hex(4)})
    assert response.status_code == 302
    document_id = int(response["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert client.post("/knowledge/add-faq/", {"question": "Q?", "answer": "A " + secrets.token_hex(4)}).status_code == 302
    refused = client.post("/knowledge/import-url/", {"url": "http://127.0.0.1/"}, follow=True)
    assert "private" in refused.content.decode()
    assert client.post(f"/knowledge/{document_id}/reindex/").status_code == 302
    new_version = client.post(f"/knowledge/{document_id}/version/",
                              {"file": SimpleUploadedFile("v2.txt", unique_text("v2"))})
    assert new_version.status_code == 302
    with workspace_schema(ws.workspace):
        assert Document.objects.get(pk=document_id).version == 2
    assert client.post(f"/knowledge/{document_id}/delete/").status_code == 302
    with workspace_schema(ws.workspace):
        assert not Document.objects.filter(pk=document_id).exists()
    assert client.get("/knowledge/add-text/").status_code == 405  # POST-only, for those allowed to post
    viewer = member(ws.workspace, "viewer")
    client.force_login(viewer)
    assert client.post("/knowledge/add-text/", {"title": "x", "text": "y"}).status_code == 403
    # the permission is checked before the method: who may not post learns nothing, not even the methods
    assert client.get("/knowledge/add-text/").status_code == 403


# --- in a real browser -------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_drag_and_drop_upload_and_live_progress_in_chromium(ws, live_server, celery_worker, page):
    import os

    from playwright.sync_api import expect

    from tests.documents.test_pipeline import session_cookie

    name, value = session_cookie(ws.owner).split("=", 1)
    page.context.add_cookies([{"name": name, "value": value, "domain": ws.host, "path": "/"}])
    page.goto(live_server.url(ws.host, "/knowledge/"))
    expect(page.get_by_role("heading", name="Knowledge")).to_be_visible()
    expect(page.locator("[data-live-state]")).to_have_text("Live updates on", timeout=20_000)
    marker = secrets.token_hex(6)
    page.locator("[data-file-input]").set_input_files([
        {"name": "browser-guide.md", "mimeType": "text/markdown",
         "buffer": manual_text(title=f"Browser guide {marker}", sections=6, paragraphs=6, seed=31).encode()},
        {"name": "holiday.pdf", "mimeType": "application/pdf", "buffer": PNG},
    ])
    uploads = page.locator("[data-upload-list] li")
    expect(uploads.filter(has_text="browser-guide.md")).to_contain_text("uploaded", timeout=30_000)
    expect(uploads.filter(has_text="holiday.pdf")).to_contain_text("not supported", timeout=30_000)
    # The new document's row appears and turns indexed without a reload, driven by the WebSocket.
    row = page.locator("tr[data-document-id]", has_text=f"Browser guide {marker}")
    expect(row.locator('[data-field="status"]')).to_have_text("Indexed", timeout=120_000)
    expect(row.locator('[data-field="progress"]')).to_have_attribute("value", "100")
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "knowledge.png"), full_page=True)
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Chunks")).to_be_visible()
    expect(page.get_by_test_id("text-preview")).to_contain_text("Section 1")
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "knowledge-detail.png"), full_page=True)
