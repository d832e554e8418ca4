"""Reads of embeds and of what a widget visitor may see. Every function runs in the current workspace schema.

`widget_embed_admit` and `visitor_admit` are the checks every door of the widget shares (config, frame, session,
conversations, the WebSocket): one place decides, so no door can be more lenient than another.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django.utils.html import escape

from chat import protocol
from chat.models import Conversation, Lead
from chat.selectors import conversation_get, message_list
from config.errors import NotAuthenticated, NotFound, PermissionDenied
from embeds.errors import EmbedErrorCode
from embeds.leads import lead_form_public
from embeds.models import Embed
from embeds.origins import origin_matches, request_origin_parse
from embeds.security import TokenExpired, TokenInvalid, VisitorClaims, public_key_plausible, visitor_token_read
from embeds.theme import COLOR_RE, THEME_DEFAULTS, contrast_text, strings_for

LOADER_PATH = "/widget/v1/loader.js"


def embed_list() -> QuerySet[Embed]:
    return Embed.objects.order_by("name", "id")


def embed_get(*, embed_id: int) -> Embed | None:
    return Embed.objects.filter(pk=embed_id).first()


def embed_by_public_key(*, public_key: str) -> Embed | None:
    if not public_key_plausible(public_key):
        return None
    return Embed.objects.filter(public_key=public_key).first()


# The config door is asked on every page view of every site that shows a widget: it reads embeds through a small
# per-process cache (found and not found alike, so a flood of made-up keys doesn't reach the database either),
# checked against the workspace's embeds version in Redis (one GET instead of two queries). Every change of an embed
# bumps the version on commit (embeds.services), so no process serves a stale answer after it.
EMBED_CACHE_MAX = 10_000
EMBEDS_VERSION_KEY = "embeds:version"
_embed_cache: dict[tuple[str, str], tuple[str, Embed | None]] = {}


def embeds_version() -> str:
    return str(cache.get(EMBEDS_VERSION_KEY) or "0")


def embed_by_public_key_cached(*, public_key: str) -> Embed | None:
    key = (connection.schema_name, public_key)
    version = embeds_version()
    hit = _embed_cache.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    embed = embed_by_public_key(public_key=public_key)
    if len(_embed_cache) >= EMBED_CACHE_MAX:
        _embed_cache.clear()
    _embed_cache[key] = (version, embed)
    return embed


def embed_active_count() -> int:
    return Embed.objects.filter(is_active=True).count()


def embed_origin_is_allowed(*, embed: Embed, origin: str | None) -> bool:
    return origin_matches(origin, embed.allowed_origins)


def embed_snippet(*, embed: Embed, base_url: str) -> str:
    """The script tag the business pastes into its pages (PRODUCT.md)."""
    src = base_url.rstrip("/") + LOADER_PATH
    return f'<script src="{escape(src)}" data-embed="{escape(embed.public_key)}" async></script>'


def workspace_base_url(workspace: Any | None = None) -> str:
    from tenants.selectors import workspace_url

    return workspace_url(workspace=workspace or connection.tenant, path="")


# --- the doors ---------------------------------------------------------------------------------------------------
def widget_embed_admit(*, public_key: str, origin: str | None, cached: bool = False) -> Embed:
    """The embed behind `public_key`, if a page of `origin` may show it. Raises NotFound (unknown or rotated key),
    PermissionDenied embed_inactive, origin_required (no origin) or origin_not_allowed. `cached`: read through the
    config door's short cache (embed_by_public_key_cached)."""
    embed = (embed_by_public_key_cached if cached else embed_by_public_key)(public_key=public_key)
    if embed is None:
        raise NotFound("There is no widget with this key.", code=EmbedErrorCode.EMBED_NOT_FOUND)
    if not embed.is_active:
        raise PermissionDenied("This widget is switched off.", code=EmbedErrorCode.EMBED_INACTIVE)
    if request_origin_parse(origin) is None:
        raise PermissionDenied(
            "The widget only runs on a web page that says where it is (the Origin).",
            code=EmbedErrorCode.ORIGIN_REQUIRED,
        )
    if not embed_origin_is_allowed(embed=embed, origin=origin):
        raise PermissionDenied(
            "This website is not allowed to show this widget. Add its origin to the widget's allowed origins.",
            code=EmbedErrorCode.ORIGIN_NOT_ALLOWED, details={"origin": str(request_origin_parse(origin))},
        )
    return embed


