"""Writes of embeds and of widget visitors. Every function runs in the current workspace schema (the caller's).

State changes of an embed are atomic and leave an audit row (accounts.services.audit_record): created, updated
(with the origins before and after when they change), key rotated, identity secret rotated or disabled,
deactivated, activated. Secrets never go into the audit log.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone

from accounts.services import audit_record
from chat.authority import socket_authority_revoke_on_commit
from chat.models import Channel, Conversation
from chat.services import conversation_start
from config.errors import ApplicationError, NotAuthenticated, PermissionDenied, ValidationFailed
from embeds import signals
from embeds.errors import EmbedErrorCode
from embeds.leads import LEAD_FORM_DEFAULT, lead_form_clean, lead_form_public, lead_values_clean, \
    starter_questions_clean
from embeds.models import Embed
from embeds.origins import origins_clean
from embeds.selectors import EMBEDS_VERSION_KEY
from embeds.security import (
    VisitorClaims,
    identity_hash_valid,
    identity_secret_decrypt,
    identity_secret_encrypt,
    identity_secret_new,
    identity_timestamp_parse,
    public_key_new,
    user_id_valid,
    visitor_credential_issue,
    visitor_credential_read,
    visitor_id_new,
    visitor_token_issue,
)
from embeds.theme import BEHAVIOUR_DEFAULTS, THEME_DEFAULTS, ThemeError, behaviour_clean, text_clean, theme_clean

WIDGETS_METER = "widgets"
logger = logging.getLogger(__name__)


def _workspace() -> Any:
    tenant = getattr(connection, "tenant", None)
    if tenant is None or connection.schema_name == "public":
        raise ApplicationError("Widgets belong to a workspace; no workspace is selected.", code="wrong_schema")
    return tenant


def _changed() -> None:
    """Tell every process's config cache (embeds.selectors.embed_by_public_key_cached) once the change is committed."""
    transaction.on_commit(lambda: cache.set(EMBEDS_VERSION_KEY, secrets.token_hex(8), timeout=None))


def _audit(embed: Embed, actor: Any, action: str, data: dict[str, Any] | None = None) -> None:
    """A user acts as themselves; an API key or an operator command is named in the label. Every audited change is
    a change the widget's doors must see: the embeds version moves with it, and the embed's open visitor sockets
    re-check their token against it (chat.authority: a deactivated embed or a removed origin closes them)."""
    _changed()
    socket_authority_revoke_on_commit(schema_name=connection.schema_name, embed_id=embed.pk)
    user = actor if getattr(actor, "pk", None) and getattr(actor, "is_authenticated", False) else None
    audit_record(
        workspace=_workspace(), actor=user, action=action, target=f"{embed.name} ({embed.public_key})",
        data=data or {}, actor_label=None if user is not None else (str(actor) if actor is not None else "operator"),
    )


def _widgets_limit_check(workspace: Any) -> None:
    """The plan's widget limit (tenants.billing), serialised so two creations can't both take the last slot.
    Only active widgets count: a deactivated one can be switched on again if the plan has room."""
    from tenants.billing import plan_limit_check, plan_limit_lock

    plan_limit_lock(workspace=workspace, meter=WIDGETS_METER)
    plan_limit_check(workspace=workspace, meter=WIDGETS_METER, adding=1,
                     used=Embed.objects.filter(is_active=True).count())


def _fields_clean(
    *, name: Any = None, allowed_origins: Any = None, theme: dict[str, Any] | None = None,
    behaviour: dict[str, Any] | None = None, starter_questions: Any = None, lead_form: Any = None,
) -> dict[str, Any]:
    """The model fields these inputs set (only the ones given), or ValidationFailed with every problem at once."""
    values: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    if name is not None:
        try:
            values["name"] = text_clean(name, max_chars=100)
            if not values["name"]:
                errors["name"] = ["Give the widget a name, e.g. the website it is on."]
        except ThemeError as error:
            errors["name"] = [str(error)]
    if allowed_origins is not None:
        try:
            values["allowed_origins"] = origins_clean(allowed_origins)
        except ValidationFailed as error:
            errors.update(error.details["fields"])
    if theme is not None:
        if not isinstance(theme, dict):
            errors["theme"] = ["An object of theme fields."]
        else:
            cleaned, theme_errors = theme_clean(theme)
            values.update(cleaned)
            if theme_errors:
                errors["theme"] = theme_errors
    if behaviour is not None:
        if not isinstance(behaviour, dict):
            errors["behaviour"] = ["An object of behaviour switches."]
        else:
            cleaned_behaviour, behaviour_errors = behaviour_clean(behaviour)
            values.update(cleaned_behaviour)
            if behaviour_errors:
                errors["behaviour"] = behaviour_errors
    if starter_questions is not None:
        values["starter_questions"], starter_errors = starter_questions_clean(starter_questions)
        if starter_errors:
            errors["starter_questions"] = starter_errors
    if lead_form is not None:
        values["lead_form"], lead_errors = lead_form_clean(lead_form)
        if lead_errors:
            errors["lead_form"] = lead_errors
    if errors:
        code = EmbedErrorCode.ORIGIN_INVALID if set(errors) == {"allowed_origins"} else "invalid"
        raise ValidationFailed("The widget settings are not valid.", code=code, details={"fields": errors})
    return values


