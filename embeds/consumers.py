"""The widget's conversation socket: /widget/v1/ws/<conversation id>/?token=<visitor token>.

It is chat's ConversationConsumer (the same protocol, docs/websocket-protocol.md) with the widget's doors in front:

* the socket must come from the frame itself: its `Origin` is the workspace host (the frame is served from there),
  never the host page and never absent — a page elsewhere holding a stolen token can't use it, and the host page's
  origin, which the browser proved when it let the frame mount (frame-ancestors), travels inside the token;
* the visitor token must be good now (embeds.selectors.visitor_admit: signature, age, embed active, key current,
  origin still allowed);
* connections per IP, and questions per IP, per embed and per workspace are rate limited on the shared Redis
  (`error {code: "rate_limited", retry_after}`);
* a dashboard session cookie means nothing here: the socket speaks for the visitor only.

Who may open which conversation is decided through chat's authenticator hook (`widget_visitor_principal`,
registered in EmbedsConfig.ready), which only answers for sockets this consumer admitted, with a principal whose
`may_open` knows the embed and the verified identity (`WidgetVisitorPrincipal`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from chat import authority, protocol
from chat.consumers import ConversationConsumer, SocketPrincipal
from chat.models import Conversation
from chat.streaming import run_in_workspace_pool
from config.client_ip import client_ip
from config.errors import ApplicationError, RateLimited
from embeds import limits, selectors
from embeds.security import VisitorClaims

CLOSE_RATE_LIMITED = 4429
SCOPE_KEY = "widget_visitor"


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def socket_from_frame(scope: dict[str, Any]) -> bool:
    """The socket was opened by a page of the workspace host itself (the frame), as the browser says."""
    origin = _header(scope, b"origin")
    if not origin:
        return False
    return urlsplit(origin).netloc.lower() == _header(scope, b"host").lower()


def _admit(*, token: str) -> tuple[VisitorClaims, int, str, bool]:
    claims, embed = selectors.visitor_admit(token=token)
    return claims, embed.pk, embed.public_key, embed.show_sources


@dataclass(frozen=True)
class WidgetVisitorPrincipal(SocketPrincipal):
    """A widget visitor (docs/websocket-protocol.md: "subclass it to add the embed"): may open a widget conversation
    of their embed that is theirs — by visitor id, or by verified user id from any device."""

    claims: VisitorClaims | None = None

    def may_open(self, conversation: Conversation) -> bool:
        return self.claims is not None and selectors.visitor_may_open(claims=self.claims, conversation=conversation)


def widget_visitor_principal(scope: dict[str, Any]) -> SocketPrincipal | None:
    """chat's socket authenticator hook: the visitor this consumer admitted (token, origin, embed checked in
    `WidgetConversationConsumer.connect`); None for every other socket, so /ws/chat/ never takes visitor tokens."""
    claims = scope.get(SCOPE_KEY)
    if not isinstance(claims, VisitorClaims):
        return None
    return WidgetVisitorPrincipal(kind="visitor", visitor_id=claims.visitor_id, can_post=True, speaks_as="customer",
                                  claims=claims)


def _plan_message_rate(workspace: Any) -> str | None:
    """The plan's chat_messages_per_minute as a rate (None: the plan sets none)."""
    from tenants.billing import plan_rate_limit

    try:
        return plan_rate_limit(workspace=workspace, name="chat_messages")
    except Exception:  # the plan can't be read: the platform's own per-workspace limit still holds
        return None


