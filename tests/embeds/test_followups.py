"""Follow-up suggestions after an answer (issue #18 item 1, docs/widget.md "Follow-up suggestions"): drawn from the
widget's starter questions, only those the knowledge base answers (checked by retrieval when saved, re-checked when
the documents change), closest to what was just asked, never a question already asked; off unless switched on; the
widget's door gives a visitor only their own conversation's follow-ups from their own widget's pool."""
from __future__ import annotations

from typing import Any

import pytest

from chat import services as chat_services
from chat.models import Channel, Conversation
from embeds import services
from embeds.followups import conversation_followups_suggest, question_similarity, question_terms
from embeds.models import Embed
from tests.chat.test_protocol import knowledge_seed
from tests.embeds.conftest import RETURNS, SHIPPING, embed_make, in_workspace, workspace_on_plan
from tests.embeds.test_starters_leads import SHOP, Visitor

RETURN_QUESTION = "How many days do I have to return a product?"
DELIVERY_QUESTION = "How long does standard delivery take?"
EXPRESS_QUESTION = "When does express delivery arrive?"
# Shares "delivery" with the question asked (so it would rank high on words alone), but nothing in the knowledge
# base answers it.
UNANSWERABLE = "Can a drone delivery land on my balcony?"
DRONES = """# Drone delivery

A drone delivery can land on your balcony if it is at least two metres wide and free of plants; the drone leaves
the parcel on the balcony floor and flies back to the depot.
"""
POOL = [UNANSWERABLE, RETURN_QUESTION, DELIVERY_QUESTION, EXPRESS_QUESTION]


@pytest.fixture(scope="module")
def shop(django_db_blocker):
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Follow-ups Co", plan="pro")
        knowledge_seed(ws.workspace, ("Returns and refunds", RETURNS), ("Shipping times", SHIPPING))
        ws.embed = embed_make(ws.workspace, [SHOP], name="Follow-ups", starter_questions=POOL,
                              behaviour={"show_followups": True})
        ws.quiet = embed_make(ws.workspace, [SHOP], name="No follow-ups", starter_questions=POOL)
        ws.other = embed_make(ws.workspace, [SHOP], name="Other pool", behaviour={"show_followups": True},
                              starter_questions=["Where do I print the return label?"])
    return ws


def _coverage(ws: Any, embed: Embed) -> dict[str, bool]:
    stored = in_workspace(ws.workspace, lambda: Embed.objects.get(pk=embed.pk).question_coverage)
    return {key: entry["answerable"] for key, entry in stored.items()}


def _asked(ws: Any, embed: Embed, *questions: str) -> Any:
    """A widget conversation of `embed` in which the customer asked `questions`, answered by the real assistant."""
    def run() -> Any:
        conversation = chat_services.conversation_start(channel=Channel.WIDGET, embed_id=embed.pk,
                                                        visitor_id="v-followups")
        for question in questions:
            chat_services.conversation_message_answer(conversation=conversation, text=question)
        return conversation
    return in_workspace(ws.workspace, run)


def _suggest(ws: Any, embed: Embed, conversation: Any) -> list[str]:
    return in_workspace(ws.workspace, lambda: conversation_followups_suggest(
        embed=Embed.objects.get(pk=embed.pk), conversation=conversation))


def test_similarity_is_shared_content_words():
    assert question_terms("How do I return my products?") == {"return", "product"}
    assert question_terms("Returned product") == question_terms("returning products")
    assert question_similarity(DELIVERY_QUESTION, EXPRESS_QUESTION) > question_similarity(
        DELIVERY_QUESTION, RETURN_QUESTION) == 0.0


def test_each_pool_question_is_checked_against_the_knowledge_base_when_saved(shop):
    assert _coverage(shop, shop.embed) == {UNANSWERABLE.casefold(): False, RETURN_QUESTION.casefold(): True,
                                           DELIVERY_QUESTION.casefold(): True, EXPRESS_QUESTION.casefold(): True}
    # Removing a question forgets its check; a new one is checked at once.
    in_workspace(shop.workspace, services.embed_update, embed=shop.other,
                 starter_questions=["How long do refunds take?"])
    assert _coverage(shop, shop.other) == {"how long do refunds take?": True}


def test_follow_ups_are_answerable_closest_first_and_never_already_asked(shop):
    conversation = _asked(shop, shop.embed, DELIVERY_QUESTION)
    # UNANSWERABLE shares "delivery" with the question and stands first in the pool, yet is never offered;
    # the question just asked isn't either. Express delivery is closest, then the rest in pool order.
    assert _suggest(shop, shop.embed, conversation) == [EXPRESS_QUESTION, RETURN_QUESTION]
    chat_services_answered = _asked(shop, shop.embed, DELIVERY_QUESTION, RETURN_QUESTION)
    assert _suggest(shop, shop.embed, chat_services_answered) == [EXPRESS_QUESTION]


def test_none_after_a_decline_or_when_the_widget_does_not_show_them(shop):
    declined = _asked(shop, shop.embed, "What is the capital of France?")
    assert _suggest(shop, shop.embed, declined) == []  # the starter chips come back instead
    assert _suggest(shop, shop.quiet, _asked(shop, shop.quiet, DELIVERY_QUESTION)) == []


