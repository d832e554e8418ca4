"""Users, memberships, invitations, API keys and the audit log. Writes only; reads are in selectors."""
from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import password_validation
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, AuditEntry, Invitation, Membership, User
from accounts.roles import ASSIGNABLE_BY, DEFAULT_SCOPES, SCOPES, Role
from accounts.signals import membership_changed
from config.errors import (
    ApplicationError,
    Conflict,
    ErrorCode,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from tenants import billing
from tenants.models import Workspace
from tenants.selectors import workspace_url
from tenants.services import ProvisionResult, workspace_create

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "ccg"
HANDOFF_SALT = "accounts.handoff"
HANDOFF_MAX_AGE = 120


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- audit -------------------------------------------------------------------------------------------------------


def audit_record(
    *, workspace: Workspace | None, actor: User | None, action: str, target: str = "", data: dict[str, Any] | None = None,
    actor_label: str | None = None,
) -> AuditEntry:
    """Record who did what. Every app calls this for its own actions (document.deleted, embed.origins_changed, ...):
    `actor` is the user (None for the system or an operator, then say who in `actor_label`), `action` a dotted verb,
    `target` what it was done to (shown in the log and the CSV export), `data` the details (before/after)."""
    return AuditEntry.objects.create(
        workspace=workspace,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=(actor_label or (str(actor) if actor is not None else "system"))[:200],
        action=action,
        target=target[:200],
        data=data or {},
    )


# --- users -------------------------------------------------------------------------------------------------------


def email_normalize(email: str) -> str:
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ValidationFailed("Enter a valid email address.", details={"field": "email"}) from None
    return email


def password_check(password: str, *, user: User | None = None) -> None:
    try:
        password_validation.validate_password(password or "", user=user)
    except DjangoValidationError as exc:
        raise ValidationFailed(
            " ".join(exc.messages), code=ErrorCode.WEAK_PASSWORD, details={"field": "password", "problems": exc.messages}
        ) from None


def user_create(*, email: str, password: str, full_name: str = "") -> User:
    email = email_normalize(email)
    if User.objects.filter(email=email).exists():
        raise Conflict("An account with this email exists; log in instead.", code=ErrorCode.EMAIL_TAKEN)
    password_check(password, user=User(email=email, full_name=full_name))
    try:
        with transaction.atomic():
            return User.objects.create_user(email=email, password=password, full_name=full_name.strip()[:150])
    except IntegrityError:
        raise Conflict("An account with this email exists; log in instead.", code=ErrorCode.EMAIL_TAKEN) from None


# --- workspaces and memberships ------------------------------------------------------------------------------------


def workspace_signup(
    *,
    email: str,
    password: str,
    workspace_name: str,
    slug: str | None = None,
    full_name: str = "",
    plan: str = "free",
    domain: str | None = None,
    existing_user_ok: bool = False,
) -> tuple[User, ProvisionResult]:
    """A new workspace with its owner, in one transaction. The owner's account is created unless it exists and
    `existing_user_ok` (operators adding a workspace for a known user)."""
    from tenants.services import workspace_slug_suggest

    email = email_normalize(email)
    with transaction.atomic():
        user = User.objects.filter(email=email).first()
        if user is None:
            user = user_create(email=email, password=password, full_name=full_name)
        elif not existing_user_ok:
            raise Conflict("An account with this email exists; log in instead.", code=ErrorCode.EMAIL_TAKEN)
        result = workspace_create(
            slug=slug or workspace_slug_suggest(workspace_name), name=workspace_name, plan=plan, domain=domain
        )
        Membership.objects.create(user=user, workspace=result.workspace, role=Role.OWNER)
        audit_record(workspace=result.workspace, actor=user, action="workspace.created", target=result.workspace.slug)
    return user, result


def seats_used(*, workspace: Workspace, excluding_email: str | None = None) -> int:
    """Seats in use: members plus pending invitations (an invitation holds its seat until it is accepted, revoked or
    expires). `excluding_email` leaves out that person's pending invitation (it is being accepted or replaced)."""
    pending = Invitation.objects.filter(
        workspace=workspace, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    )
    if excluding_email:
        pending = pending.exclude(email=excluding_email)
    return Membership.objects.filter(workspace=workspace).count() + pending.count()


def _seat_check(workspace: Workspace, email: str) -> None:
    """Refuse (plan_limit) a new member or invitation beyond the plan's seats. Call inside atomic(): the check and
    the insert happen under one lock per workspace, so two invitations can't both take the last seat."""
    billing.plan_limit_lock(workspace=workspace, meter="seats")
    billing.plan_limit_check(workspace=workspace, meter="seats", adding=1,
                             used=seats_used(workspace=workspace, excluding_email=email))


def membership_create(*, workspace: Workspace, user: User, role: str) -> Membership:
    with transaction.atomic():
        if Membership.objects.filter(workspace=workspace, user=user).exists():
            raise Conflict("This person is already a member.", details={"email": user.email})
        _seat_check(workspace, user.email)
        membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
    if not created:
        raise Conflict("This person is already a member.", details={"email": user.email})
    return membership


def _check_can_assign(actor_role: str, role: str) -> None:
    allowed = ASSIGNABLE_BY.get(Role(actor_role), frozenset())
    if Role(role) not in allowed:
        raise PermissionDenied(f"A {actor_role} can't give the {role} role.")


def _membership_changed_on_commit(workspace: Workspace, user_id: int) -> None:
    """Open sockets of this member re-check what they may do once the change is committed (chat listens)."""
    transaction.on_commit(lambda: membership_changed.send(sender=Membership, workspace=workspace, user_id=user_id))


def _owner_count(workspace: Workspace) -> int:
    return Membership.objects.filter(workspace=workspace, role=Role.OWNER).count()


def membership_role_change(*, membership: Membership, role: str, actor: User, actor_role: str) -> Membership:
    if role not in Role.__members__.values():
        raise ValidationFailed("Unknown role.", details={"field": "role", "allowed": [r.value for r in Role]})
    _check_can_assign(actor_role, role)
    if membership.role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can change an owner's role.")
    with transaction.atomic():
        Membership.objects.select_for_update().filter(workspace=membership.workspace, role=Role.OWNER).exists()
        if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(membership.workspace) <= 1:
            raise Conflict("A workspace always has an owner; make someone else owner first.", code=ErrorCode.LAST_OWNER)
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            workspace=membership.workspace, actor=actor, action="member.role_changed",
            target=membership.user.email, data={"from": old, "to": role},
        )
        _membership_changed_on_commit(membership.workspace, membership.user_id)
    return membership


