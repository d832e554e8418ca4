"""Reads an answer saves (issue #16): the turns read with the conversation are the ones read on their own, and the
inbox summaries of an answer, made from the rows its writes return, are the ones a fresh read gives."""
from __future__ import annotations

from django.db import connection

from chat import inbox, selectors, services
from chat.models import Channel, Conversation, Message, MessageRole
from tests.factories import workspace_with_owner


def test_the_history_read_with_the_conversation_is_conversation_history():
    created = workspace_with_owner(name="History Co")
    connection.set_tenant(created.workspace)
    try:
        conversation = Conversation.objects.create(channel=Channel.API)
        roles = [MessageRole.CUSTOMER, MessageRole.ASSISTANT, MessageRole.NOTE, MessageRole.CUSTOMER,
                 MessageRole.AGENT] * 3
        for n, role in enumerate(roles):
            Message.objects.create(conversation=conversation, role=role, content=f"turn {n} 'quoted' \"and\" \\ é")
        read, existing = selectors.conversation_with_client_message(conversation_id=conversation.pk,
                                                                    client_message_id="new-one", with_history=True)
        assert existing is None
        question, _created = services.customer_message_post(conversation=read, text="and now?",
                                                            client_message_id="new-one", looked_up=True)
        expected = selectors.conversation_history(conversation=conversation, before_message_id=question.pk)
        assert len(expected) == selectors.HISTORY_TURNS
        assert read.recent_history == expected

        empty = Conversation.objects.create(channel=Channel.API)
        fresh, _ = selectors.conversation_with_client_message(conversation_id=empty.pk, client_message_id="",
                                                              with_history=True)
        assert fresh.recent_history == []
    finally:
        connection.set_schema_to_public()


def test_the_summary_made_from_a_write_is_the_one_read_afterwards():
    created = workspace_with_owner(name="Summary Co")
    connection.set_tenant(created.workspace)
    try:
        conversation = Conversation.objects.create(channel=Channel.API, visitor_name="Ann", visitor_email="a@b.test")
        stale = Conversation.objects.get(pk=conversation.pk)
        Conversation.objects.filter(pk=conversation.pk).update(handoff_reason="asked", agent_unread=4)
        message, _ = services.customer_message_post(conversation=stale, text="Where is my parcel?",
                                                    client_message_id="s1", count_unread=True)
        written = inbox._summary(stale, {"role": message.role, "content": message.content})
        assert written == inbox.conversation_summary(inbox.conversation_with_last_message(conversation.pk))
        assert written["unread"] == 5 and written["handoff_reason"] == "asked"
    finally:
        connection.set_schema_to_public()
