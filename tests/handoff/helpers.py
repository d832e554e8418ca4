"""Helpers of the handoff tests: workspaces, reading a conversation's event log as the sockets would get it."""
from __future__ import annotations

import json
from typing import Any

from django.db import connection

from chat.events import ConversationLog, sync_client
from chat.models import Conversation


def in_workspace(workspace: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    connection.set_tenant(workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        connection.set_schema_to_public()


def log_events(schema_name: str, conversation: Conversation) -> list[dict[str, Any]]:
    """Every event in the conversation's replay log (what any customer socket receives), in seq order."""
    log = ConversationLog.of(schema_name, conversation)
    entries = sync_client().xrange(log.stream_key, min="-", max="+")
    return [json.loads(fields[b"e"]) for _id, fields in entries]
