"""Revoking what an open socket may do (docs/websocket-protocol.md, "Authority is re-checked").

A socket's authority is decided at connect and then re-checked: before every state-changing frame once it is older
than `CHAT_WS_AUTHORITY_TTL` seconds, on every ping, and at once when this module broadcasts a revocation. The
broadcast goes, keyed by workspace (+ user or embed), to

* the workspace's authority channel on Redis pub/sub (chat.events.authority_channel), which every process's hub
  hands to the conversation sockets of that workspace, and
* the workspace's inbox group on the channel layer (`authority.revoke`), which the inbox sockets handle.

It says only *whose* authority changed; each socket asks the database who it is now and closes (4403) if it lost
something. Lower floors don't import chat: accounts and tenants send signals (accounts.signals.membership_changed,
tenants.signals.workspace_status_changed) after their change is committed; this module listens to them. Embeds (a
floor above) call `socket_authority_revoke_on_commit` directly.
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from chat import events
from chat.inbox import inbox_group
from config.channels_layer import GroupSender

logger = logging.getLogger(__name__)

REVOKE_EVENT_TYPE = "authority.revoke"
_sender = GroupSender("authority-revoke")


def socket_authority_revoke(*, schema_name: str, user_id: int | None = None, embed_id: int | None = None) -> None:
    """Tell every socket of the workspace whose authority changed: a member's (`user_id`), a widget's visitors'
    (`embed_id`), or everyone's (neither: the workspace itself). Never raises: the periodic re-check still holds."""
    revoke: dict[str, Any] = {"user_id": user_id, "embed_id": embed_id, "all": user_id is None and embed_id is None}
    try:
        events.authority_publish_sync(schema_name, revoke)
    except Exception:
        logger.warning("chat: could not broadcast a revocation to the conversation sockets", exc_info=True)
    if embed_id is None:  # visitors never hold an inbox
        try:
            _sender.send(inbox_group(schema_name), {"type": REVOKE_EVENT_TYPE, **revoke})
        except Exception:
            logger.warning("chat: could not broadcast a revocation to the inbox sockets", exc_info=True)


def socket_authority_revoke_on_commit(*, schema_name: str, user_id: int | None = None,
                                      embed_id: int | None = None) -> None:
    transaction.on_commit(
        lambda: socket_authority_revoke(schema_name=schema_name, user_id=user_id, embed_id=embed_id)
    )


def revoke_concerns(revoke: dict[str, Any], *, user_id: int | None = None, embed_id: int | None = None) -> bool:
    """Whether a broadcast revocation is about this socket (a member's `user_id`, a visitor's `embed_id`)."""
    if revoke.get("all"):
        return True
    if user_id is not None and revoke.get("user_id") == user_id:
        return True
    return embed_id is not None and revoke.get("embed_id") == embed_id


# --- what the floors below say (connected in ChatConfig.ready) ------------------------------------------------------
def _membership_changed(sender: Any, *, workspace: Any, user_id: int, **kwargs: Any) -> None:
    socket_authority_revoke(schema_name=workspace.schema_name, user_id=user_id)


def _workspace_status_changed(sender: Any, *, workspace: Any, **kwargs: Any) -> None:
    socket_authority_revoke(schema_name=workspace.schema_name)


def authority_receivers_connect() -> None:
    from accounts.signals import membership_changed
    from tenants.signals import workspace_status_changed

    membership_changed.connect(_membership_changed, dispatch_uid="chat.authority.membership_changed")
    workspace_status_changed.connect(_workspace_status_changed, dispatch_uid="chat.authority.workspace_status")
