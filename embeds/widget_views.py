"""The widget's public doors on the workspace host (docs/widget.md):

    GET  /widget/v1/loader.js                          the loader (the same file for every embed; long cache)
    GET  /widget/v1/config/<public key>/               may a page of this Origin show the widget? (CORS per embed)
    GET  /widget/v1/frame/<public key>/?o=<origin>     the chat frame (CSP frame-ancestors: that origin only)
    POST /widget/v1/session/<public key>/              a visitor token, for the frame only
    GET  /widget/v1/conversations/                     the visitor's conversations          (Bearer visitor token)
    POST /widget/v1/conversations/                     start one                             (Bearer visitor token)
    GET  /widget/v1/conversations/<id>/messages/       one conversation's transcript         (Bearer visitor token)
    GET  /widget/v1/conversations/<id>/lead/           the visitor's own lead form answers   (Bearer visitor token)
    PUT  /widget/v1/conversations/<id>/lead/           fill in (or correct) the lead form    (Bearer visitor token)

Every door checks the embed and the origin the same way (embeds.selectors.widget_embed_admit / visitor_admit) and is
rate limited per IP, per embed and per workspace. Errors use the one shape; a refused frame is served with
`frame-ancestors 'none'`, so a page that is not allowed gets nothing to show.

How the host page's origin is proved: the loader passes `o=location.origin` in the frame URL. The frame is served
only if `o` is an allowed origin, and with `Content-Security-Policy: frame-ancestors <o>` — so the browser itself
refuses to show it inside any page of another origin. Only a frame that mounted can ask for a visitor token (the
session call must come from the frame's own origin), and that token carries `o`. A forged `o`, Origin or Referer
from another site therefore yields a frame that never renders and no token.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config.errors import ApplicationError, ErrorCode, NotFound, PermissionDenied, ValidationFailed, error_json_response
from embeds import limits, selectors, services
from embeds.errors import EmbedErrorCode
from embeds.origins import request_origin_parse
from embeds.security import VisitorClaims
from embeds.theme import language_resolve

LOADER_SOURCE = Path(settings.BASE_DIR) / "static" / "widget" / "loader.js"
MAX_BODY_BYTES = 8192
CONVERSATIONS_LISTED = 50


def cors_allowed_by_embed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """django-cors-headers' check_request_enabled signal: the config view sets this after it admitted the request's
    Origin for the embed; every other widget response gets no Access-Control-Allow-Origin."""
    return bool(getattr(request, "widget_cors_allowed", False))


def _error(error: ApplicationError) -> JsonResponse:
    response = error_json_response(error)
    response["Cache-Control"] = "no-store"
    return response


# --- the loader --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Loader:
    mtime: float
    body: bytes
    gzipped: bytes
    etag: str


_loader_cache: dict[str, _Loader] = {}


def loader_bytes() -> _Loader:
    """The loader's source, gzipped once and kept in memory (re-read when the file changes)."""
    mtime = LOADER_SOURCE.stat().st_mtime
    cached = _loader_cache.get("loader")
    if cached is None or cached.mtime != mtime:
        body = LOADER_SOURCE.read_bytes()
        cached = _loader_cache["loader"] = _Loader(
            mtime=mtime, body=body, gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        )
    return cached


@require_GET
def widget_loader(request: HttpRequest) -> HttpResponse:
    """The same small script for every embed and page: it holds no per-embed data, so it can be cached long (the
    URL's /v1/ is its compatibility promise; the frame, which holds the logic, is not cached)."""
    loader = loader_bytes()
    if request.headers.get("If-None-Match") == loader.etag:
        response: HttpResponse = HttpResponseNotModified()
    else:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        response = HttpResponse(loader.gzipped if gzipped else loader.body,
                                content_type="text/javascript; charset=utf-8")
        if gzipped:
            response["Content-Encoding"] = "gzip"
    response["ETag"] = loader.etag
    response["Cache-Control"] = (
        f"public, max-age={settings.WIDGET_LOADER_MAX_AGE}, stale-while-revalidate={7 * 86400}"
    )
    response["Cross-Origin-Resource-Policy"] = "cross-origin"  # host pages with COEP may load it
    patch_vary_headers(response, ["Accept-Encoding"])
    return response


