"""A new workspace's first upload is answerable (issue #20, "the first answer within seconds of the first upload"):
the whole path a new customer takes — a question asked before any knowledge exists (so the web process has looked
at the empty vector store), a one-page PDF uploaded over the REST API, ingested by the real Celery worker in
another process, then the same question over the REST API on the real ASGI server — answered from that PDF.

No duration is asserted: how many seconds this takes is a figure of `python -m bench ingest` ("first_answer").
The only bound is a liveness deadline (HUNG_AFTER_SECONDS) so a stuck pipeline fails instead of hanging.
"""
from __future__ import annotations

import time

import pytest

from accounts.services import api_key_create
from bench.small_kb import pdf_bytes
from tests.factories import workspace_with_owner

HUNG_AFTER_SECONDS = 180
QUESTION = "How long is the returns window?"
POLICY = ("Welcome to Harbor Bike Shop. You can return any item within 45 days of purchase for a full refund.\n"
          "Orders ship within 2 business days.\nGift cards never expire.")


@pytest.fixture
def newcomer(django_db_blocker):
    with django_db_blocker.unblock():
        created = workspace_with_owner(name="Brand New Bikes")
        keys = {scope: api_key_create(workspace=created.workspace, name=f"{scope}-key", scopes=[scope])[1]
                for scope in ("write", "chat", "read")}
    return created, keys


def _ask(live_server, host: str, key: str) -> dict:
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    conversation = live_server.request("POST", host, "/api/v1/conversations/", headers=headers, data="{}",
                                       timeout=HUNG_AFTER_SECONDS)
    assert conversation.status_code == 201, conversation.text[:300]
    posted = live_server.request("POST", host, f"/api/v1/conversations/{conversation.json()['id']}/messages/",
                                 headers=headers, data=f'{{"text": "{QUESTION}"}}', timeout=HUNG_AFTER_SECONDS)
    assert posted.status_code == 201, posted.text[:300]
    return posted.json()["answer"]


def test_the_first_upload_of_a_fresh_workspace_is_answerable(newcomer, live_server, celery_worker):
    created, keys = newcomer
    host = created.host
    before = _ask(live_server, host, keys["chat"])
    assert before["answered"] is False and before["citations"] == []

    upload = live_server.request(
        "POST", host, "/api/v1/documents/", headers={"Authorization": f"Api-Key {keys['write']}"},
        files={"file": ("store-policies.pdf", pdf_bytes(POLICY, title="Store policies"), "application/pdf")},
        timeout=HUNG_AFTER_SECONDS)
    assert upload.status_code == 201, upload.text[:300]
    document_id = upload.json()["id"]

    deadline = time.monotonic() + HUNG_AFTER_SECONDS
    while True:
        document = live_server.request("GET", host, f"/api/v1/documents/{document_id}/",
                                       headers={"Authorization": f"Api-Key {keys['read']}"}).json()
        if document["status"] in ("indexed", "failed"):
            break
        assert time.monotonic() < deadline, f"hung: the document is still {document['status']} ({document})\n" \
                                            f"{celery_worker.log_tail()}"
        time.sleep(0.1)
    assert document["status"] == "indexed", document

    after = _ask(live_server, host, keys["chat"])
    assert after["answered"] is True, after
    assert [citation["document_id"] for citation in after["citations"]][:1] == [document_id], after["citations"]
    assert "45 days" in after["content"], after["content"]


def test_warming_a_process_loads_what_its_first_document_needs():
    import sys

    from documents import embedding
    from documents.warmup import knowledge_warm_up

    timings = knowledge_warm_up()
    assert {"parsers", "chunking", "tokenizer", "embedder"} <= set(timings)
    assert "documents.parsers.pdf" in sys.modules and "documents.chunking" in sys.modules
    assert embedding.wordpiece_counter.cache_info().currsize == 1
    assert embedding._embedders, "the embedding model is loaded and kept"
