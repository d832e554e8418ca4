"""The dashboard home (issue #22): a set-up checklist ticked from the workspace's real state, then the last seven
days at a glance once the widget is live on a site, per role; computed by analytics.home in one query."""
from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from tests.factories import member, workspace_with_owner

RETURNS = "# Returns\n\nYou can return any product within **30 days** of delivery for a full refund.\n"


def _home(host_client, ws, user) -> BeautifulSoup:
    client = host_client(ws.host)
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    return BeautifulSoup(response.content, "html.parser")


def _steps(soup: BeautifulSoup) -> dict[str, bool]:
    return {li["data-step"]: li["data-done"] == "true" for li in soup.select('[data-testid="checklist"] li[data-step]')}


def _glance(soup: BeautifulSoup) -> dict[str, tuple[str, str | None]]:
    out = {}
    for figure in soup.select('[data-testid="glance"] [data-figure]'):
        link = figure.select_one("dd a")
        out[figure["data-figure"]] = (figure.select_one("dd").get_text(strip=True), link["href"] if link else None)
    return out


def test_the_checklist_ticks_as_the_steps_are_done_and_the_glance_appears_once_live(host_client):
    from accounts.services import invitation_create
    from chat import services as chat_services
    from documents import services as document_services
    from embeds import services as embed_services
    from tests.factories import document_ingest_now

    ws = workspace_with_owner(name="Fresh start")
    soup = _home(host_client, ws, ws.owner)
    assert _steps(soup) == {"knowledge": False, "tried": False, "widget": False, "seen": False, "team": False}
    assert soup.select_one('[data-testid="checklist-progress"]').get_text(strip=True) == "0 of 5 done"
    assert not soup.select('[data-testid="glance"]')
    # Each step links to where it is done.
    actions = {li["data-step"]: (li.select_one("a") or {}).get("href") for li in soup.select("li[data-step]")}
    assert actions["knowledge"] == "/knowledge/" and actions["tried"] == "/conversations/try/"
    assert actions["widget"] == "/widgets/new/" and actions["team"] == "/team/" and actions["seen"] is None

    # Knowledge added but not yet indexed does not count; indexed does.
    with tenant_context(ws.workspace):
        document = document_services.document_create_text(title="Returns", text=RETURNS, markdown=True)
    assert _steps(_home(host_client, ws, ws.owner))["knowledge"] in (False, True)  # the worker may have been quick
    with tenant_context(ws.workspace):
        document.refresh_from_db()
        assert document_ingest_now(document) == "indexed"
    assert _steps(_home(host_client, ws, ws.owner))["knowledge"] is True

    with tenant_context(ws.workspace):
        conversation = chat_services.conversation_start(created_by=ws.owner)
        chat_services.customer_message_post(conversation=conversation, text="How long do I have to return an item?")
    assert _steps(_home(host_client, ws, ws.owner))["tried"] is True

    with tenant_context(ws.workspace):
        embed = embed_services.embed_create(name="Site", allowed_origins=["https://shop.example",
                                                                          f"http://{ws.host}:8000"])
    steps = _steps(_home(host_client, ws, ws.owner))
    assert steps["widget"] is True and steps["seen"] is False

    # Opened on the workspace's own host (staff trying it) is not "seen on a site"; on the shop's origin it is.
    with tenant_context(ws.workspace):
        embed_services.visitor_session_start(embed=embed, host_origin=f"http://{ws.host}:8000")
    soup = _home(host_client, ws, ws.owner)
    assert _steps(soup)["seen"] is False and not soup.select('[data-testid="glance"]')
    with tenant_context(ws.workspace):
        embed_services.visitor_session_start(embed=embed, host_origin="https://shop.example")
    soup = _home(host_client, ws, ws.owner)
    assert _steps(soup)["seen"] is True
    glance = _glance(soup)
    assert glance["questions"][0] == "1" and glance["questions"][1].startswith("/analytics/?start=")
    assert glance["answered"][0] == "—"  # no answer yet: no share to show
    assert glance["waiting"] == ("0", "/conversations/inbox/")
    assert glance["to_review"][0] == "0" and glance["ingestion"] == ("0", "/knowledge/failed/")

    invitation_create(workspace=ws.workspace, email="teammate@example.test", role="agent", invited_by=ws.owner,
                      actor_role="owner")
    soup = _home(host_client, ws, ws.owner)
    assert not soup.select('[data-testid="checklist"]')  # every step done: the checklist makes way
    assert soup.select('[data-testid="glance"]')


