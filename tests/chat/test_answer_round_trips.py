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


def test_the_curated_version_read_with_the_conversation_is_used_once_and_only_in_its_schema():
    from django.db.models import Count, Max

    from documents import curated
    from documents.models import CuratedAnswer

    created = workspace_with_owner(name="Curated Co")
    connection.set_tenant(created.workspace)
    try:
        conversation = Conversation.objects.create(channel=Channel.API)
        read, _ = selectors.conversation_with_client_message(conversation_id=conversation.pk, client_message_id="",
                                                             also=curated.curated_version_columns())
        actual = CuratedAnswer.objects.aggregate(n=Count("id"), at=Max("updated_at"))
        assert (read.curated_version_n, read.curated_version_at) == (actual["n"], actual["at"])

        curated.curated_version_known(count=7, at=None)
        assert curated._version(connection.schema_name) == (7, None)  # handed over: used by the next check
        assert curated._version(connection.schema_name) == (actual["n"], actual["at"])  # then read again
        curated.curated_version_known(count=7, at=None)
        assert curated._version("another_schema") != (7, None)  # never for another workspace
        curated.curated_version_known(count=7, at=None)
        curated.curated_version_forget()
        assert curated._version(connection.schema_name) == (actual["n"], actual["at"])
    finally:
        connection.set_schema_to_public()


def test_cached_assistant_settings_of_another_workspace_with_the_same_schema_are_not_served():
    import time

    from chat.models import AssistantSettings

    created = workspace_with_owner(name="Settings Co")
    connection.set_tenant(created.workspace)
    try:
        AssistantSettings.objects.create(name="Ours")
        version = selectors._assistant_settings_version()
        assert version is not None
        theirs = AssistantSettings(name="A deleted workspace's")
        selectors._assistant_settings[connection.schema_name] = (version, theirs, time.monotonic(),
                                                                  created.workspace.pk + 10_000)
        assert selectors.assistant_settings_current().name == "Ours"
        assert selectors.assistant_settings_current().name == "Ours"  # and now cached as ours
        assert selectors._assistant_settings[connection.schema_name][3] == created.workspace.pk
    finally:
        connection.set_schema_to_public()