def visitor_admit(*, token: str | None) -> tuple[VisitorClaims, Embed]:
    """The claims of a visitor token and its embed, if the token is still good here: signed for this workspace,
    not expired, its embed active under the same public key, its page origin still allowed."""
    if not token:
        raise NotAuthenticated("The widget's visitor token is missing.", code=EmbedErrorCode.VISITOR_TOKEN_INVALID)
    try:
        claims = visitor_token_read(schema=connection.schema_name, token=token, max_age=settings.WIDGET_TOKEN_TTL)
    except TokenExpired:
        raise NotAuthenticated("The visitor token has expired.", code=EmbedErrorCode.VISITOR_TOKEN_EXPIRED) from None
    except TokenInvalid:
        raise NotAuthenticated("The visitor token is not valid.", code=EmbedErrorCode.VISITOR_TOKEN_INVALID) from None
    embed = embed_get(embed_id=claims.embed_id)
    if embed is None or embed.public_key != claims.public_key:
        raise NotAuthenticated("The visitor token is not valid.", code=EmbedErrorCode.VISITOR_TOKEN_INVALID)
    widget_embed_admit(public_key=embed.public_key, origin=claims.origin)
    return claims, embed


# --- what the loader and the frame are told ----------------------------------------------------------------------
def embed_colors(*, embed: Embed) -> dict[str, str]:
    """The theme colours as they reach CSS, checked again here: a value that isn't #rgb/#rrggbb (written around the
    services) falls back to the default instead of reaching a stylesheet."""
    def checked(name: str) -> str:
        value = getattr(embed, name)
        return value if isinstance(value, str) and COLOR_RE.match(value) else THEME_DEFAULTS[name]

    primary = checked("color_primary")
    return {"primary": primary, "on_primary": contrast_text(primary), "background": checked("color_background"),
            "text": checked("color_text")}


def embed_loader_config(*, embed: Embed, language: str) -> dict[str, Any]:
    """What the loader needs to draw the launcher (no secrets, nothing about the workspace's data)."""
    strings = strings_for(language)
    return {
        "key": embed.public_key,
        "language": language,
        "position": embed.position,
        "launcher_icon": embed.launcher_icon,
        "colors": {name: value for name, value in embed_colors(embed=embed).items() if name in ("primary", "on_primary")},
        "auto_open": embed.auto_open,
        "labels": {"open": strings["open"], "close": strings["close"], "title": embed.title or strings["title"]},
    }


def embed_frame_config(*, embed: Embed, language: str, host_origin: str) -> dict[str, Any]:
    """What the frame's script is given (as JSON in its page): texts, behaviour, paths."""
    strings = strings_for(language)
    key = embed.public_key
    return {
        "key": key,
        "host_origin": host_origin,
        "language": language,
        "strings": strings,
        "title": embed.title or strings["title"],
        "greeting": embed.greeting or strings["greeting"],
        "placeholder": embed.placeholder or strings["placeholder"],
        "behaviour": embed.behaviour(),
        "identity_verification": embed.identity_verification_enabled,
        "starter_questions": list(embed.starter_questions or []),
        "lead_form": lead_form_public(embed.lead_form),
        "paths": {
            "session": f"/widget/v1/session/{key}/",
            "conversations": "/widget/v1/conversations/",
            "socket": "/widget/v1/ws/",
        },
        "token_ttl": settings.WIDGET_TOKEN_TTL,
    }


# --- a visitor's conversations -----------------------------------------------------------------------------------
def visitor_may_open(*, claims: VisitorClaims, conversation: Conversation) -> bool:
    """A widget conversation of this embed that is the visitor's: a verified visitor's are the ones of their
    verified user id (on any device); an anonymous visitor's are their visitor id's that no verified user owns."""
    if conversation.embed_id != claims.embed_id or conversation.channel != "widget":
        return False
    if claims.user_id:
        return conversation.verified_user_id == claims.user_id
    return bool(claims.visitor_id) and conversation.visitor_id == claims.visitor_id and not conversation.verified_user_id


def visitor_conversation_list(*, claims: VisitorClaims) -> QuerySet[Conversation]:
    conversations = Conversation.objects.filter(embed_id=claims.embed_id, channel="widget")
    if claims.user_id:
        conversations = conversations.filter(verified_user_id=claims.user_id)
    else:
        conversations = conversations.filter(visitor_id=claims.visitor_id, verified_user_id="")
    return conversations.order_by("-updated_at", "-id")


def visitor_conversation_get(*, claims: VisitorClaims, public_id: Any) -> Conversation | None:
    conversation = conversation_get(public_id=public_id)
    if conversation is None or not visitor_may_open(claims=claims, conversation=conversation):
        return None
    return conversation