def test_the_glance_counts_the_last_seven_days(host_client):
    from analytics.models import EventKind, Outcome
    from analytics.services import event_record
    from chat import services as chat_services
    from django.utils import timezone
    from datetime import timedelta

    ws = workspace_with_owner(name="Glance figures")
    now = timezone.now()
    with tenant_context(ws.workspace):
        event_record(kind=EventKind.WIDGET_OPENED, embed_id=1, origin="https://shop.example")
        for text, outcome, at in [("Where is my parcel?", Outcome.ANSWERED, now),
                                  ("Do you sell bikes?", Outcome.DECLINED, now),
                                  ("Do you sell bikes?", Outcome.DECLINED, now - timedelta(hours=2)),
                                  ("Can I pay in bitcoin?", Outcome.LOW_CONFIDENCE, now),
                                  ("Old question", Outcome.DECLINED, now - timedelta(days=8))]:
            event_record(kind=EventKind.QUESTION_ASKED, question_text=text, occurred_at=at)
            event_record(kind=EventKind.ANSWER_COMPLETED, question_text=text, outcome=outcome, occurred_at=at)
        conversation = chat_services.conversation_start(channel="widget")
        chat_services.conversation_request_human(conversation=conversation)
    glance = _glance(_home(host_client, ws, ws.owner))
    assert glance["questions"][0] == "4"
    assert glance["answered"][0] == "50%"  # answered and low-confidence, of the four answers
    assert glance["to_review"][0] == "2"  # distinct questions, as the Unanswered list groups them
    assert glance["waiting"][0] == "1"


@pytest.mark.parametrize("role", ["admin", "agent", "viewer"])
def test_each_role_sees_what_it_may(role, host_client):
    from analytics.models import EventKind
    from analytics.services import event_record

    ws = workspace_with_owner(name=f"Roles {role}")
    user = member(ws.workspace, role)
    with tenant_context(ws.workspace):
        event_record(kind=EventKind.WIDGET_OPENED, embed_id=1, origin="https://shop.example")
    soup = _home(host_client, ws, user)
    steps = {li["data-step"]: li for li in soup.select("li[data-step]")}
    assert ("team" in steps) is (role != "viewer")  # a viewer does not see the team
    links = {key: (li.select_one("a") or {}).get("href") for key, li in steps.items()}
    assert (links["knowledge"] == "/knowledge/") is (role == "admin")  # only staff add knowledge
    assert (links["tried"] == "/conversations/try/") is (role != "viewer")  # a viewer cannot post
    glance = _glance(soup)
    assert (glance["waiting"][1] == "/conversations/inbox/") is (role != "viewer")  # the inbox is for people who answer
    assert glance["ingestion"][1] == "/knowledge/failed/"


def test_the_home_is_computed_in_one_query_and_sees_only_its_workspace(host_client):
    from analytics.home import workspace_home_state
    from analytics.models import EventKind
    from analytics.services import event_record

    mine, theirs = workspace_with_owner(name="Mine"), workspace_with_owner(name="Theirs")
    with tenant_context(theirs.workspace):
        event_record(kind=EventKind.WIDGET_OPENED, embed_id=1, origin="https://shop.example")
        event_record(kind=EventKind.QUESTION_ASKED, question_text="Theirs only?")
    with tenant_context(mine.workspace):
        with CaptureQueriesContext(connection) as queries:
            state = workspace_home_state(workspace=mine.workspace, role="owner")
    statements = [q["sql"] for q in queries.captured_queries]  # the workspace's SET search_path rides in front of it
    assert len(statements) == 1, [statement[:80] for statement in statements]
    assert not state.live and state.done_count == 0
