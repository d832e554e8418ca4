"""Starter questions and the lead form (issue #18, items 1 and 2): the settings' rules, suggestions drawn from the
clustered top questions that the knowledge base answered, the visitor's doors (validation with stable codes, only
their own conversation), the lead stored on the conversation with its `lead_captured` signal, the inbox detail, the
list and CSV export (API and dashboard), roles, and erasure with the conversation."""
from __future__ import annotations

import csv
import io
import secrets
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.services import api_key_create
from chat.models import Conversation, Lead
from config.errors import ValidationFailed
from embeds import services
from embeds.leads import lead_form_clean, lead_values_clean, starter_questions_clean
from tests.embeds.conftest import embed_make, in_workspace, workspace_on_plan
from tests.factories import member

SHOP = "https://shop.example"
FULL_FORM = {"when": "before_chat", "fields": {"name": "required", "email": "required", "phone": "optional",
                                                "custom": "optional"}, "custom_label": "Company"}


@pytest.fixture(scope="module")
def shop(django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Leads Co", plan="pro")
        ws.embed = embed_make(ws.workspace, [SHOP], name="Leads site", lead_form=FULL_FORM,
                              starter_questions=["How do returns work?", "Where is my parcel?"])
        ws.plain = embed_make(ws.workspace, [SHOP], name="No form")
        ws.handoff = embed_make(ws.workspace, [SHOP], name="Handoff form", lead_form={
            "when": "handoff", "fields": {"email": "required"}})
    return ws


class Visitor:
    """The frame's calls, through the in-process client on the workspace host (the same doors as the browser)."""

    def __init__(self, host_client: Any, host: str, public_key: str, credential: str | None = None) -> None:
        self.client = host_client(host)
        self.own = f"http://{host}"
        body = {"host_origin": SHOP, **({"visitor": credential} if credential else {})}
        response = self.client.post(f"/widget/v1/session/{public_key}/", body, content_type="application/json",
                                    HTTP_ORIGIN=self.own, HTTP_SEC_FETCH_SITE="same-origin")
        assert response.status_code == 200, response.content
        self.token, self.credential = response.json()["token"], response.json()["visitor"]

    def call(self, method: str, path: str, body: Any = None):
        return getattr(self.client, method.lower())(
            path, body, content_type="application/json", HTTP_ORIGIN=self.own, HTTP_SEC_FETCH_SITE="same-origin",
            HTTP_AUTHORIZATION=f"Bearer {self.token}") if body is not None else getattr(self.client, method.lower())(
            path, HTTP_SEC_FETCH_SITE="same-origin", HTTP_AUTHORIZATION=f"Bearer {self.token}")


def error(response) -> tuple[str, dict]:
    data = response.json()["error"]
    return data["code"], data.get("details", {}).get("fields", {})


# --- settings -----------------------------------------------------------------------------------------------------
def test_starter_questions_are_cleaned_and_capped_at_six():
    questions, errors = starter_questions_clean(["  How do  returns work? ", "", "how do returns work?", "Ship?"])
    assert questions == ["How do returns work?", "Ship?"] and errors == []
    _questions, errors = starter_questions_clean([f"Question {n}?" for n in range(7)])
    assert errors == ["At most 6 starter questions."]
    assert starter_questions_clean(["x" * 151])[1] and starter_questions_clean("a\nb")[0] == ["a", "b"]
    assert starter_questions_clean({"a": 1})[1] == ["A list of questions."]


@pytest.mark.parametrize("form, problem", [
    ({"when": "always"}, "`when`"),
    ({"when": "before_chat", "fields": {"fax": "required"}}, "Unknown field"),
    ({"when": "before_chat", "fields": {"email": "maybe"}}, "`email`"),
    ({"when": "before_chat", "fields": {"custom": "required"}}, "custom_label"),
    ({"when": "before_chat"}, "at least one field"),
    ({"when": "off", "colour": "red"}, "Unknown keys"),
    ("before_chat", "An object"),
])
def test_bad_lead_forms_are_refused_with_the_reason(form, problem):
    _form, errors = lead_form_clean(form)
    assert any(problem in message for message in errors), errors


def test_settings_are_saved_audited_and_refused_as_a_whole(shop):
    from accounts.models import AuditEntry

    with pytest.raises(ValidationFailed) as refused:
        in_workspace(shop.workspace, services.embed_update, embed=shop.plain,
                     starter_questions=[f"Q{n}" for n in range(8)], lead_form={"when": "sometimes"})
    assert refused.value.code == "invalid"
    assert set(refused.value.details["fields"]) == {"starter_questions", "lead_form"}
    embed = in_workspace(shop.workspace, services.embed_update, embed=shop.plain, actor=shop.owner,
                         starter_questions=["Where is my parcel?"])
    assert embed.starter_questions == ["Where is my parcel?"]
    entry = AuditEntry.objects.filter(workspace=shop.workspace, action="embed.updated").latest("id")
    assert entry.data == {"fields": ["starter_questions"]}
    in_workspace(shop.workspace, services.embed_update, embed=shop.plain, starter_questions=[])


def test_the_frame_gets_chips_and_form_and_the_api_round_trips_them(shop, host_client):
    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    response = owner.patch(f"/api/v1/embeds/{shop.plain.pk}/", {
        "starter_questions": ["Do you ship abroad?", "Can I pay by invoice?"],
        "lead_form": {"when": "handoff", "fields": {"email": "required", "phone": "optional"}},
    }, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["starter_questions"] == ["Do you ship abroad?", "Can I pay by invoice?"]
    assert body["lead_form"]["fields"] == {"name": "off", "email": "required", "phone": "optional", "custom": "off"}
    bad = owner.patch(f"/api/v1/embeds/{shop.plain.pk}/", {"lead_form": {"when": "handoff", "fields": {}}},
                      content_type="application/json")
    assert bad.status_code == 400 and error(bad)[0] == "invalid" and "lead_form" in error(bad)[1]
    frame = host_client(shop.host).get(f"/widget/v1/frame/{shop.plain.public_key}/?o={SHOP}",
                                       HTTP_SEC_FETCH_DEST="iframe")
    assert frame.status_code == 200
    assert "Do you ship abroad?" in frame.content.decode() and '"when": "handoff"' in frame.content.decode()
    in_workspace(shop.workspace, services.embed_update, embed=shop.plain, starter_questions=[],
                 lead_form={"when": "off"})


def test_dashboard_form_edits_chips_and_lead_form(shop, host_client):
    from embeds.forms import EmbedForm

    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    form = EmbedForm.for_embed(in_workspace(shop.workspace, lambda: type(shop.plain).objects.get(pk=shop.plain.pk)))
    data = {name: ("on" if value is True else value) for name, value in form.initial.items()
            if value is not False and value is not None}
    data.update(starter_questions="How long is delivery?\n\nCan I return it?", lead_when="before_chat",
                lead_name="optional", lead_email="required", lead_phone="off", lead_custom="required",
                lead_custom_label="Order number")
    response = owner.post(f"/widgets/{shop.plain.pk}/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    embed = in_workspace(shop.workspace, lambda: type(shop.plain).objects.get(pk=shop.plain.pk))
    assert embed.starter_questions == ["How long is delivery?", "Can I return it?"]
    assert embed.lead_form == {"when": "before_chat", "custom_label": "Order number",
                               "fields": {"name": "optional", "email": "required", "phone": "off",
                                          "custom": "required"}}
    data.update(lead_custom_label="")
    refused = owner.post(f"/widgets/{shop.plain.pk}/", data)
    assert refused.status_code == 400 and "Name the custom field" in refused.content.decode()
    in_workspace(shop.workspace, services.embed_update, embed=shop.plain, starter_questions=[],
                 lead_form={"when": "off"})


# --- suggestions --------------------------------------------------------------------------------------------------
def test_suggestions_are_the_asked_questions_the_knowledge_base_answers(shop, host_client, django_db_blocker):
    from analytics.services import questions_cluster
    from chat import services as chat_services

    ws = workspace_on_plan("Suggest Co", plan="pro")
    embed = embed_make(ws.workspace, [SHOP], name="Suggest", starter_questions=["Where is my parcel?"])
    marker = secrets.token_hex(3)
    asked = [  # (question, answered) — each question twice unless noted
        (f"How do I return an item {marker}?", True), (f"How do I return an item {marker}?", True),
        (f"Can I pay with gold bars {marker}?", False), (f"Can I pay with gold bars {marker}?", False),
        (f"Do you sell gift cards {marker}?", True),  # once: not a pattern yet
        ("Where is my parcel?", True), ("Where is my parcel?", True),  # already a chip
    ]
    with tenant_context(ws.workspace):
        for text, answered in asked:
            conversation = chat_services.conversation_start(channel="widget", embed_id=embed.pk, origin=SHOP,
                                                            visitor_id=f"v-{secrets.token_hex(4)}")
            question, _ = chat_services.customer_message_post(conversation=conversation, text=text)
            chat_services.assistant_answer_persist(
                conversation=conversation, reply_to=question,
                result={"answer": "Yes." if answered else "I don't know.", "answered": answered,
                        "confidence": 0.9 if answered else None, "citations": []},
                latency_first_token_ms=100, latency_total_ms=300)
        questions_cluster()
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    response = owner.get(f"/api/v1/embeds/{embed.pk}/starter-suggestions/")
    assert response.status_code == 200, response.content
    suggestions = response.json()
    assert [s["question"].lower() for s in suggestions] == [f"how do i return an item {marker}?"]
    assert suggestions[0]["count"] == 2 and suggestions[0]["answered_rate"] == 1.0
    # Staff approve it from the dashboard: it becomes a chip, and is no longer suggested.
    page = owner.get(f"/widgets/{embed.pk}/")
    assert suggestions[0]["question"] in page.content.decode()
    added = owner.post(f"/widgets/{embed.pk}/actions/", {"action": "add_starter",
                                                         "question": suggestions[0]["question"]})
    assert added.status_code == 302
    with tenant_context(ws.workspace):
        assert type(embed).objects.get(pk=embed.pk).starter_questions == ["Where is my parcel?",
                                                                           suggestions[0]["question"]]
    assert owner.get(f"/api/v1/embeds/{embed.pk}/starter-suggestions/").json() == []


# --- the visitor's doors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lead, fields", [
    (None, {"name", "email"}),  # the form comes first: no chat without its required fields
    ({}, {"name", "email"}),
    ({"name": "Ada", "email": "not-an-email"}, {"email"}),
    ({"name": "Ada", "email": "ada@example.test", "phone": "call me maybe"}, {"phone"}),
    ({"name": "Ada", "email": "ada@example.test", "phone": "12"}, {"phone"}),
    ({"name": "Ada", "email": "ada@example.test", "fax": "123"}, {"fax"}),
    ({"name": ["Ada"], "email": "ada@example.test"}, {"name"}),
    ({"name": "A" * 201, "email": "ada@example.test"}, {"name"}),
])
def test_a_bad_lead_is_refused_with_every_field_and_nothing_is_created(shop, host_client, lead, fields):
    visitor = Visitor(host_client, shop.host, shop.embed.public_key)
    before = in_workspace(shop.workspace, Conversation.objects.count)
    response = visitor.call("POST", "/widget/v1/conversations/", {} if lead is None else {"lead": lead})
    assert response.status_code == 400, response.content
    code, problems = error(response)
    assert code == "lead_invalid" and set(problems) == fields
    assert in_workspace(shop.workspace, Conversation.objects.count) == before


def test_a_lead_is_stored_on_the_conversation_and_signalled(shop, host_client):
    from chat.signals import lead_captured

    received: list[dict[str, Any]] = []

    def listener(sender: Any, **kwargs: Any) -> None:
        received.append({"schema": connection.schema_name, **kwargs})

    lead_captured.connect(listener, dispatch_uid="test-lead-listener")
    try:
        visitor = Visitor(host_client, shop.host, shop.embed.public_key)
        response = visitor.call("POST", "/widget/v1/conversations/", {"lead": {
            "name": "  Ada   Lovelace ", "email": "ada@example.test", "phone": "+44 (20) 7946-0958",
            "custom": "Analytical Engines Ltd"}})
        assert response.status_code == 201, response.content
        conversation_id = response.json()["conversation"]["id"]
    finally:
        lead_captured.disconnect(dispatch_uid="test-lead-listener")
    with tenant_context(shop.workspace):
        conversation = Conversation.objects.get(public_id=conversation_id)
        lead = Lead.objects.get(conversation=conversation)
    assert (lead.name, lead.email, lead.phone, lead.custom_label, lead.custom_value, lead.stage) == (
        "Ada Lovelace", "ada@example.test", "+44 (20) 7946-0958", "Company", "Analytical Engines Ltd", "before_chat")
    assert lead.visitor_id == conversation.visitor_id and lead.embed_id == shop.embed.pk
    assert conversation.visitor_email == "ada@example.test" and conversation.visitor_name == "Ada Lovelace"
    assert len(received) == 1 and received[0]["created"] is True and received[0]["lead"].pk == lead.pk
    assert received[0]["schema"] == shop.workspace.schema_name
    # The visitor reads back only what they entered, and may correct it.
    mine = visitor.call("GET", f"/widget/v1/conversations/{conversation_id}/lead/")
    assert mine.status_code == 200 and mine.json() == {"lead": {
        "name": "Ada Lovelace", "email": "ada@example.test", "phone": "+44 (20) 7946-0958",
        "custom": "Analytical Engines Ltd"}}
    fixed = visitor.call("PUT", f"/widget/v1/conversations/{conversation_id}/lead/",
                         {"lead": {"name": "Ada King", "email": "ada@king.test"}})
    assert fixed.status_code == 200 and fixed.json()["lead"]["email"] == "ada@king.test"
    with tenant_context(shop.workspace):
        assert Lead.objects.filter(conversation__public_id=conversation_id).count() == 1
    # Another visitor of the same widget can neither read nor write it.
    stranger = Visitor(host_client, shop.host, shop.embed.public_key)
    for method, body in (("GET", None), ("PUT", {"lead": {"name": "Mallory", "email": "m@evil.example"}})):
        response = stranger.call(method, f"/widget/v1/conversations/{conversation_id}/lead/", body)
        assert response.status_code == 404 and error(response)[0] == "not_found"
    with tenant_context(shop.workspace):
        assert Lead.objects.get(conversation__public_id=conversation_id).name == "Ada King"


def test_handoff_form_and_widgets_without_a_form(shop, host_client):
    visitor = Visitor(host_client, shop.host, shop.handoff.public_key)
    response = visitor.call("POST", "/widget/v1/conversations/", {})  # the form waits for the handoff
    assert response.status_code == 201
    conversation_id = response.json()["conversation"]["id"]
    assert visitor.call("GET", f"/widget/v1/conversations/{conversation_id}/lead/").json() == {"lead": None}
    missing = visitor.call("PUT", f"/widget/v1/conversations/{conversation_id}/lead/", {"lead": {}})
    assert missing.status_code == 400 and error(missing) == ("lead_invalid", {"email": ["Required."]})
    not_asked = visitor.call("PUT", f"/widget/v1/conversations/{conversation_id}/lead/",
                             {"lead": {"email": "bo@example.test", "name": "Bo"}})
    assert not_asked.status_code == 400 and set(error(not_asked)[1]) == {"name"}
    saved = visitor.call("PUT", f"/widget/v1/conversations/{conversation_id}/lead/",
                         {"lead": {"email": "bo@example.test"}})
    assert saved.status_code == 200
    with tenant_context(shop.workspace):
        assert Lead.objects.get(conversation__public_id=conversation_id).stage == "handoff"
    plain = Visitor(host_client, shop.host, shop.plain.public_key)
    refused = plain.call("POST", "/widget/v1/conversations/", {"lead": {"email": "x@example.test"}})
    assert refused.status_code == 400 and error(refused)[0] == "lead_form_off"
    malformed = visitor.call("PUT", f"/widget/v1/conversations/{conversation_id}/lead/", {"lead": "bo@example.test"})
    assert malformed.status_code == 400 and error(malformed)[0] == "lead_invalid"


def test_lead_values_are_checked_against_the_widgets_form_only():
    form = {"when": "before_chat", "fields": {"email": "optional"}}
    assert lead_values_clean(form=form, data={"email": ""}) == {}
    assert lead_values_clean(form=form, data={"email": "a@b.example"}) == {"email": "a@b.example"}
    with pytest.raises(ValidationFailed) as refused:
        lead_values_clean(form=form, data={"email": "a@b.example\x00"})
    assert refused.value.code == "lead_invalid"


# --- staff: inbox detail, list, CSV -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def captured(shop, django_db_blocker):
    """Two leads through the widget's service, one of them formula-like."""
    from embeds.security import VisitorClaims

    with django_db_blocker.unblock(), tenant_context(shop.workspace):
        made = []
        for name, email in (("Grace Hopper", "grace@example.test"), ("=HYPERLINK(\"http://evil\")", "eve@example.test")):
            claims = VisitorClaims(schema=shop.workspace.schema_name, embed_id=shop.embed.pk,
                                   public_key=shop.embed.public_key, visitor_id=f"v-{secrets.token_hex(4)}",
                                   origin=SHOP, user_id="")
            made.append(services.visitor_conversation_start(claims=claims, lead={"name": name, "email": email}))
    return made


def test_the_inbox_detail_shows_the_lead(shop, captured, host_client):
    agent = host_client(shop.host)
    agent.force_login(member(shop.workspace, "agent"))
    detail = agent.get(f"/api/v1/conversations/{captured[0].public_id}/")
    assert detail.status_code == 200
    assert detail.json()["lead"] | {"created_at": None} == {
        "name": "Grace Hopper", "email": "grace@example.test", "phone": "", "custom_label": "", "custom_value": "",
        "stage": "before_chat", "created_at": None}


def test_leads_list_and_csv_for_api_and_dashboard(shop, captured, host_client):
    _key, raw = api_key_create(workspace=shop.workspace, name="crm", scopes=["read"])
    crm = host_client(shop.host, HTTP_AUTHORIZATION=f"Api-Key {raw}")
    listed = crm.get("/api/v1/leads/", {"embed": shop.embed.pk})
    assert listed.status_code == 200
    emails = {row["email"] for row in listed.json()["results"]}
    assert {"grace@example.test", "eve@example.test"} <= emails
    assert crm.get("/api/v1/leads/", {"embed": shop.plain.pk}).json()["results"] == []
    assert crm.get("/api/v1/leads/", {"embed": "x"}).status_code == 400
    exported = crm.get("/api/v1/leads/export/")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    by_email = {row["email"]: row for row in rows}
    assert by_email["grace@example.test"]["name"] == "Grace Hopper"
    assert by_email["grace@example.test"]["conversation_id"] == str(captured[0].public_id)
    assert by_email["eve@example.test"]["name"].startswith("'=")  # a formula is shown as text in a spreadsheet
    viewer = host_client(shop.host)
    viewer.force_login(member(shop.workspace, "viewer"))
    assert 'href="/conversations/leads.csv"' in viewer.get("/conversations/").content.decode()
    page = viewer.get("/conversations/leads.csv")
    assert page.status_code == 200 and "grace@example.test" in b"".join(page.streaming_content).decode()


def test_another_workspace_sees_none_of_the_leads(shop, captured, host_client, other_tenant):
    stranger = host_client(shop.host)
    stranger.force_login(other_tenant.owner)
    for path in ("/api/v1/leads/", "/api/v1/leads/export/"):
        response = stranger.get(path)
        assert response.status_code == 403 and response.json()["error"]["code"] == "not_a_member"
    own = host_client(other_tenant.host)
    own.force_login(other_tenant.owner)
    assert own.get("/api/v1/leads/").json()["results"] == []
    assert "grace@example.test" not in b"".join(own.get("/api/v1/leads/export/").streaming_content).decode()


def test_a_lead_goes_with_its_conversation(shop, host_client):
    from chat.retention import conversations_purge_expired

    visitor = Visitor(host_client, shop.host, shop.embed.public_key)
    response = visitor.call("POST", "/widget/v1/conversations/", {"lead": {"name": "Temp", "email": "t@example.test"}})
    conversation_id = response.json()["conversation"]["id"]
    with tenant_context(shop.workspace):
        Conversation.objects.filter(public_id=conversation_id).update(created_at="2000-01-01T00:00:00Z")
        assert Lead.objects.filter(conversation__public_id=conversation_id).exists()
        assert conversations_purge_expired(days=3650) >= 1
        assert not Lead.objects.filter(email="t@example.test").exists()