# Message fields a visitor sees; the rest (provider, model, tokens, cost, timings, confidence) is the business's.
VISITOR_MESSAGE_FIELDS = ("id", "role", "content", "client_id", "reply_to", "created_at", "seq", "feedback",
                          "citations", "answered", "author_name")
# What a visitor sees of a source, and only when the embed shows sources: never document or chunk ids, file names,
# scores (docs/widget.md "What a visitor sees"), never the dashboard link to the passage. `quoted`: the answer cites it.
VISITOR_CITATION_FIELDS = ("title", "section", "page", "url", "snippet", "quoted")
# Details of an error a visitor may see: about their own frame (which field, how long), never the workspace's plan,
# credits or the provider that failed.
VISITOR_ERROR_DETAILS = frozenset({"field", "max_chars", "chars", "max_bytes", "retry_after", "last_seq",
                                   "requested", "oldest_seq", "type", "known", "message_id", "origin"})
# Billing refusals say only that the assistant can't answer now: the plan and the balance are the business's.
VISITOR_OPAQUE_ERRORS = frozenset({"quota_exceeded", "plan_limit"})
VISITOR_OPAQUE_MESSAGE = "The assistant can't answer right now. Please try again later, or ask for a person."


def visitor_citations(citations: Any, *, show_sources: bool) -> list[dict[str, Any]]:
    """Sources as a visitor may see them: none when the embed hides sources, else only the shown fields."""
    if not show_sources or not isinstance(citations, list):
        return []
    return [{name: citation[name] for name in VISITOR_CITATION_FIELDS if name in citation}
            for citation in citations if isinstance(citation, dict)]


def visitor_message_payload(payload: dict[str, Any], *, show_sources: bool = False) -> dict[str, Any]:
    """A message as the chat protocol shapes it (chat.protocol.message_payload), cut down to what a visitor sees."""
    data = {name: payload[name] for name in VISITOR_MESSAGE_FIELDS if name in payload}
    if "citations" in data:
        data["citations"] = visitor_citations(data["citations"], show_sources=show_sources)
    return data


def visitor_event_redact(event: dict[str, Any], *, show_sources: bool) -> dict[str, Any]:
    """One server event or frame as a widget visitor's socket sends it (live, replayed and local frames alike)."""
    kind = event.get("type")
    if isinstance(event.get("message"), dict) and kind in ("message", "agent_completed", "agent_joined", "agent_left"):
        event["message"] = visitor_message_payload(event["message"], show_sources=show_sources)
    if isinstance(event.get("agent"), dict):  # a person's name, not their account id
        event["agent"] = {"name": event["agent"].get("name", "")}
    if kind == "tool_completed":
        event["sources"] = visitor_citations(event.get("sources"), show_sources=show_sources)
    elif kind == "reset":
        event.pop("provider", None)  # which vendor failed is the business's
    elif kind == "error":
        details = event.get("details") if isinstance(event.get("details"), dict) else {}
        if event.get("code") in VISITOR_OPAQUE_ERRORS:
            event["message"], details = VISITOR_OPAQUE_MESSAGE, {}
        event["details"] = {name: value for name, value in details.items() if name in VISITOR_ERROR_DETAILS}
    return event


def embed_shows_sources(*, embed_id: int | None) -> bool:
    """Whether the widget of `embed_id` shows sources (an embed that is gone shows none)."""
    return bool(Embed.objects.filter(pk=embed_id).values_list("show_sources", flat=True).first()) if embed_id else False


def visitor_message_list(*, conversation: Conversation, show_sources: bool | None = None) -> list[dict[str, Any]]:
    """The transcript a visitor sees: customer, assistant, agent and system messages (never internal notes), with
    sources only when the conversation's embed shows them (`show_sources` None: ask the embed)."""
    if show_sources is None:
        show_sources = embed_shows_sources(embed_id=conversation.embed_id)
    messages = message_list(conversation=conversation, include_notes=False)
    return [visitor_message_payload(protocol.message_payload(message), show_sources=show_sources)
            for message in messages]


def visitor_conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "title": conversation.title,
        "status": conversation.status,
        "last_seq": conversation.last_seq,
        "created_at": conversation.created_at.isoformat() if conversation.created_at else None,
        "updated_at": conversation.updated_at.isoformat() if conversation.updated_at else None,
    }


def visitor_lead_get(*, conversation: Conversation) -> Lead | None:
    return Lead.objects.filter(conversation=conversation).first()


def visitor_lead_payload(lead: Lead | None) -> dict[str, str] | None:
    """What the visitor told us, back to them (nothing internal: no ids, no stage)."""
    if lead is None:
        return None
    return {"name": lead.name, "email": lead.email, "phone": lead.phone, "custom": lead.custom_value}
