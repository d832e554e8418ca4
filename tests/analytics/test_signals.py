"""Events come from the real paths: the answer path (REST message endpoint), feedback, a handoff, the ingestion
pipeline, and the widget's visitor session — each writes its event, in its own workspace only."""
from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.services import api_key_create
from tests.chat.test_protocol import MANUAL, QUESTION, knowledge_seed
from tests.factories import workspace_with_owner

API = "/api/v1/conversations/"


@pytest.fixture(scope="module")
def shop(django_db_blocker):
    with django_db_blocker.unblock():
        shop = workspace_with_owner(name="Signal Shop")
        knowledge_seed(shop.workspace, ("Acme Router X200 manual", MANUAL))
        _key, raw = api_key_create(workspace=shop.workspace, name="chat", scopes=["chat", "read"])
    return shop, raw


def events_of(workspace, **filters):
    from analytics.models import Event

    with tenant_context(workspace):
        return list(Event.objects.filter(**filters).order_by("id"))


def test_ingestion_records_document_ingested(shop):
    from documents.models import Document

    workspace, _key = shop[0].workspace, shop[1]
    with tenant_context(workspace):
        document = Document.objects.get(title="Acme Router X200 manual")
    ingested = events_of(workspace, kind="document_ingested")
    assert [e.document_id for e in ingested] == [document.pk]


def test_a_question_through_the_answer_path_records_its_events(shop, host_client, other_tenant):
    workspace, key = shop[0].workspace, shop[1]
    client = host_client(shop[0].host)
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    conversation = client.post(API, {}, content_type="application/json", **auth).json()
    posted = client.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION}, content_type="application/json",
                         **auth)
    assert posted.status_code == 201, posted.content[:300]
    answer = posted.json()["answer"]
    client.post(f"{API}{conversation['id']}/messages/{answer['id']}/feedback/", {"value": 1},
                content_type="application/json", **auth)
    client.post(f"{API}{conversation['id']}/request-human/", {}, content_type="application/json", **auth)

    events = events_of(workspace, conversation_id=conversation["id"])
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["conversation_started", "question_asked", "answer_completed"]
    assert "feedback_given" in kinds and "handoff_requested" in kinds
    question, completed = events[1], events[2]
    assert question.question_text == QUESTION and question.message_id == posted.json()["message"]["id"]
    assert completed.message_id == answer["id"] and completed.outcome in ("answered", "low_confidence")
    assert completed.question_text == QUESTION and completed.question_hash == question.question_hash
    assert completed.latency_total_ms == answer["latency_total_ms"] and completed.tokens_out == answer["tokens_out"]
    assert completed.provider == answer["provider"] and completed.cited_document_ids
    assert next(e for e in events if e.kind == "feedback_given").feedback == 1
    assert next(e for e in events if e.kind == "handoff_requested").reason == "asked"
    # Nothing of it landed in another workspace.
    assert events_of(other_tenant.workspace, conversation_id=conversation["id"]) == []

    # And the API counts it: rollups built by the same update beat runs, the rest read raw.
    from analytics.services import rollups_update

    with tenant_context(workspace):
        rollups_update()
    summary = client.get("/api/v1/analytics/summary/", **auth).json()
    assert summary["questions"] >= 1 and summary["answered"] >= 1 and summary["feedback_up"] >= 1


def test_a_widget_session_records_widget_opened(shop):
    from embeds.services import embed_create, visitor_session_start

    workspace = shop[0].workspace
    with tenant_context(workspace):
        embed = embed_create(name="Site", allowed_origins=["https://shop.example"])
        session = visitor_session_start(embed=embed, host_origin="https://shop.example")
    opened = events_of(workspace, kind="widget_opened", embed_id=embed.pk)
    assert len(opened) == 1 and opened[0].origin == "https://shop.example"
    assert opened[0].visitor_id == session.claims.visitor_id


def test_a_failing_receiver_never_breaks_the_sender(shop, host_client):
    """The receivers log and swallow: with the events table gone, answers still come."""
    from django.db import connection

    workspace, key = shop[0].workspace, shop[1]
    table = f'"{workspace.schema_name}".analytics_event'
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO analytics_event_away")
    try:
        client = host_client(shop[0].host)
        auth = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
        conversation = client.post(API, {}, content_type="application/json", **auth).json()
        posted = client.post(f"{API}{conversation['id']}/messages/", {"text": QUESTION},
                             content_type="application/json", **auth)
        assert posted.status_code == 201 and posted.json()["answer"]["answered"] is True
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{workspace.schema_name}".analytics_event_away RENAME TO analytics_event')
