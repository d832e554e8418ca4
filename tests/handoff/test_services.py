"""Handoff services (chat/handoff.py) in this process, against the real PostgreSQL and Redis: the states, the bot
kept quiet while a person handles the conversation, notes the customer never sees, hand back, close with a
transcript, assignment, the keyword and unanswered rules, office hours and presence."""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from chat import handoff, inbox, selectors, services, signals
from chat.models import AssistantSettings, Conversation, ConversationStatus, Message, MessageRole, OfficeHours
from config.errors import Conflict, ValidationFailed
from tests.chat.test_protocol import MANUAL, QUESTION, knowledge_seed
from tests.factories import WorkspaceWithOwner, member, workspace_with_owner
from tests.handoff.helpers import in_workspace, log_events

UNANSWERABLE = "What is the capital of Mongolia and who won the 1954 football world cup?"


@pytest.fixture(scope="module")
def shop(django_db_blocker) -> WorkspaceWithOwner:
    with django_db_blocker.unblock():
        created = workspace_with_owner(name="Handoff Shop")
        knowledge_seed(created.workspace, ("Acme Router X200 manual", MANUAL))
        return created


@pytest.fixture(scope="module")
def agents(shop, django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        alice, bob, viewer = (member(shop.workspace, role) for role in ("agent", "agent", "viewer"))
        alice.full_name, bob.full_name = "Alice Agent", "Bob Backup"
        alice.save(update_fields=["full_name"])
        bob.save(update_fields=["full_name"])
    return {"alice": alice, "bob": bob, "viewer": viewer}


@pytest.fixture
def run(shop):
    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return in_workspace(shop.workspace, fn, *args, **kwargs)
    return call


def widget_conversation(run) -> Conversation:
    return run(services.conversation_start, channel="widget", visitor_id="v-handoff")


def events_of(shop, conversation) -> list[dict[str, Any]]:
    return log_events(shop.workspace.schema_name, conversation)


def fresh(run, conversation) -> Conversation:
    return run(lambda: Conversation.objects.get(pk=conversation.pk))


class Heard:
    """A real receiver on one of chat's signals."""

    def __init__(self, signal: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.signal = signal
        signal.connect(self.receive, weak=False)

    def receive(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def close(self) -> None:
        self.signal.disconnect(self.receive)


def test_asking_for_a_person_waits_tells_what_happens_next_and_signals(shop, run):
    heard = Heard(signals.handoff_requested)
    try:
        conversation = widget_conversation(run)
        waiting = run(services.conversation_request_human, conversation=conversation, reason="asked")
        assert waiting.status == ConversationStatus.WAITING and waiting.handoff_reason == "asked"
        assert waiting.handoff_at is not None
        again = run(services.conversation_request_human, conversation=conversation)  # idempotent
        assert again.status == ConversationStatus.WAITING
        status = [e for e in events_of(shop, conversation) if e["type"] == "status"]
        assert len(status) == 1 and status[0]["status"] == "waiting" and status[0]["reason"] == "asked"
        # Nobody has the inbox open: the customer is told so and asked for an email address.
        assert status[0]["next"]["available"] is False and status[0]["next"]["ask_email"] is True
        assert [c["reason"] for c in heard.calls if c["conversation"].pk == conversation.pk] == ["asked"]
    finally:
        heard.close()


def test_keyword_request_hands_off_and_the_bot_stays_quiet_until_hand_back(shop, agents, run):
    alice = agents["alice"]
    conversation = widget_conversation(run)
    asked = run(services.conversation_message_answer, conversation=conversation,
                text="Can I talk to a human please?", client_message_id="k1")
    assert asked.answer is None and asked.error is None
    conversation = fresh(run, conversation)
    assert conversation.status == ConversationStatus.WAITING and conversation.handoff_reason == "keyword"

    # Waiting: a customer's question is stored and shown to the agents, but the bot does not answer it.
    waiting = run(services.conversation_message_answer, conversation=conversation, text=QUESTION,
                  client_message_id="k2")
    assert waiting.answer is None
    assert not run(lambda: Message.objects.filter(conversation=conversation, role=MessageRole.ASSISTANT).exists())
    assert fresh(run, conversation).agent_unread == 2

    joined_heard = Heard(signals.agent_joined)
    try:
        run(handoff.conversation_join, conversation=conversation, agent=alice)
    finally:
        joined_heard.close()
    assert [c["agent"].pk for c in joined_heard.calls if c["conversation"].pk == conversation.pk] == [alice.pk]
    conversation = fresh(run, conversation)
    assert conversation.status == ConversationStatus.AGENT and conversation.assigned_agent_id == alice.pk
    assert conversation.agent_unread == 0

    reply, created = run(handoff.agent_message_post, conversation=conversation, agent=alice,
                         text="Hi, Alice here. Let me check.", client_message_id="a1")
    assert created and reply.role == MessageRole.AGENT and reply.seq
    again, created = run(handoff.agent_message_post, conversation=conversation, agent=alice,
                         text="Hi, Alice here. Let me check.", client_message_id="a1")
    assert not created and again.pk == reply.pk
    note = run(handoff.internal_note_add, conversation=conversation, author=alice, text="VIP customer, be nice")

    # While an agent holds it, the bot still doesn't answer.
    held = run(services.conversation_message_answer, conversation=conversation, text=QUESTION, client_message_id="k3")
    assert held.answer is None

    run(handoff.conversation_hand_back, conversation=conversation, agent=alice)
    conversation = fresh(run, conversation)
    assert conversation.status == ConversationStatus.BOT and conversation.assigned_agent_id is None
    answered = run(services.conversation_message_answer, conversation=conversation, text=QUESTION,
                   client_message_id="k4")
    assert answered.answer is not None and answered.answer.role == MessageRole.ASSISTANT
    assert "reset" in answered.answer.content.lower()

    events = events_of(shop, conversation)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [e["type"] for e in events]
    # One ordered stream: the customer's messages, the handoff, the agent, the hand back, the bot's answer.
    assert kinds.index("agent_joined") < kinds.index("agent_left") < kinds.index("agent_completed")
    agent_events = [e for e in events if e["type"] == "message" and e["message"]["role"] == "agent"]
    assert [e["message"]["content"] for e in agent_events] == ["Hi, Alice here. Let me check."]
    assert agent_events[0]["message"]["author_name"] == "Alice Agent"
    joined = next(e for e in events if e["type"] == "agent_joined")
    assert joined["agent"]["name"] == "Alice Agent" and "Alice Agent joined" in joined["message"]["content"]
    # The note is nowhere in the customer's stream, nor in the customer's history.
    assert "VIP" not in str(events)
    from embeds.selectors import visitor_message_list

    history = run(visitor_message_list, conversation=conversation)
    assert note.pk not in [m["id"] for m in history] and "VIP" not in str(history)
    # ... but it is in the staff's transcript.
    staff = run(lambda: list(selectors.message_list(conversation=conversation).values_list("role", flat=True)))
    assert "note" in staff
    # The history, in order: what the customer and the agent said, the system lines, the bot's answer.
    roles = [m["role"] for m in history]
    assert roles == ["customer", "customer", "system", "agent", "customer", "system", "customer", "assistant"]


def test_the_unanswered_rule_hands_off_after_n_misses(shop, run):
    run(lambda: AssistantSettings.objects.update_or_create(id=1, defaults={"handoff_after_unanswered": 2}))
    try:
        conversation = widget_conversation(run)
        first = run(services.conversation_message_answer, conversation=conversation, text=UNANSWERABLE,
                    client_message_id="u1")
        assert first.answer is not None and first.answer.answered is False
        assert fresh(run, conversation).status == ConversationStatus.BOT
        second = run(services.conversation_message_answer, conversation=conversation,
                     text="And what is the boiling point of tungsten on Mars?", client_message_id="u2")
        assert second.answer is not None and second.answer.answered is False
        conversation = fresh(run, conversation)
        assert conversation.status == ConversationStatus.WAITING and conversation.handoff_reason == "unanswered"
        kinds = [e["type"] for e in events_of(shop, conversation)]
        assert kinds[-1] == "status" and kinds.count("agent_completed") == 2  # after the second answer
    finally:
        run(lambda: AssistantSettings.objects.filter(id=1).update(handoff_after_unanswered=0))


@pytest.mark.parametrize("text,expected", [
    ("I want to talk to a human", True), ("Can I speak to an agent?", True), ("real person please", True),
    ("agent", True), ("Ich möchte mit einem Menschen sprechen", True), ("Je veux parler à un conseiller", True),
    ("Quiero hablar con un agente", True), (QUESTION, False), ("My travel agent booked the router", False),
    ("Is there a person responsible for refunds?", False), ("", False),
])
def test_keyword_detection(text, expected):
    assert handoff.text_asks_for_human(text) is expected


def test_second_agent_is_told_who_has_it(shop, agents, run):
    conversation = widget_conversation(run)
    run(services.conversation_request_human, conversation=conversation)
    run(handoff.conversation_join, conversation=conversation, agent=agents["alice"])
    run(handoff.conversation_join, conversation=conversation, agent=agents["alice"])  # joining again: a no-op
    with pytest.raises(Conflict) as taken:
        run(handoff.conversation_join, conversation=conversation, agent=agents["bob"])
    assert taken.value.code == "conversation_taken" and taken.value.status_code == 409
    assert taken.value.details["agent"] == {"id": agents["alice"].pk, "name": "Alice Agent"}
    with pytest.raises(Conflict) as not_holder:
        run(handoff.agent_message_post, conversation=conversation, agent=agents["bob"], text="me too")
    assert not_holder.value.code == "conversation_taken"


def test_assign_to_a_colleague(shop, agents, run):
    conversation = widget_conversation(run)
    run(services.conversation_request_human, conversation=conversation)
    run(handoff.conversation_join, conversation=conversation, agent=agents["alice"])
    run(handoff.conversation_assign, conversation=conversation, agent=agents["bob"], assigned_by=agents["alice"])
    conversation = fresh(run, conversation)
    assert conversation.assigned_agent_id == agents["bob"].pk and conversation.status == ConversationStatus.AGENT
    joined = [e for e in events_of(shop, conversation) if e["type"] == "agent_joined"]
    assert [e["agent"]["name"] for e in joined] == ["Alice Agent", "Bob Backup"]
    run(handoff.agent_message_post, conversation=conversation, agent=agents["bob"], text="Bob here")
    with pytest.raises(ValidationFailed):  # a viewer can't handle conversations
        run(handoff.conversation_assign, conversation=conversation, agent=agents["viewer"], assigned_by=agents["bob"])


def test_close_with_a_transcript_by_email(shop, agents, run, mailoutbox):
    closed_heard = Heard(signals.conversation_closed)
    try:
        conversation = widget_conversation(run)
        run(services.conversation_request_human, conversation=conversation)
        with pytest.raises(ValidationFailed):  # no email address yet
            run(handoff.conversation_close, conversation=conversation, closed_by=agents["alice"], send_transcript=True)
        run(handoff.conversation_contact_set, conversation=conversation, email="customer@example.test")
        run(handoff.conversation_join, conversation=conversation, agent=agents["alice"])
        run(handoff.agent_message_post, conversation=conversation, agent=agents["alice"], text="Your refund is on its way")
        run(handoff.internal_note_add, conversation=conversation, author=agents["alice"], text="secret internal remark")
        run(handoff.conversation_close, conversation=conversation, closed_by=agents["alice"], send_transcript=True)
    finally:
        closed_heard.close()
    conversation = fresh(run, conversation)
    assert conversation.status == ConversationStatus.CLOSED and conversation.closed_at is not None
    assert [c["closed_by"].pk for c in closed_heard.calls if c["conversation"].pk == conversation.pk] == [agents["alice"].pk]
    sent = [m for m in mailoutbox if m.to == ["customer@example.test"]]
    assert len(sent) == 1
    assert "Your refund is on its way" in sent[0].body and "Alice Agent" in sent[0].body
    assert "secret internal remark" not in sent[0].body
    assert [e for e in events_of(shop, conversation) if e["type"] == "status"][-1]["status"] == "closed"
    with pytest.raises(Conflict):
        run(services.conversation_message_answer, conversation=conversation, text="hello?", client_message_id="c1")


def test_office_hours_and_presence(shop, agents, run):
    hours = run(handoff.office_hours_set, enabled=True, timezone_name="Europe/Berlin",
                weekly_hours={"mon": [["09:00", "17:00"]], "sat": []})
    monday_noon_berlin = dt.datetime(2026, 11, 23, 11, 0, tzinfo=dt.UTC)  # 12:00 in Berlin
    monday_night_berlin = dt.datetime(2026, 11, 23, 20, 0, tzinfo=dt.UTC)
    saturday = dt.datetime(2026, 11, 28, 11, 0, tzinfo=dt.UTC)
    assert handoff.office_hours_open(hours, now=monday_noon_berlin)
    assert not handoff.office_hours_open(hours, now=monday_night_berlin)
    assert not handoff.office_hours_open(hours, now=saturday)
    assert handoff.office_hours_open(None) and handoff.office_hours_open(OfficeHours(enabled=False))
    with pytest.raises(ValidationFailed):
        run(handoff.office_hours_set, enabled=True, timezone_name="Mars/Olympus", weekly_hours={})
    with pytest.raises(ValidationFailed):
        run(handoff.office_hours_set, enabled=True, timezone_name="UTC", weekly_hours={"mon": [["17:00", "09:00"]]})

    schema = shop.workspace.schema_name
    asyncio.run(inbox.agent_presence_touch(schema_name=schema, user_id=agents["alice"].pk))
    try:
        assert agents["alice"].pk in inbox.agents_online(schema_name=schema)
        within = run(handoff.handoff_availability, now=monday_noon_berlin)
        assert within == {"office_hours_open": True, "agents_online": 1, "available": True, "ask_email": False}
        outside = run(handoff.handoff_availability, now=monday_night_berlin)
        assert outside["available"] is False and outside["ask_email"] is True
    finally:
        asyncio.run(inbox.agent_presence_clear(schema_name=schema, user_id=agents["alice"].pk))
        run(handoff.office_hours_set, enabled=False, timezone_name="UTC", weekly_hours={})
    assert agents["alice"].pk not in inbox.agents_online(schema_name=schema)