def membership_remove(*, membership: Membership, actor: User, actor_role: str) -> None:
    if membership.role == Role.OWNER and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    with transaction.atomic():
        Membership.objects.select_for_update().filter(workspace=membership.workspace, role=Role.OWNER).exists()
        if membership.role == Role.OWNER and _owner_count(membership.workspace) <= 1:
            raise Conflict("A workspace always has an owner; make someone else owner first.", code=ErrorCode.LAST_OWNER)
        audit_record(workspace=membership.workspace, actor=actor, action="member.removed", target=membership.user.email)
        _membership_changed_on_commit(membership.workspace, membership.user_id)
        membership.delete()


def workspace_ownership_transfer(*, workspace: Workspace, to_membership: Membership, actor: User) -> Membership:
    """Hand the workspace to another member: they become owner, the acting owner becomes admin, in one transaction
    (the new owner exists before the old one steps down, so the workspace always has an owner)."""
    if to_membership.workspace_id != workspace.pk:
        raise NotFound("No such member.")
    if to_membership.user_id == actor.pk:
        raise ValidationFailed("You are an owner already; choose another member.", details={"field": "membership_id"})
    with transaction.atomic():
        # Both rows locked, in id order (no deadlock with a concurrent transfer the other way).
        rows = list(
            Membership.objects.select_for_update().select_related("user")
            .filter(workspace=workspace).filter(Q(pk=to_membership.pk) | Q(user=actor)).order_by("pk")
        )
        mine = next((m for m in rows if m.user_id == actor.pk), None)
        target = next((m for m in rows if m.pk == to_membership.pk), None)
        if mine is None or mine.role != Role.OWNER:
            raise PermissionDenied("Only an owner can hand over ownership.")
        if target is None:
            raise NotFound("No such member.")
        previous = target.role
        target.role = Role.OWNER
        target.save(update_fields=["role"])
        mine.role = Role.ADMIN
        mine.save(update_fields=["role"])
        _membership_changed_on_commit(workspace, mine.user_id)
        audit_record(
            workspace=workspace, actor=actor, action="workspace.ownership_transferred", target=target.user.email,
            data={"from": actor.email, "to": target.user.email, "previous_role": previous, "former_owner_now": "admin"},
        )
    return target


# --- invitations ---------------------------------------------------------------------------------------------------