def test_a_question_becomes_a_follow_up_once_the_documents_answer_it(django_db_blocker):
    with django_db_blocker.unblock():  # a workspace of its own: the other tests rely on drones being unanswerable
        ws = workspace_on_plan("Drones Co", plan="pro")
        knowledge_seed(ws.workspace, ("Shipping times", SHIPPING), ("Returns and refunds", RETURNS))
        embed = embed_make(ws.workspace, [SHOP], name="Drones", starter_questions=[UNANSWERABLE, RETURN_QUESTION],
                           behaviour={"show_followups": True})
        assert _coverage(ws, embed)[UNANSWERABLE.casefold()] is False
        conversation = _asked(ws, embed, DELIVERY_QUESTION)
        assert _suggest(ws, embed, conversation) == [RETURN_QUESTION]
        knowledge_seed(ws.workspace, ("Drone delivery", DRONES))  # the documents changed: checked again
        assert _suggest(ws, embed, conversation) == [UNANSWERABLE, RETURN_QUESTION]
        assert _coverage(ws, embed)[UNANSWERABLE.casefold()] is True


def test_the_widget_door_gives_the_visitor_their_own_widgets_follow_ups(shop, host_client):
    visitor = Visitor(host_client, shop.host, shop.embed.public_key)
    created = visitor.call("POST", "/widget/v1/conversations/", {})
    conversation_id = created.json()["conversation"]["id"]
    in_workspace(shop.workspace, lambda: chat_services.conversation_message_answer(
        conversation=Conversation.objects.get(public_id=conversation_id), text=RETURN_QUESTION))
    response = visitor.call("GET", f"/widget/v1/conversations/{conversation_id}/followups/")
    assert response.status_code == 200, response.content
    assert response.json() == {"followups": [DELIVERY_QUESTION, EXPRESS_QUESTION]}
    assert response["Cache-Control"] == "no-store"

    # Another visitor, even of the same widget, gets 404 for it; a visitor of another widget as well.
    stranger = Visitor(host_client, shop.host, shop.embed.public_key)
    refused = stranger.call("GET", f"/widget/v1/conversations/{conversation_id}/followups/")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    elsewhere = Visitor(host_client, shop.host, shop.other.public_key)
    assert elsewhere.call("GET", f"/widget/v1/conversations/{conversation_id}/followups/").status_code == 404
    # Without a token: refused with the door's code.
    bare = host_client(shop.host).get(f"/widget/v1/conversations/{conversation_id}/followups/",
                                      HTTP_SEC_FETCH_SITE="same-origin")
    assert bare.status_code in (401, 403) and bare.json()["error"]["code"]


def test_the_setting_is_off_by_default_and_in_the_api(shop, host_client):
    from accounts.services import api_key_create

    embed = embed_make(shop.workspace, [SHOP], name="Default")
    assert embed.show_followups is False
    _key, secret = api_key_create(workspace=shop.workspace, name="fu", scopes=["read", "write"])
    client = host_client(shop.host)
    response = client.patch(f"/api/v1/embeds/{embed.pk}/", {"behaviour": {"show_followups": True}},
                            content_type="application/json", HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert response.status_code == 200, response.content
    assert response.json()["behaviour"]["show_followups"] is True
    refused = client.patch(f"/api/v1/embeds/{embed.pk}/", {"behaviour": {"show_followups": "maybe"}},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert refused.status_code == 400


def test_the_dashboard_form_switches_follow_ups_on(shop, host_client):
    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    page = owner.get(f"/widgets/{shop.quiet.pk}/").content.decode()
    assert 'name="show_followups"' in page and "Suggest up to 3 follow-up questions" in page
    form = {
        "name": "No follow-ups", "allowed_origins": SHOP, "title": "", "greeting": "", "placeholder": "",
        "color_primary": "#0f766e", "color_background": "#ffffff", "color_text": "#111111",
        "position": "bottom-right", "launcher_icon": "chat", "avatar_url": "", "language": "auto",
        "show_followups": "on", "starter_questions": "\n".join(POOL),
    }
    saved = owner.post(f"/widgets/{shop.quiet.pk}/", form)
    assert saved.status_code == 302, saved.content[:2000]
    assert in_workspace(shop.workspace, lambda: Embed.objects.get(pk=shop.quiet.pk).show_followups) is True
    in_workspace(shop.workspace, services.embed_update, embed=shop.quiet, behaviour={"show_followups": False})


def test_the_visitor_path_rechecks_stale_questions_at_most_once_a_window(django_db_blocker):
    """While documents keep changing (an upload indexing, a crawl), an anonymous request may not buy a retrieval
    per pool question each time: one re-check per widget per VISITOR_REFRESH_MIN_SECONDS, the stored verdicts
    served in between."""
    with django_db_blocker.unblock():
        ws = workspace_on_plan("Window Co", plan="pro")
        knowledge_seed(ws.workspace, ("Shipping times", SHIPPING), ("Returns and refunds", RETURNS))
        embed = embed_make(ws.workspace, [SHOP], name="Window", starter_questions=[UNANSWERABLE, RETURN_QUESTION],
                           behaviour={"show_followups": True})
        conversation = _asked(ws, embed, DELIVERY_QUESTION)
        knowledge_seed(ws.workspace, ("Drone delivery", DRONES))  # stale: the first request re-checks
        assert _suggest(ws, embed, conversation) == [UNANSWERABLE, RETURN_QUESTION]
        checked_at = _coverage_raw(ws, embed)[UNANSWERABLE.casefold()]["checked_at"]
        knowledge_seed(ws.workspace, ("Drone prices", "Drone delivery costs 12 euros per parcel."))  # stale again
        assert _suggest(ws, embed, conversation) == [UNANSWERABLE, RETURN_QUESTION]  # the stored verdicts
        assert _coverage_raw(ws, embed)[UNANSWERABLE.casefold()]["checked_at"] == checked_at, "re-checked twice"


def _coverage_raw(ws: Any, embed: Embed) -> dict[str, Any]:
    return in_workspace(ws.workspace, lambda: Embed.objects.get(pk=embed.pk).question_coverage)