# --- config ------------------------------------------------------------------------------------------------------
@require_GET
def widget_config(request: HttpRequest, public_key: str) -> HttpResponse:
    """May a page of this Origin show the widget, and how does its launcher look. The answer is readable only by that
    page (CORS per embed); a page that is not allowed gets 403 and no CORS header, so the loader draws nothing."""
    origin = request.headers.get("Origin")
    try:
        limits.http_limits_take(request, public_key=public_key)
        embed = selectors.widget_embed_admit(public_key=public_key, origin=origin, cached=True)
    except ApplicationError as error:
        return _error(error)
    language = language_resolve(configured=embed.language, requested=request.GET.get("lang"),
                                accept_language=request.headers.get("Accept-Language", ""))
    request.widget_cors_allowed = True  # type: ignore[attr-defined]
    response = JsonResponse(selectors.embed_loader_config(embed=embed, language=language))
    # Short: an origin removed or a widget switched off takes effect within a minute at this door (at once at the
    # frame, session and socket doors, which don't cache).
    response["Cache-Control"] = f"private, max-age={settings.WIDGET_CONFIG_MAX_AGE}"
    patch_vary_headers(response, ["Origin", "Accept-Language"])
    return response


# --- the frame ---------------------------------------------------------------------------------------------------
def _referer_origin(request: HttpRequest) -> str | None:
    referer = request.headers.get("Referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    return request_origin_parse(f"{parts.scheme}://{parts.netloc}") if parts.scheme and parts.netloc else None


def _frame_refused(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    response = render(request, "embeds/frame_refused.html", {"error": error}, status=error.status_code)
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    response["Cache-Control"] = "no-store"
    return response


@xframe_options_exempt  # framing is governed by the CSP frame-ancestors below, per allowed origin
@require_GET
def widget_frame(request: HttpRequest, public_key: str) -> HttpResponse:
    claimed = request.GET.get("o")
    try:
        limits.http_limits_take(request, public_key=public_key)
        destination = request.headers.get("Sec-Fetch-Dest")
        if destination and destination not in ("iframe", "frame"):
            raise PermissionDenied("The chat opens inside the website that shows it.", code=EmbedErrorCode.FRAME_ONLY)
        embed = selectors.widget_embed_admit(public_key=public_key, origin=claimed)
        host_origin = request_origin_parse(claimed)
        referer = _referer_origin(request)
        if referer is not None and referer != host_origin:
            raise PermissionDenied("The page showing the chat is not the one it claims to be.",
                                   code=EmbedErrorCode.ORIGIN_NOT_ALLOWED)
    except ApplicationError as error:
        return _frame_refused(request, error)
    assert host_origin is not None
    language = language_resolve(configured=embed.language, requested=request.GET.get("lang"),
                                accept_language=request.headers.get("Accept-Language", ""))
    config = selectors.embed_frame_config(embed=embed, language=language, host_origin=host_origin)
    nonce = secrets.token_urlsafe(16)
    response = render(request, "embeds/frame.html", {
        "embed": embed, "config": config, "language": language, "nonce": nonce, "colors": selectors.embed_colors(embed=embed),
        "strings": config["strings"],
    })
    socket_origin = ("wss://" if request.is_secure() else "ws://") + request.get_host()
    response["Content-Security-Policy"] = "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        f"style-src 'self' 'nonce-{nonce}'",
        "img-src 'self' https: data:",
        f"connect-src 'self' {socket_origin}",
        f"frame-ancestors {host_origin}",
        "base-uri 'none'",
        "form-action 'none'",
    ])
    response["Cache-Control"] = "private, no-cache"
    response["Referrer-Policy"] = "no-referrer"
    return response


# --- calls of the frame ------------------------------------------------------------------------------------------
def _from_frame(request: HttpRequest, *, require_origin: bool) -> None:
    """The request was made by a page of this host (the frame), as far as the browser tells: a page elsewhere
    can't call these endpoints from a browser, whatever token it holds."""
    origin = request.headers.get("Origin")
    own = request.get_host().lower()
    if (origin and urlsplit(origin).netloc.lower() != own) or (require_origin and not origin):
        raise PermissionDenied("Only the chat frame may call this.", code=EmbedErrorCode.FRAME_ONLY)
    site = request.headers.get("Sec-Fetch-Site")
    if site and site != "same-origin":
        raise PermissionDenied("Only the chat frame may call this.", code=EmbedErrorCode.FRAME_ONLY)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY_BYTES:
        raise ValidationFailed("The request is too large.", code=ErrorCode.MALFORMED_REQUEST)
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except ValueError:
        raise ValidationFailed("The body is not valid JSON.", code=ErrorCode.MALFORMED_REQUEST) from None
    if not isinstance(data, dict):
        raise ValidationFailed("The body is a JSON object.", code=ErrorCode.MALFORMED_REQUEST)
    return data