class WidgetConversationConsumer(ConversationConsumer):
    claims: VisitorClaims | None = None
    show_sources = False  # the embed's setting; visitors get sources only when it is on (visitor_frame_redact)

    async def connect(self) -> None:
        workspace = self.scope["workspace"]
        self.scope["user"], self.scope["role"] = AnonymousUser(), None
        self.client_ip = client_ip(self.scope)
        if not socket_from_frame(self.scope):
            await self._refuse(protocol.CLOSE_FORBIDDEN)
            return
        wait = await limits.socket_limits_take(
            schema=workspace.schema_name, checks=[("socket.ip", self.client_ip, settings.WIDGET_RATE_SOCKET_IP)]
        )
        if wait:
            await self._refuse(CLOSE_RATE_LIMITED, RateLimited("Too many connections; please wait.", retry_after=wait))
            return
        token = (parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        try:
            claims, embed_id, public_key, show_sources = await run_in_workspace_pool(workspace, _admit, token=token)
        except ApplicationError as error:
            await self._refuse(protocol.CLOSE_FORBIDDEN, error)
            return
        self.claims, self.token = claims, token
        self.embed_id, self.public_key, self.show_sources = embed_id, public_key, show_sources
        self.plan_message_rate = await run_in_workspace_pool(workspace, _plan_message_rate, workspace)
        self.scope[SCOPE_KEY] = claims
        await super().connect()

    async def _refuse(self, code: int, error: ApplicationError | None = None) -> None:
        """Accept, say why (an error frame the widget can act on), close with `code`."""
        await self.accept()
        if error is not None:
            extra = {"retry_after": error.retry_after} if isinstance(error, RateLimited) else {}
            await self.send(text_data=protocol.encode(protocol.error_frame(error, **extra)))
        await self.close(code=code)

    async def on_message(self, feed: Any, data: dict[str, Any]) -> None:
        wait = await limits.socket_limits_take(schema=self.scope["workspace"].schema_name, checks=[
            ("message.ip", self.client_ip, settings.WIDGET_RATE_MESSAGE_IP),
            ("message.embed", self.public_key, settings.WIDGET_RATE_MESSAGE_EMBED),
            ("message.workspace", "all", settings.WIDGET_RATE_MESSAGE_WORKSPACE),
            ("message.plan", "all", self.plan_message_rate),  # what the workspace's plan allows
        ])
        if wait:
            raise RateLimited("You're sending messages too quickly; please wait a moment.", retry_after=wait)
        # Daily answer caps (each question may cost the workspace an answer); a verified user is one visitor on
        # every device.
        visitor = f"user:{self.claims.user_id}" if self.claims.verified else f"visitor:{self.claims.visitor_id}"
        spent = await limits.socket_limits_spent(schema=self.scope["workspace"].schema_name,
                                                 checks=limits.daily_answer_checks(visitor=visitor,
                                                                                   public_key=self.public_key))
        if spent:
            raise limits.daily_cap_error(*spent)
        await super().on_message(feed, data)

    # --- authority, re-checked (chat.authority): the token again, against the embed as it is now ---
    def revoke_concerns(self, revoke: dict[str, Any]) -> bool:
        return authority.revoke_concerns(revoke, embed_id=self.embed_id)

    def principal_now(self) -> SocketPrincipal | None:
        """Raises the door's own error (embed_inactive, origin_not_allowed, visitor_token_invalid, ...) when the
        visitor may no longer be here; picks up a changed `show_sources`."""
        _claims, _embed_id, _public_key, self.show_sources = _admit(token=self.token)
        return super().principal_now()

    async def _send_text(self, text: str) -> None:
        redacted = visitor_frame_redact(text, show_sources=self.show_sources)
        if redacted is not None:
            await self.send(text_data=redacted)


# One conversation log feeds staff and visitor sockets alike: what a visitor must not see is cut here, per socket,
# for live frames, replays (resume) and local frames. Tokens, typing and pongs pass untouched (not parsed).
_REDACTED_TYPES = tuple(f'"type":"{kind}"' for kind in (
    "agent_completed", "message", "agent_joined", "agent_left", "tool_completed", "reset", "error"))


def visitor_frame_redact(text: str, *, show_sources: bool) -> str | None:
    """The frame as a widget visitor gets it (embeds.selectors.visitor_event_redact): no accounting, no document
    or chunk ids, file names or scores, sources only when the embed shows them, no billing details in errors.
    None: not for a visitor (a frame that can't be read is not sent rather than sent unredacted)."""
    head = text[:56]
    if not any(kind in head for kind in _REDACTED_TYPES):
        return text
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    return protocol.encode(selectors.visitor_event_redact(event, show_sources=show_sources))
