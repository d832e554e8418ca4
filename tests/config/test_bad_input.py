"""The shared hostile corpus (tests/hostile.py) against every REST field a client can write text into.

Never a 5xx; every error in the error shape with a stable code; an accepted value comes back exactly as sent.
"""
from __future__ import annotations

import json

import pytest

from urllib.parse import quote

from accounts.services import api_key_create
from config.errors import ErrorCode
from embeds.errors import EmbedErrorCode
from tests.factories import workspace_with_owner
from tests.hostile import HOSTILE_FILENAMES, HOSTILE_TEXT

# Every error code the product documents (the family in config/errors.py and the widget's own), and nothing else.
STABLE_CODES = set(ErrorCode._value2member_map_) | set(EmbedErrorCode._value2member_map_)


@pytest.fixture(scope="module")
def api(django_db_setup, django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        ws = workspace_with_owner(name="Hostile Co")
        _key, raw = api_key_create(workspace=ws.workspace, name="hostile", scopes=["read", "write", "chat"])
        client = Client(HTTP_HOST=ws.host, HTTP_AUTHORIZATION=f"Api-Key {raw}")
        client.schema_name = ws.workspace.schema_name
        return client


def _send(api, method: str, path: str, payload: dict | None = None):
    if method == "GET":  # percent-encoded as a browser would, surrogates included (invalid UTF-8 on the wire)
        query = "&".join(f"{key}={quote(str(value).encode('utf-8', 'surrogatepass'))}" for key, value in (payload or {}).items())
        return api.get(f"{path}?{query}")
    return api.generic(method, path, json.dumps(payload), content_type="application/json")


def _assert_clean(response, where: str) -> dict | None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.content[:300]!r}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, f"{where}: {body}"
        assert body["error"]["code"] in STABLE_CODES, f"{where}: unexpected code {body['error']['code']}"
        return None
    return response.json()


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[name for name, _ in HOSTILE_TEXT])
def test_conversation_fields(api, name, value):
    created = _assert_clean(_send(api, "POST", "/api/v1/conversations/", {"title": value}), f"title {name}")
    if created is not None:
        stored = api.get(f"/api/v1/conversations/{created['id']}/").json()
        assert stored["title"] == value.strip()[:200] or stored["title"] == value[:200], name
    _assert_clean(_send(api, "POST", "/api/v1/conversations/", {"metadata": {name: value, value[:50]: [value]}}),
                  f"metadata {name}")
    _assert_clean(_send(api, "POST", "/api/v1/conversations/", {"visitor_email": value}), f"email {name}")
    _assert_clean(_send(api, "GET", "/api/v1/conversations/", {"q": value[:200]}), f"search {name}")


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[name for name, _ in HOSTILE_TEXT])
def test_customer_message(api, name, value):
    conversation = _send(api, "POST", "/api/v1/conversations/", {"title": "hostile"}).json()
    path = f"/api/v1/conversations/{conversation['id']}/messages/"
    reply = _assert_clean(_send(api, "POST", path, {"text": value, "client_id": name}), f"message {name}")
    if reply is not None:
        messages = api.get(path).json()
        listed = messages["results"] if isinstance(messages, dict) else messages
        texts = [m["content"] for m in listed if m["role"] == "customer"]
        # Surrounding whitespace is trimmed (Python's notion of it); everything else is kept exactly.
        assert value in texts or value.strip() in texts, f"{name}: the accepted message was not stored as sent"


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[name for name, _ in HOSTILE_TEXT])
def test_knowledge_entries(api, name, value):
    _assert_clean(_send(api, "POST", "/api/v1/documents/text/", {"title": value[:300] or "t", "text": value}),
                  f"text {name}")
    _assert_clean(_send(api, "POST", "/api/v1/documents/faq/", {"question": value[:1000], "answer": value}),
                  f"faq {name}")


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[name for name, _ in HOSTILE_TEXT])
def test_widget_settings(api, name, value):
    _assert_clean(_send(api, "POST", "/api/v1/embeds/", {"name": value[:100], "allowed_origins": [value[:300]]}),
                  f"embed {name}")


@pytest.mark.parametrize("filename", HOSTILE_FILENAMES)
def test_upload_file_names(api, filename):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = f"How to reset a password ({filename!r}): open Settings.".encode("utf-8", "surrogatepass")
    upload = SimpleUploadedFile(filename, body, content_type="text/plain")
    response = api.post("/api/v1/documents/", {"file": upload})
    body = _assert_clean(response, f"upload {filename!r}")
    if body is not None:
        # Kept as a label only: the stored file sits inside the workspace's own media folder whatever the name said.
        from pathlib import Path

        from django.conf import settings
        from django.core.files.storage import default_storage
        from django_tenants.utils import schema_context

        from documents.models import Document

        document_id = body["id"] if "id" in body else body["document"]["id"]
        with schema_context(api.schema_name):
            stored = Document.objects.get(pk=document_id)
        assert stored.file, "the upload kept no file"
        path = Path(default_storage.path(stored.file)).resolve()
        assert path.is_relative_to(Path(settings.MEDIA_ROOT).resolve() / "workspaces" / api.schema_name), path
        assert ".." not in Path(stored.file).parts and "\x00" not in stored.file


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[name for name, _ in HOSTILE_TEXT])
def test_socket_frames(name, value):
    """The chat/widget socket protocol: a hostile message or feedback comment is refused with a stable code or
    accepted as text PostgreSQL can store."""
    from chat.protocol import ClientFrame, ProtocolError, ProtocolLimits, client_frame_parse
    from config.parsers import unstorable_text

    limits = ProtocolLimits.from_settings()
    frames = [
        {"type": "message", "client_id": "c1", "text": value},
        {"type": "feedback", "message_id": 1, "value": 1, "comment": value},
    ]
    for frame in frames:
        try:
            parsed = client_frame_parse(json.dumps(frame), limits)
        except ProtocolError as error:
            assert error.code in STABLE_CODES, (name, error.code)
            continue
        assert isinstance(parsed, ClientFrame)
        text = parsed.data.get("text", parsed.data.get("comment", ""))
        assert not unstorable_text(text), name