def _visitor(request: HttpRequest) -> VisitorClaims:
    _from_frame(request, require_origin=False)
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    claims, _embed = selectors.visitor_admit(token=token)
    limits.http_limits_take(request, public_key=claims.public_key)
    return claims


def _string_or_none(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"`{name}` is a string.", details={"fields": {name: ["A string."]}})
    return value


@csrf_exempt  # no cookies are used: the frame's own Origin and the visitor token are the credentials
@require_POST
def widget_session(request: HttpRequest, public_key: str) -> HttpResponse:
    """A visitor token for the frame, bound to the embed, the visitor and the host page's origin; with
    `user_id` + `user_hash` + `user_ts`, to the verified user as well."""
    try:
        _from_frame(request, require_origin=True)
        limits.session_limit_take(request)
        limits.http_limits_take(request, public_key=public_key)
        data = _json_body(request)
        host_origin = _string_or_none(data, "host_origin")
        embed = selectors.widget_embed_admit(public_key=public_key, origin=host_origin)
        session = services.visitor_session_start(
            embed=embed, host_origin=request_origin_parse(host_origin) or "",
            visitor_credential=_string_or_none(data, "visitor"),
            user_id=_string_or_none(data, "user_id"), user_hash=_string_or_none(data, "user_hash"),
            user_ts=data.get("user_ts"),  # Unix seconds, a number or a string of digits (checked by the service)
        )
    except ApplicationError as error:
        return _error(error)
    response = JsonResponse({
        "token": session.token, "expires_in": settings.WIDGET_TOKEN_TTL, "visitor": session.visitor,
        "verified": session.claims.verified,
    })
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
def widget_conversations(request: HttpRequest) -> HttpResponse:
    try:
        claims = _visitor(request)
        if request.method == "POST":
            data = _json_body(request)
            lead = data.get("lead")
            conversation = services.visitor_conversation_start(
                claims=claims, email=(_string_or_none(data, "email") or "").strip(), lead=lead,
            )
            response = JsonResponse({"conversation": selectors.visitor_conversation_payload(conversation)}, status=201)
        else:
            conversations = selectors.visitor_conversation_list(claims=claims)[:CONVERSATIONS_LISTED]
            response = JsonResponse({
                "verified": claims.verified,
                "conversations": [selectors.visitor_conversation_payload(c) for c in conversations],
            })
    except ApplicationError as error:
        return _error(error)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def widget_conversation_messages(request: HttpRequest, conversation_id: str) -> HttpResponse:
    try:
        claims = _visitor(request)
        conversation = selectors.visitor_conversation_get(claims=claims, public_id=conversation_id)
        if conversation is None:
            raise NotFound("No such conversation.")
        response = JsonResponse({
            "conversation": selectors.visitor_conversation_payload(conversation),
            "messages": selectors.visitor_message_list(conversation=conversation),
        })
    except ApplicationError as error:
        return _error(error)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_http_methods(["GET", "PUT"])
def widget_conversation_lead(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """The lead form of one of the visitor's own conversations: what they told us (GET), or their answers (PUT),
    checked against the widget's form (400 lead_invalid / lead_form_off). Another visitor's conversation is 404."""
    try:
        claims = _visitor(request)
        conversation = selectors.visitor_conversation_get(claims=claims, public_id=conversation_id)
        embed = selectors.embed_get(embed_id=claims.embed_id)
        if conversation is None or embed is None:
            raise NotFound("No such conversation.")
        if request.method == "PUT":
            lead = services.visitor_lead_submit(claims=claims, conversation=conversation, embed=embed,
                                                data=_json_body(request).get("lead"))
        else:
            lead = selectors.visitor_lead_get(conversation=conversation)
        response = JsonResponse({"lead": selectors.visitor_lead_payload(lead)})
    except ApplicationError as error:
        return _error(error)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def widget_conversation_followups(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """Up to 3 follow-up questions for the last answer of one of the visitor's own conversations, from their
    widget's pool only (embeds.followups); `[]` when the widget doesn't show them. Asked by the frame after
    `agent_completed`, so the answer never waits for it."""
    from embeds.followups import conversation_followups_suggest

    try:
        claims = _visitor(request)
        conversation = selectors.visitor_conversation_get(claims=claims, public_id=conversation_id)
        embed = selectors.embed_get(embed_id=claims.embed_id)
        if conversation is None or embed is None:
            raise NotFound("No such conversation.")
        response = JsonResponse({"followups": conversation_followups_suggest(embed=embed, conversation=conversation)})
    except ApplicationError as error:
        return _error(error)
    response["Cache-Control"] = "no-store"
    return response
