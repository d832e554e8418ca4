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

from chat import protocol
from chat.consumers import ConversationConsumer, SocketPrincipal
from chat.models import Conversation
from chat.streaming import run_in_workspace_pool
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


def _admit(*, token: str) -> tuple[VisitorClaims, int, str]:
    claims, embed = selectors.visitor_admit(token=token)
    return claims, embed.pk, embed.public_key


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

    async def connect(self) -> None:
        workspace = self.scope["workspace"]
        self.scope["user"], self.scope["role"] = AnonymousUser(), None
        self.client_ip = (self.scope.get("client") or ("unknown", 0))[0]
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
            claims, embed_id, public_key = await run_in_workspace_pool(workspace, _admit, token=token)
        except ApplicationError as error:
            await self._refuse(protocol.CLOSE_FORBIDDEN, error)
            return
        self.claims = claims
        self.embed_id, self.public_key = embed_id, public_key
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
        await super().on_message(feed, data)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=visitor_frame_redact(text))


_REDACTED_TYPES = ('"type":"agent_completed"', '"type":"message"', '"type":"agent_joined"', '"type":"agent_left"')


def visitor_frame_redact(text: str) -> str:
    """Completed messages carry the business's accounting (provider, model, tokens, cost, timings): a visitor gets
    the message without it. Only those two (rare) events are parsed; tokens pass through untouched."""
    head = text[:48]
    if not any(kind in head for kind in _REDACTED_TYPES):
        return text
    try:
        event = json.loads(text)
    except ValueError:
        return text
    if isinstance(event.get("message"), dict):
        event["message"] = selectors.visitor_message_payload(event["message"])
    if isinstance(event.get("agent"), dict):  # a person's name, not their account id
        event["agent"] = {"name": event["agent"].get("name", "")}
    return protocol.encode(event)