def invitation_create(*, workspace: Workspace, email: str, role: str, invited_by: User, actor_role: str) -> tuple[Invitation, str]:
    email = email_normalize(email)
    if role not in Role.__members__.values():
        raise ValidationFailed("Unknown role.", details={"field": "role"})
    _check_can_assign(actor_role, role)
    if Membership.objects.filter(workspace=workspace, user__email=email).exists():
        raise Conflict("This person is already a member.", details={"email": email})
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        _seat_check(workspace, email)
        Invitation.objects.filter(workspace=workspace, email=email, accepted_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        invitation = Invitation.objects.create(
            workspace=workspace, email=email, role=role, token_hash=_sha256(token), invited_by=invited_by,
            expires_at=timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS),
        )
        audit_record(workspace=workspace, actor=invited_by, action="member.invited", target=email, data={"role": role})
        link = workspace_url(workspace=workspace, path=f"/invitations/{token}/")
        transaction.on_commit(
            lambda: send_mail(
                subject=f"You're invited to {workspace.name} on CustomerCareGPT",
                message=f"{invited_by.display_name} invited you to join {workspace.name} as {role}.\n\n"
                f"Accept the invitation: {link}\n\nThe link works for {settings.INVITATION_TTL_DAYS} days.",
                from_email=None,
                recipient_list=[email],
            )
        )
    return invitation, token


def invitation_for_token(*, workspace: Workspace, token: str) -> Invitation:
    invitation = Invitation.objects.filter(workspace=workspace, token_hash=_sha256(token or "")).first()
    if invitation is None or not invitation.is_pending:
        raise NotFound("This invitation is not valid any more.", code=ErrorCode.INVITATION_INVALID)
    return invitation


def invitation_accept(
    *, workspace: Workspace, token: str, user: User | None = None, password: str = "", full_name: str = ""
) -> Membership:
    """Accept as the logged-in user (whose email must match), or create the invited account with a password."""
    with transaction.atomic():
        invitation = invitation_for_token(workspace=workspace, token=token)
        Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
        if user is not None and user.is_authenticated:
            if user.email != invitation.email:
                raise PermissionDenied(f"This invitation is for {invitation.email}; log in as that account.")
        else:
            user = User.objects.filter(email=invitation.email).first()
            if user is not None:
                raise NotAuthenticated("You already have an account: log in to accept.")
            user = user_create(email=invitation.email, password=password, full_name=full_name)
        membership = membership_create(workspace=workspace, user=user, role=invitation.role)
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        audit_record(workspace=workspace, actor=user, action="member.joined", target=user.email, data={"role": invitation.role})
    return membership


def invitation_revoke(*, invitation: Invitation, actor: User) -> None:
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(workspace=invitation.workspace, actor=actor, action="invitation.revoked", target=invitation.email)


# --- API keys ------------------------------------------------------------------------------------------------------