# --- embeds ------------------------------------------------------------------------------------------------------
def embed_create(
    *, name: str, allowed_origins: list[str] | str, theme: dict[str, Any] | None = None,
    behaviour: dict[str, Any] | None = None, created_by: Any = None, starter_questions: Any = None,
    lead_form: Any = None,
) -> Embed:
    """A new, active embed with a fresh public key. Raises ValidationFailed (origin_invalid, invalid) or
    QuotaExceeded plan_limit when the plan's widgets are all in use."""
    if allowed_origins is None:
        allowed_origins = []
    values = _fields_clean(name=name, allowed_origins=allowed_origins, theme=theme or {}, behaviour=behaviour or {},
                           starter_questions=starter_questions if starter_questions is not None else [],
                           lead_form=lead_form if lead_form is not None else LEAD_FORM_DEFAULT)
    workspace = _workspace()
    with transaction.atomic():
        _widgets_limit_check(workspace)
        embed = Embed.objects.create(
            public_key=public_key_new(), created_by=created_by if getattr(created_by, "pk", None) else None,
            **{**THEME_DEFAULTS, **BEHAVIOUR_DEFAULTS, **values},
        )
        _audit(embed, created_by, "embed.created", {"allowed_origins": embed.allowed_origins})
    _questions_check(embed)
    return embed


def _questions_check(embed: Embed) -> None:
    """Whether the knowledge base answers each starter question, checked once when they are saved (follow-ups
    offer only those: embeds.followups); later document changes are picked up lazily."""
    from embeds.followups import question_coverage_refresh

    if embed.starter_questions:
        question_coverage_refresh(embed=embed)


def embed_update(
    *, embed: Embed, actor: Any = None, name: str | None = None, allowed_origins: list[str] | str | None = None,
    theme: dict[str, Any] | None = None, behaviour: dict[str, Any] | None = None,
    identity_legacy_hashes: bool | None = None, starter_questions: Any = None, lead_form: Any = None,
) -> Embed:
    """Change what is given; a change of the allowed origins is recorded with the lists before and after.
    `identity_legacy_hashes`: accept user hashes without a timestamp (docs/widget.md "Identity verification")."""
    values = _fields_clean(name=name, allowed_origins=allowed_origins, theme=theme, behaviour=behaviour,
                           starter_questions=starter_questions, lead_form=lead_form)
    if identity_legacy_hashes is not None:
        values["identity_legacy_hashes"] = bool(identity_legacy_hashes)
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        before = {name: getattr(embed, name) for name in values}
        changed = {name: value for name, value in values.items() if before[name] != value}
        if not changed:
            return embed
        for field, value in changed.items():
            setattr(embed, field, value)
        embed.save(update_fields=[*changed, "updated_at"])
        if "allowed_origins" in changed:
            _audit(embed, actor, "embed.origins_changed",
                   {"before": before["allowed_origins"], "after": embed.allowed_origins})
        others = sorted(set(changed) - {"allowed_origins"})
        if others:
            _audit(embed, actor, "embed.updated", {"fields": others})
    if "starter_questions" in changed:
        _questions_check(embed)
    return embed


def embed_public_key_rotate(*, embed: Embed, actor: Any = None) -> Embed:
    """A new public key; the old one stops working at once (snippets with it show nothing, tokens minted under it
    are refused)."""
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        old = embed.public_key
        embed.public_key = public_key_new()
        embed.key_rotated_at = timezone.now()
        embed.save(update_fields=["public_key", "key_rotated_at", "updated_at"])
        _audit(embed, actor, "embed.key_rotated", {"old_public_key": old, "new_public_key": embed.public_key})
    return embed


