"""The answer path's per-workspace cache of the assistant settings (chat.selectors.assistant_settings_current, issue
#16) and its deferred writes (chat.deferred): a changed setting reaches the server process's next answer, whichever
way it was written; two workspaces never share their settings; the question's and the answer's analytics events are
still recorded exactly once.

The settings are changed here, in the test process, and answers run in the live server (another process), so the
invalidation that is tested is the one between processes (the version in Redis), besides the in-process one.
"""
from __future__ import annotations

from typing import Any

import pytest

from analytics.models import Event, EventKind
from chat import selectors
from chat.models import AssistantSettings, Conversation, ConversationStatus, Message
from tests.chat.test_protocol import (
    MANUAL,
    ChatSocket,
    conversation_new,
    in_workspace,
    knowledge_seed,
    session_cookie,
    wait_for,
)
from tests.factories import WorkspaceWithOwner, workspace_with_owner

UNANSWERABLE = "What is the boiling point of tungsten on Mars?"


@pytest.fixture(scope="module")
def shops(django_db_blocker) -> tuple[WorkspaceWithOwner, WorkspaceWithOwner]:
    with django_db_blocker.unblock():
        made = []
        for name in ("Cache Shop A", "Cache Shop B"):
            workspace = workspace_with_owner(name=name)
            knowledge_seed(workspace.workspace, ("Acme Router X200 manual", MANUAL))
            made.append(workspace)
        return made[0], made[1]


def settings_save(workspace: WorkspaceWithOwner, **values: Any) -> None:
    in_workspace(workspace.workspace, lambda: AssistantSettings.objects.update_or_create(id=1, defaults=values))


def settings_update(workspace: WorkspaceWithOwner, **values: Any) -> None:
    """A queryset update: no post_save signal, the model's queryset moves the version."""
    in_workspace(workspace.workspace, lambda: AssistantSettings.objects.filter(id=1).update(**values))


def unanswered_once(server: Any, workspace: WorkspaceWithOwner) -> str:
    """Ask something the knowledge base can't answer in a new conversation; its status once the answer's job is
    done (the answer's seq is the last thing it records, after the unanswered rule ran)."""
    conversation = conversation_new(workspace.workspace)
    with ChatSocket(server, workspace.host, conversation.public_id, session_cookie(workspace.owner)) as socket:
        frames = socket.answer(UNANSWERABLE)
    completed = frames[-1]
    assert completed["type"] == "agent_completed" and completed["message"]["answered"] is False, completed

    def events(kind: str) -> int:
        return in_workspace(workspace.workspace, lambda: Event.objects.filter(
            kind=kind, conversation_id=conversation.public_id).count())

    answer_id = completed["message"]["id"]
    assert wait_for(lambda: in_workspace(workspace.workspace, lambda: Message.objects.filter(
        pk=answer_id, seq__isnull=False).exists())), "the answer's job did not finish"
    assert events(EventKind.QUESTION_ASKED) == 1 and events(EventKind.ANSWER_COMPLETED) == 1  # exactly once
    return in_workspace(workspace.workspace, lambda: Conversation.objects.get(pk=conversation.pk).status)


def test_a_changed_setting_reaches_the_next_answer_however_it_was_written(live_server, shops):
    shop, _other = shops
    settings_save(shop, handoff_after_unanswered=0)
    assert unanswered_once(live_server, shop) == ConversationStatus.BOT  # the server has read (and kept) them now
    settings_save(shop, handoff_after_unanswered=1)  # save(): post_save
    assert unanswered_once(live_server, shop) == ConversationStatus.WAITING
    settings_update(shop, handoff_after_unanswered=0)  # queryset update()
    assert unanswered_once(live_server, shop) == ConversationStatus.BOT
    in_workspace(shop.workspace, lambda: AssistantSettings.objects.filter(id=1).delete())  # back to the defaults
    assert unanswered_once(live_server, shop) == ConversationStatus.BOT


def test_two_workspaces_never_share_their_settings(live_server, shops):
    strict, lenient = shops
    settings_save(strict, handoff_after_unanswered=1)
    settings_save(lenient, handoff_after_unanswered=0)
    try:
        for _round in range(2):  # both cached by the server after the first round
            assert unanswered_once(live_server, strict) == ConversationStatus.WAITING
            assert unanswered_once(live_server, lenient) == ConversationStatus.BOT
    finally:
        settings_update(strict, handoff_after_unanswered=0)


def test_in_process_reads_are_per_workspace_copies_and_follow_writes(shops):
    first, second = shops
    settings_save(first, name="First Bot")
    settings_save(second, name="Second Bot")
    assert in_workspace(first.workspace, selectors.assistant_settings_current).name == "First Bot"
    assert in_workspace(second.workspace, selectors.assistant_settings_current).name == "Second Bot"

    def mutate_a_copy() -> None:
        selectors.assistant_settings_current().name = "Changed in memory only"

    in_workspace(first.workspace, mutate_a_copy)
    assert in_workspace(first.workspace, selectors.assistant_settings_current).name == "First Bot"
    settings_update(first, name="Renamed")
    assert in_workspace(first.workspace, selectors.assistant_settings_current).name == "Renamed"
    assert in_workspace(second.workspace, selectors.assistant_settings_current).name == "Second Bot"
    in_workspace(second.workspace, lambda: AssistantSettings.objects.all().delete())
    current = in_workspace(second.workspace, selectors.assistant_settings_current)
    assert current.pk is None and current.name == AssistantSettings().name  # the defaults