def api_key_create(
    *, workspace: Workspace, name: str, scopes: list[str] | tuple[str, ...] | None = None,
    created_by: User | None = None, expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is shown once and only its hash is kept. With `expires_at` (in the future)
    the key is refused from then on (401 api_key_expired)."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationFailed("A key needs a name of at most 100 characters.", details={"field": "name"})
    if expires_at is not None and (timezone.is_naive(expires_at) or expires_at <= timezone.now()):
        raise ValidationFailed("A key's expiry is a time in the future, with its time zone.",
                               details={"fields": {"expires_at": ["A future date and time with a time zone."]}})
    scopes = list(dict.fromkeys(scopes or DEFAULT_SCOPES))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationFailed("Unknown scope.", details={"field": "scopes", "unknown": unknown, "allowed": list(SCOPES)})
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    raw = f"{API_KEY_PREFIX}_{prefix}_{secret}"
    with transaction.atomic():
        key = ApiKey.objects.create(
            workspace=workspace, name=name, prefix=prefix, key_hash=_sha256(raw), scopes=scopes, created_by=created_by,
            expires_at=expires_at,
        )
        audit_record(workspace=workspace, actor=created_by, action="api_key.created", target=name,
                     data={"scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None})
    return key, raw


def api_key_revoke(*, key: ApiKey, actor: User | None) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(workspace=key.workspace, actor=actor, action="api_key.revoked", target=key.name)
    return key


def api_key_authenticate(*, workspace: Workspace, raw: str) -> ApiKey:
    """The active key of this workspace that `raw` is, or an ApplicationError (401) with a stable code."""
    parts = (raw or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2] or len(raw) > 200:
        raise ApplicationError("The API key is malformed.", code=ErrorCode.INVALID_API_KEY, status_code=401)
    key = ApiKey.objects.filter(workspace=workspace, prefix=parts[1]).first()
    if key is None or not secrets.compare_digest(key.key_hash, _sha256(raw.strip())):
        raise ApplicationError("The API key is not valid for this workspace.", code=ErrorCode.INVALID_API_KEY, status_code=401)
    if key.revoked_at is not None:
        raise ApplicationError("The API key was revoked.", code=ErrorCode.API_KEY_REVOKED, status_code=401)
    now = timezone.now()
    if key.expires_at is not None and key.expires_at <= now:
        raise ApplicationError("The API key has expired; create a new one.", code=ErrorCode.API_KEY_EXPIRED,
                               status_code=401)
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):  # don't write on every request
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- cross-host login handoff --------------------------------------------------------------------------------------


def login_handoff_token(*, user: User, workspace: Workspace) -> str:
    """A short-lived, single-use token that logs `user` into `workspace`'s host (sessions are per host)."""
    return signing.dumps({"u": user.pk, "w": workspace.pk, "n": secrets.token_hex(8)}, salt=HANDOFF_SALT)


def login_handoff_redeem(*, token: str, workspace: Workspace) -> User:
    try:
        data = signing.loads(token, salt=HANDOFF_SALT, max_age=HANDOFF_MAX_AGE)
    except signing.BadSignature:
        raise NotAuthenticated("This sign-in link has expired; please log in again.") from None
    if data.get("w") != workspace.pk or not cache.add(f"handoff:{data.get('n')}", 1, HANDOFF_MAX_AGE):
        raise NotAuthenticated("This sign-in link is not valid here; please log in again.")
    user = User.objects.filter(pk=data.get("u"), is_active=True).first()
    if user is None or not Membership.objects.filter(user=user, workspace=workspace).exists():
        raise PermissionDenied("You are not a member of this workspace.", code=ErrorCode.NOT_A_MEMBER)
    return user


# --- billing hooks (tenants.billing is a lower floor: it tells us, we act) ---------------------------------------


def _billing_change_audit(sender: Any, *, workspace: Workspace, actor: Any, action: str, target: str = "",
                          data: dict[str, Any] | None = None, **kwargs: Any) -> None:
    user = actor if isinstance(actor, User) else None
    label = None if user else str((data or {}).get("by") or actor or "system")
    audit_record(workspace=workspace, actor=user, action=action, target=target, data=data or {}, actor_label=label)


def _usage_threshold_email(sender: Any, *, workspace: Workspace, meter: str, label: str, threshold: int, used: int,
                           limit: int, period_end: Any, **kwargs: Any) -> None:
    owners = list(
        Membership.objects.filter(workspace=workspace, role=Role.OWNER).values_list("user__email", flat=True)
    )
    if not owners:
        return
    link = workspace_url(workspace=workspace, path=billing.BILLING_PATH)
    what = label.lower()
    if threshold >= 100:
        subject = f"{workspace.name}: you have reached your plan's limit of {what}"
    else:
        subject = f"{workspace.name}: {threshold}% of your plan's {what} used"
    send_mail(
        subject=subject,
        message=f"{workspace.name} uses {used} of {limit} {what} on its plan"
        f"{' this billing period' if meter == billing.CREDITS else ''}.\n\n"
        f"{billing.METERS[meter].how_to_lift}\n\nUsage and plans: {link}\n"
        f"The billing period renews on {period_end:%Y-%m-%d}.",
        from_email=None,
        recipient_list=owners,
    )


def _spend_spike_alert(sender: Any, *, workspace: Workspace, spent: int, baseline: float, multiple: float,
                       hour_start: Any, **kwargs: Any) -> None:
    """Owners hear about an unusual hour of spending (a script talking to the widget, a loop in an integration)."""
    audit_record(workspace=workspace, actor=None, action="billing.spend_spike", target=f"{hour_start:%Y-%m-%d %H}:00",
                 data={"spent": spent, "hourly_average": round(baseline, 1), "multiple": multiple},
                 actor_label="system")
    owners = list(
        Membership.objects.filter(workspace=workspace, role=Role.OWNER).values_list("user__email", flat=True)
    )
    if not owners:
        return
    link = workspace_url(workspace=workspace, path=billing.BILLING_PATH)
    send_mail(
        subject=f"{workspace.name}: unusual spending, {spent} answers since {hour_start:%H}:00 UTC",
        message=f"{workspace.name} has used {spent} answers since {hour_start:%Y-%m-%d %H}:00 UTC, more than "
        f"{multiple:g} times its hourly average of the last day ({baseline:.1f}).\n\nIf you don't expect this, look "
        f"at the conversations of your chat widgets and API keys. Usage: {link}",
        from_email=None,
        recipient_list=owners,
    )


def billing_hooks_connect() -> None:
    """Called from AccountsConfig.ready(): audit billing changes, email owners about usage, count seats."""
    billing.billing_changed.connect(_billing_change_audit, dispatch_uid="accounts.billing_change_audit")
    billing.usage_threshold_reached.connect(_usage_threshold_email, dispatch_uid="accounts.usage_threshold_email")
    billing.spend_spike_detected.connect(_spend_spike_alert, dispatch_uid="accounts.spend_spike_alert")
    billing.usage_counter_register("seats", lambda workspace: seats_used(workspace=workspace))