def embed_identity_secret_rotate(*, embed: Embed, actor: Any = None) -> tuple[Embed, str]:
    """Turn identity verification on, or replace its secret: (embed, the new secret — shown once). Hashes made with
    the old secret stop verifying at once."""
    secret = identity_secret_new()
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        first = not embed.identity_secret_encrypted
        embed.identity_secret_encrypted = identity_secret_encrypt(secret)
        embed.identity_secret_hint = secret[-4:]
        embed.identity_secret_rotated_at = timezone.now()
        embed.save(update_fields=["identity_secret_encrypted", "identity_secret_hint", "identity_secret_rotated_at",
                                  "updated_at"])
        _audit(embed, actor, "embed.identity_enabled" if first else "embed.identity_secret_rotated",
               {"hint": embed.identity_secret_hint})
    return embed, secret


def embed_identity_disable(*, embed: Embed, actor: Any = None) -> Embed:
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        if not embed.identity_secret_encrypted:
            return embed
        embed.identity_secret_encrypted = ""
        embed.identity_secret_hint = ""
        embed.save(update_fields=["identity_secret_encrypted", "identity_secret_hint", "updated_at"])
        _audit(embed, actor, "embed.identity_disabled")
    return embed


def embed_deactivate(*, embed: Embed, actor: Any = None) -> Embed:
    """Switch the widget off everywhere: the loader draws nothing, the frame and sockets are refused."""
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        if not embed.is_active:
            return embed
        embed.is_active = False
        embed.deactivated_at = timezone.now()
        embed.save(update_fields=["is_active", "deactivated_at", "updated_at"])
        _audit(embed, actor, "embed.deactivated")
    return embed


def embed_activate(*, embed: Embed, actor: Any = None) -> Embed:
    workspace = _workspace()
    with transaction.atomic():
        embed = Embed.objects.select_for_update().get(pk=embed.pk)
        if embed.is_active:
            return embed
        _widgets_limit_check(workspace)
        embed.is_active = True
        embed.deactivated_at = None
        embed.save(update_fields=["is_active", "deactivated_at", "updated_at"])
        _audit(embed, actor, "embed.activated")
    return embed


# --- visitors ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisitorSession:
    token: str
    visitor: str  # the signed visitor credential the frame keeps
    claims: VisitorClaims


def _identity_timestamp_check(*, embed: Embed, user_ts: object) -> int | None:
    """The signed timestamp to verify with (None: the legacy form, where the embed still allows it); refuses one
    that is malformed, too old (WIDGET_IDENTITY_MAX_AGE) or too far ahead of our clock (WIDGET_IDENTITY_CLOCK_SKEW)."""
    if user_ts is None or user_ts == "":
        if embed.identity_legacy_hashes:
            return None
        raise PermissionDenied(
            "Sign the user id with a timestamp: user_hash = HMAC(secret, \"<user_ts>:<user_id>\"), and send user_ts.",
            code=EmbedErrorCode.IDENTITY_TIMESTAMP_REQUIRED,
        )
    timestamp = identity_timestamp_parse(user_ts)
    if timestamp is None:
        raise ValidationFailed("`user_ts` is the signing time in Unix seconds.",
                               code=EmbedErrorCode.IDENTITY_TIMESTAMP_INVALID,
                               details={"fields": {"user_ts": ["Unix seconds, an integer."]}})
    now = int(timezone.now().timestamp())
    skew, max_age = settings.WIDGET_IDENTITY_CLOCK_SKEW, settings.WIDGET_IDENTITY_MAX_AGE
    if timestamp > now + skew:
        raise PermissionDenied("`user_ts` is ahead of our clock; sign with your server's current time.",
                               code=EmbedErrorCode.IDENTITY_TIMESTAMP_INVALID,
                               details={"user_ts": timestamp, "now": now, "clock_skew": skew})
    if timestamp < now - max_age:
        raise PermissionDenied("This identity signature has expired; sign the user id again.",
                               code=EmbedErrorCode.IDENTITY_EXPIRED,
                               details={"user_ts": timestamp, "now": now, "max_age": max_age})
    return timestamp


