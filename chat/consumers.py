"""The conversation WebSocket: /ws/chat/<conversation public id>/ (docs/websocket-protocol.md).

The consumer parses frames, checks limits and permissions, and hands off: to chat.streaming for a question, to the
services for everything else, and to its SocketFeed (chat.events) for everything it sends.

Who may open a conversation is decided by *socket authenticators*: functions of the ASGI scope that return a
`SocketPrincipal` (or None to pass). The dashboard's session authenticator is built in; the widget registers its
visitor-token authenticator with `socket_authenticator_register` (chat does not import embeds: STYLE.md floors).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings

from accounts.roles import role_has_permission
from chat import authority, handoff, inbox, protocol, selectors, services
from chat.events import ConversationLog, LoopSink, SocketFeed, authority_channel, hub
from chat.models import Conversation
from chat.streaming import conversation_message_start, run_in_workspace_pool
from config.errors import ApplicationError, ErrorCode, PermissionDenied, RateLimited

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SocketPrincipal:
    """Who is on the other end of a conversation socket, and what they may do there."""

    kind: str  # "member" (dashboard session) | "visitor" (widget, issue #5)
    user: Any = None
    role: str | None = None
    visitor_id: str = ""
    can_post: bool = False
    speaks_as: str = "customer"  # the role of what they post (a member trying the bot plays the customer)

    def may_open(self, conversation: Conversation) -> bool:
        if self.kind == "member":
            return True
        return bool(self.visitor_id) and conversation.visitor_id == self.visitor_id


SocketAuthenticator = Callable[[dict[str, Any]], SocketPrincipal | None]


def dashboard_session_principal(scope: dict[str, Any]) -> SocketPrincipal | None:
    """A logged-in member of this workspace (config.ws resolved the role; another site's page gets no user)."""
    role = scope.get("role")
    if not role or not role_has_permission(role, "conversations.view"):
        return None
    return SocketPrincipal(
        kind="member", user=scope.get("user"), role=role,
        can_post=role_has_permission(role, "conversations.reply"),
    )


# Tried in order; each runs in a worker thread in the workspace's schema, so it may read the database.
socket_authenticators: list[SocketAuthenticator] = [dashboard_session_principal]


def socket_authenticator_register(authenticator: SocketAuthenticator) -> None:
    if authenticator not in socket_authenticators:
        socket_authenticators.append(authenticator)


def _workspace_active(workspace_id: int) -> bool:
    from tenants.models import Workspace, WorkspaceStatus

    return Workspace.objects.filter(pk=workspace_id, status=WorkspaceStatus.ACTIVE).exists()


def member_role_now(*, workspace_id: int, user: Any) -> str | None:
    """The member's role in the workspace as the database says now (None: suspended workspace, inactive user, not a
    member any more)."""
    from accounts.models import User
    from accounts.selectors import membership_role

    if not getattr(user, "pk", None) or not _workspace_active(workspace_id):
        return None
    if not User.objects.filter(pk=user.pk, is_active=True).exists():
        return None
    return membership_role(user_id=user.pk, workspace_id=workspace_id)


def socket_principal_refresh(*, scope: dict[str, Any], conversation_id: int) -> SocketPrincipal | None:
    """Who the socket of `scope` is now, asking the authenticators again with the member's current role (the
    connect-time role in the scope may be stale); None when it may no longer open the conversation."""
    workspace_id = scope["workspace"].pk
    if scope.get("role"):  # a member when it connected
        role = member_role_now(workspace_id=workspace_id, user=scope.get("user"))
    elif _workspace_active(workspace_id):
        role = None
    else:
        return None
    fresh = {**scope, "role": role}
    principal = next((p for p in (auth(fresh) for auth in socket_authenticators) if p is not None), None)
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if principal is None or conversation is None or not principal.may_open(conversation):
        return None
    return principal


def authority_lost(before: SocketPrincipal, now: SocketPrincipal | None) -> bool:
    """A socket that lost anything it was admitted with is closed (a promotion changes nothing until it reconnects)."""
    if now is None or now.kind != before.kind:
        return True
    if before.can_post and not now.can_post:
        return True
    return before.speaks_as == "agent" and not role_has_permission(now.role, "conversations.handle")


def access_revoked_error() -> PermissionDenied:
    return PermissionDenied("Your access to this conversation has changed; reconnect if you still have it.",
                            code=ErrorCode.ACCESS_REVOKED)


# Client frames that change something: the socket's authority is re-checked before each (chat.authority).
STATE_CHANGING_FRAMES = frozenset({"message", "feedback", "request_human", "contact"})


def conversation_open(*, scope: dict[str, Any], public_id: str) -> tuple[int, SocketPrincipal | None, Conversation | None]:
    """(close code or 0, principal, conversation). Unknown and not-yours look the same (4404): ids can't be probed.
    Nobody is told anything about a conversation before they are authenticated (4403)."""
    principal = next((p for p in (auth(scope) for auth in socket_authenticators) if p is not None), None)
    if principal is None:
        return protocol.CLOSE_FORBIDDEN, None, None
    conversation = selectors.conversation_get(public_id=public_id)
    if conversation is None or not principal.may_open(conversation):
        return protocol.CLOSE_NOT_FOUND, principal, None
    return 0, principal, conversation


class ConversationConsumer(AsyncWebsocketConsumer):
    # No conversation event crosses the channel layer (chat/events.py), so this socket listens on none: with one,
    # Channels' own receive loop (a blocking pop on Redis per socket) raised out of the consumer when Redis went
    # away, and every open chat socket died without a close frame. An alias that is not configured means "none".
    channel_layer_alias = "chat-sockets-use-no-channel-layer"
    feed: SocketFeed | None = None
    last_submission: LoopSink | None = None
    closing = False  # frames already in flight after our close are ignored

    async def connect(self) -> None:
        workspace = self.scope["workspace"]
        code, principal, conversation = await run_in_workspace_pool(
            workspace, conversation_open, scope=self.scope, public_id=self.scope["url_route"]["kwargs"]["conversation_id"]
        )
        await self.accept()  # then close with the code: a close before the accept reaches the client as a bare 403
        if code:
            await self.close(code=code)
            return
        assert principal is not None and conversation is not None
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if principal.kind == "member" and query.get("as") == ["agent"] and principal.can_post and \
                role_has_permission(principal.role, "conversations.handle"):
            # The inbox's conversation pane: typing shows as the agent's, messages are the agent's replies.
            principal = dataclasses.replace(principal, speaks_as="agent")
        elif principal.kind == "member" and conversation.channel == "widget":
            # The visitor is the customer of a widget conversation: staff write there as agents (as=agent) or not at
            # all, never in the visitor's name ("You:" in their transcript).
            principal = dataclasses.replace(principal, can_post=False)
        self.principal = principal
        self.conversation = conversation
        self.limits = protocol.ProtocolLimits.from_settings()
        self.frames = protocol.TokenBucket(self.limits.frame_rate, self.limits.frame_burst)
        self.messages = protocol.TokenBucket(self.limits.message_rate, self.limits.message_burst)
        # Rejected frames drain this one; a client that keeps flooding past every rate_limited error empties it.
        self.patience = protocol.TokenBucket(self.limits.frame_rate, self.limits.frame_burst * 10)
        self.last_rate_error = 0.0
        self.last_typing: tuple[bool, float] = (False, 0.0)
        self.log = ConversationLog.of(workspace.schema_name, conversation)
        self.authority_checked_at = time.monotonic()
        self.feed = SocketFeed(log=self.log, send=self._send_text, on_idle=self._close_idle,
                               on_broken=self._close_unavailable, on_revoke=self._on_revoke)
        try:
            await hub().join(self.log.channel, self.feed)
            await hub().join(authority_channel(workspace.schema_name), self.feed)
            self.welcome_seq, oldest = await self.log.bounds()
        except Exception:  # Redis is unreachable: nothing can be streamed; the client reconnects later
            logger.exception("chat: could not open the event stream of %s", conversation.public_id)
            await self._close(protocol.CLOSE_UNAVAILABLE)
            return
        self.feed.frame(protocol.local_frame(
            "welcome", conversation=protocol.conversation_payload(conversation), last_seq=self.welcome_seq,
            oldest_seq=oldest or None,
            you={"kind": principal.kind, "role": principal.role, "can_post": principal.can_post},
            limits=self.limits.public(),
        ))

    async def disconnect(self, code: int) -> None:
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.stop()
            await hub().leave(self.log.channel, feed)
            await hub().leave(authority_channel(self.log.schema), feed)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _close_idle(self) -> None:
        await self._close(protocol.CLOSE_IDLE)

    async def _close_unavailable(self) -> None:
        await self._close(protocol.CLOSE_UNAVAILABLE)

    async def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            if self.feed is not None:
                self.feed.stop()
            await self.close(code=code)

    def _reply(self, frame: dict[str, Any]) -> None:
        if self.feed is not None:
            self.feed.frame(frame)

    # --- authority, re-checked (chat.authority) ---
    def revoke_concerns(self, revoke: dict[str, Any]) -> bool:
        return authority.revoke_concerns(revoke, user_id=getattr(self.principal.user, "pk", None))

    def principal_now(self) -> SocketPrincipal | None:
        """Who this socket is now (in a worker thread, in the workspace's schema). Raises an ApplicationError to
        say why it may no longer be here."""
        return socket_principal_refresh(scope=self.scope, conversation_id=self.conversation.pk)

    async def _on_revoke(self, revoke: dict[str, Any]) -> None:
        if not self.closing and self.revoke_concerns(revoke):
            await self._authority_recheck()

    async def _authority_ensure(self, **extra: Any) -> bool:
        """True when the socket may still act; otherwise it has been told why and closed (4403)."""
        if time.monotonic() - self.authority_checked_at < settings.CHAT_WS_AUTHORITY_TTL:
            return True
        return await self._authority_recheck(**extra)

    async def _authority_recheck(self, **extra: Any) -> bool:
        error: ApplicationError | None = None
        try:
            now = await run_in_workspace_pool(self.scope["workspace"], self.principal_now)
        except ApplicationError as refused:
            now, error = None, refused
        except Exception:  # the database is unreachable: the action itself fails; ask again next time
            logger.warning("chat: could not re-check the authority of a socket", exc_info=True)
            return True
        if not authority_lost(self.principal, now):
            self.authority_checked_at = time.monotonic()
            return True
        if not self.closing:
            error = error or access_revoked_error()
            try:  # straight to the socket: the feed stops with the close and would drop a queued frame
                await self._send_text(protocol.encode(protocol.error_frame(error, **extra)))
            except Exception:
                pass
            await self._close(protocol.CLOSE_FORBIDDEN)
        return False

    # --- frames in ---
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        feed = self.feed
        if feed is None or self.closing:
            return
        feed.touch()
        wait = self.frames.take()
        if wait:
            await self._rate_limited(feed, wait)
            return
        if text_data is None:
            feed.error(ApplicationError("Frames are JSON text; binary frames are not accepted.",
                                        code=ErrorCode.BINARY_NOT_SUPPORTED))
            return
        try:
            frame = protocol.client_frame_parse(text_data, self.limits)
        except protocol.ProtocolError as error:
            feed.error(error, **({"client_id": error.client_id} if error.client_id else {}))
            return
        if frame.type in STATE_CHANGING_FRAMES:
            client_id = frame.data.get("client_id")
            if not await self._authority_ensure(**({"client_id": client_id} if client_id else {})):
                return
        try:
            await getattr(self, f"on_{frame.type}")(feed, frame.data)
        except ApplicationError as error:
            extra: dict[str, Any] = {}
            if frame.data.get("client_id"):
                extra["client_id"] = frame.data["client_id"]
            if isinstance(error, RateLimited):
                extra["retry_after"] = error.retry_after
            feed.error(error, **extra)

    async def _rate_limited(self, feed: SocketFeed, wait: float) -> None:
        if self.patience.take():  # it ignores every rate_limited error
            await self._close(protocol.CLOSE_FLOOD)
            return
        now = time.monotonic()
        if now - self.last_rate_error >= 1.0:  # one error a second is enough to say it
            self.last_rate_error = now
            feed.error(RateLimited("Too many frames; slow down.", retry_after=protocol.retry_after_seconds(wait)),
                       retry_after=protocol.retry_after_seconds(wait))

    async def on_ping(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        feed.pong(data.get("nonce"))

    async def on_resume(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        feed.resume(data["last_seq"])

    async def on_message(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        if not self.principal.can_post:
            raise PermissionDenied("Your role can read this conversation but not write in it.",
                                   details={"permission": "conversations.reply"})
        wait = self.messages.take()
        if wait:
            retry_after = protocol.retry_after_seconds(wait)
            raise RateLimited("Too many messages; slow down.", retry_after=retry_after)
        feed.ensure_live(self.welcome_seq)
        if self.principal.speaks_as == "agent":
            message_id, created = await run_in_workspace_pool(
                self.scope["workspace"], _agent_message, conversation_id=self.conversation.pk,
                agent=self.principal.user, text=data["text"], client_id=data["client_id"],
            )
            feed.frame(protocol.local_frame("ack", client_id=data["client_id"], message_id=message_id,
                                            duplicate=not created))
            return
        previous = self.last_submission
        self.last_submission = conversation_message_start(
            workspace=self.scope["workspace"], conversation_id=self.conversation.pk, log=self.log,
            text=data["text"], client_id=data["client_id"],
            author=self.principal.user if self.principal.kind == "member" else None, reply=self._reply,
            after=previous if previous is not None and not previous.submitted.is_set() else None,
        )

    async def on_typing(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        state, now = data["state"], time.monotonic()
        last_state, last_at = self.last_typing
        if state == last_state and (not state or now - last_at < 2.0):
            return  # nothing new for the others
        self.last_typing = (state, now)
        await self.log.publish_ephemeral(
            protocol.local_frame("typing", role=self.principal.speaks_as, state=state), origin=feed.id
        )

    async def on_feedback(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        if not self.principal.can_post:
            raise PermissionDenied("Your role cannot rate answers.", details={"permission": "conversations.reply"})
        feed.ensure_live(self.welcome_seq)
        await run_in_workspace_pool(
            self.scope["workspace"], _feedback, conversation_id=self.conversation.pk, **data
        )

    async def on_request_human(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        if not self.principal.can_post:
            raise PermissionDenied("Your role cannot do this.", details={"permission": "conversations.reply"})
        feed.ensure_live(self.welcome_seq)
        await run_in_workspace_pool(self.scope["workspace"], _request_human, conversation_id=self.conversation.pk)


    async def on_contact(self, feed: SocketFeed, data: dict[str, Any]) -> None:
        if not self.principal.can_post:
            raise PermissionDenied("Your role cannot do this.", details={"permission": "conversations.reply"})
        await run_in_workspace_pool(self.scope["workspace"], _contact, conversation_id=self.conversation.pk,
                                    email=data["email"])
        feed.frame(protocol.local_frame("contact_saved", email=data["email"]))


def _agent_message(*, conversation_id: int, agent: Any, text: str, client_id: str) -> tuple[int, bool]:
    message, created = handoff.agent_message_post(
        conversation=Conversation.objects.get(pk=conversation_id), agent=agent, text=text, client_message_id=client_id,
    )
    return message.pk, created


def _contact(*, conversation_id: int, email: str) -> None:
    handoff.conversation_contact_set(conversation=Conversation.objects.get(pk=conversation_id), email=email)


def _feedback(*, conversation_id: int, message_id: int, value: int, comment: str) -> None:
    conversation = Conversation.objects.get(pk=conversation_id)
    services.message_feedback_set(conversation=conversation, message_id=message_id, value=value, comment=comment)


def _request_human(*, conversation_id: int) -> None:
    services.conversation_request_human(conversation=Conversation.objects.get(pk=conversation_id), reason="asked")


# --- the agents' inbox -------------------------------------------------------------------------------------------
INBOX_CLOSE_FORBIDDEN = protocol.CLOSE_FORBIDDEN


class InboxConsumer(AsyncJsonWebsocketConsumer):
    """/ws/inbox/: the live inbox of one workspace (docs/handoff.md). Dashboard session only, and the role must hold
    `conversations.handle`. Receives conversation summaries and internal notes from the workspace's inbox group
    (chat.inbox); while it is open (and pinging) its agent counts as online."""

    group: str | None = None

    async def connect(self) -> None:
        role, user = self.scope.get("role"), self.scope.get("user")
        await self.accept()  # then close with the code (a close before the accept reaches the client as a bare 403)
        if not role or not role_has_permission(role, "conversations.handle") or not getattr(user, "pk", None):
            await self.close(code=INBOX_CLOSE_FORBIDDEN)
            return
        self.schema = self.scope["workspace"].schema_name
        self.user_id = user.pk
        self.authority_checked_at = time.monotonic()
        self.group = inbox.inbox_group(self.schema)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._touch()
        await self.send_json({"type": "welcome", "you": {"id": user.pk, "name": user.display_name},
                              "presence_ttl": inbox.PRESENCE_TTL})

    async def _touch(self) -> None:
        try:
            await inbox.agent_presence_touch(schema_name=self.schema, user_id=self.user_id)
        except Exception:  # presence is a hint; the inbox works without it
            logger.warning("chat: presence not recorded", exc_info=True)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            try:
                await inbox.agent_presence_clear(schema_name=self.schema, user_id=self.user_id)
            except Exception:
                logger.warning("chat: presence not cleared", exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.group is None:
            return
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("type") == "ping":
            if not await self._authority_ensure():
                return
            await self._touch()
            await self.send_json({"type": "pong", "nonce": frame.get("nonce")})
            return
        error = ApplicationError("Unknown or malformed frame.", code=ErrorCode.MALFORMED_REQUEST)
        await self.send_json(protocol.error_frame(error))

    async def inbox_event(self, event: dict[str, Any]) -> None:
        # Summaries and internal notes: only while the agent still holds the inbox (a missed revocation ends here).
        if self.group is None or not await self._authority_ensure():
            return
        await self.send_json(event["payload"])

    async def authority_revoke(self, event: dict[str, Any]) -> None:
        """chat.authority's broadcast on the inbox group: someone's role changed, or the workspace's status."""
        if self.group is not None and authority.revoke_concerns(event, user_id=self.user_id):
            await self._authority_recheck()

    async def _authority_ensure(self) -> bool:
        if time.monotonic() - self.authority_checked_at < settings.CHAT_WS_AUTHORITY_TTL:
            return True
        return await self._authority_recheck()

    async def _authority_recheck(self) -> bool:
        try:
            role = await run_in_workspace_pool(self.scope["workspace"], member_role_now,
                                               workspace_id=self.scope["workspace"].pk, user=self.scope["user"])
        except Exception:  # the database is unreachable: ask again next time
            logger.warning("chat: could not re-check the authority of an inbox socket", exc_info=True)
            return True
        if role_has_permission(role, "conversations.handle"):
            self.authority_checked_at = time.monotonic()
            return True
        group, self.group = self.group, None  # nothing more reaches this socket
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)
            try:
                await inbox.agent_presence_clear(schema_name=self.schema, user_id=self.user_id)
            except Exception:
                logger.warning("chat: presence not cleared", exc_info=True)
            await self.send_json(protocol.error_frame(access_revoked_error()))
            await self.close(code=INBOX_CLOSE_FORBIDDEN)
        return False