def visitor_session_start(
    *, embed: Embed, host_origin: str, visitor_credential: str | None = None, user_id: str | None = None,
    user_hash: str | None = None, user_ts: object = None,
) -> VisitorSession:
    """A visitor token for a frame mounted on `host_origin` (already admitted for this embed). The visitor keeps
    their id if they present a credential we issued, else gets a new one. With `user_id`, `user_hash` and
    `user_ts`, the token carries the verified user id — only if the hash is the HMAC of `"<user_ts>:<user_id>"`
    under the embed's secret and `user_ts` is recent (or, on embeds that still allow it, the HMAC of the bare id)."""
    schema = connection.schema_name
    visitor_id = visitor_credential_read(schema=schema, credential=visitor_credential) or visitor_id_new()
    verified = ""
    if user_id is not None or user_hash is not None:
        if not embed.identity_secret_encrypted:
            raise PermissionDenied(
                "This widget does not verify identities; turn identity verification on first.",
                code=EmbedErrorCode.IDENTITY_NOT_CONFIGURED,
            )
        timestamp = _identity_timestamp_check(embed=embed, user_ts=user_ts)
        secret = identity_secret_decrypt(embed.identity_secret_encrypted)
        if secret is None or not user_id_valid(user_id) or \
                not identity_hash_valid(secret, user_id, user_hash or "", timestamp):
            raise PermissionDenied(
                "The user's identity could not be verified (user_hash is not the HMAC of user_ts:user_id).",
                code=EmbedErrorCode.IDENTITY_INVALID,
            )
        verified = str(user_id)
    claims = VisitorClaims(schema=schema, embed_id=embed.pk, public_key=embed.public_key, visitor_id=visitor_id,
                           origin=host_origin, user_id=verified)
    try:  # analytics listens (embeds/signals.py); nothing here is in a transaction, and a listener never fails us
        signals.widget_opened.send(sender=Embed, embed=embed, origin=host_origin, visitor_id=visitor_id)
    except Exception:
        logger.exception("embeds: a receiver of widget_opened failed")
    return VisitorSession(
        token=visitor_token_issue(claims), visitor=visitor_credential_issue(schema=schema, visitor_id=visitor_id),
        claims=claims,
    )


def visitor_conversation_start(
    *, claims: VisitorClaims, email: str = "", name: str = "", lead: Any = None, embed: Embed | None = None,
) -> Conversation:
    """A new widget conversation of this visitor (and of their verified user id, if any). With `lead` (the lead
    form's answers), they are validated against the embed's form first — nothing is created if they are refused;
    a form shown before the chat with a required field must be sent (ValidationFailed lead_invalid otherwise)."""
    values: dict[str, str] | None = None
    embed = embed or Embed.objects.filter(pk=claims.embed_id).first()
    form = lead_form_public(embed.lead_form if embed else {})
    if lead is None and form["when"] == "before_chat" and "required" in form["fields"].values():
        lead = {}  # the form comes first and asks for something: a chat can't start without it
    if lead is not None:
        values = lead_values_clean(form=form, data=lead)
    if email:
        try:
            validate_email(email)
        except DjangoValidationError:
            raise ValidationFailed("Enter a valid email address.", details={"fields": {"email": ["Not an email."]}}) \
                from None
    if not claims.visitor_id:
        raise NotAuthenticated("No visitor.", code=EmbedErrorCode.VISITOR_TOKEN_INVALID)
    with transaction.atomic():
        conversation = conversation_start(
            channel=Channel.WIDGET, visitor_id=claims.visitor_id, visitor_email=email[:254], visitor_name=name[:200],
            embed_id=claims.embed_id, origin=claims.origin, metadata={"verified": claims.verified},
        )
        if claims.user_id:
            # chat.services.conversation_start takes no verified identity (yet): set it in the same transaction.
            Conversation.objects.filter(pk=conversation.pk).update(verified_user_id=claims.user_id)
            conversation.verified_user_id = claims.user_id
        if values is not None and embed is not None:
            _visitor_lead_store(embed=embed, conversation=conversation, values=values)
    return conversation


def _visitor_lead_store(*, embed: Embed, conversation: Conversation, values: dict[str, str]) -> Any:
    from chat.services import conversation_lead_save

    form = lead_form_public(embed.lead_form)
    return conversation_lead_save(conversation=conversation, values=values, custom_label=form["custom_label"],
                                  stage=form["when"])


def visitor_lead_submit(*, claims: VisitorClaims, conversation: Conversation, embed: Embed, data: Any) -> Any:
    """The lead form filled in within an open conversation (the form shown when the visitor asks for a person, or
    a correction): validated against the embed's form, then stored on the conversation (chat.models.Lead).
    The caller has checked that the conversation is the visitor's (embeds.selectors.visitor_conversation_get)."""
    values = lead_values_clean(form=embed.lead_form, data=data)
    return _visitor_lead_store(embed=embed, conversation=conversation, values=values)
