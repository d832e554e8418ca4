"""The role matrix, written down once. Pages and endpoints name a permission; this says which roles hold it.

Tests generate the role × page/endpoint matrix from this module and the URL patterns, so it is the single truth.
"""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    AGENT = "agent"
    VIEWER = "viewer"


ROLE_CHOICES = [(role.value, role.value.capitalize()) for role in Role]
ALL_ROLES = frozenset(Role)
STAFF_ROLES = frozenset({Role.OWNER, Role.ADMIN})

# permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[Role]] = {
    "workspace.view": ALL_ROLES,  # the dashboard home, own profile
    "knowledge.view": ALL_ROLES,
    "knowledge.manage": STAFF_ROLES,
    "conversations.view": ALL_ROLES,
    "conversations.reply": frozenset({Role.OWNER, Role.ADMIN, Role.AGENT}),
    # Human handoff (issue #6): the inbox, join / reply as agent / notes / hand back / assign / close. People only:
    # no API-key scope grants it (an agent's messages carry the person's name).
    "conversations.handle": frozenset({Role.OWNER, Role.ADMIN, Role.AGENT}),
    "widgets.view": ALL_ROLES,
    "widgets.manage": STAFF_ROLES,
    "analytics.view": ALL_ROLES,
    "team.view": frozenset({Role.OWNER, Role.ADMIN, Role.AGENT}),
    "team.manage": STAFF_ROLES,
    "settings.view": STAFF_ROLES,
    "settings.manage": STAFF_ROLES,
    "billing.view": STAFF_ROLES,  # plan, usage, ledger, invoice preview
    "billing.manage": frozenset({Role.OWNER}),
    "ownership.transfer": frozenset({Role.OWNER}),
    "workspace.export": frozenset({Role.OWNER}),  # the whole workspace's data in one archive (docs/operations.md)
    "api_keys.manage": STAFF_ROLES,
    "audit.view": STAFF_ROLES,
    # Visitor data rights (issue #18): export or erase everything one widget visitor left. People only: no API-key
    # scope grants it (the audit log names who erased whom).
    "visitors.manage": STAFF_ROLES,
}

# API-key scopes grant permissions the same way roles do. A key never manages the team or other keys.
SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset(
        {"workspace.view", "knowledge.view", "conversations.view", "widgets.view", "analytics.view", "team.view",
         "billing.view"}
    ),
    "write": frozenset({"knowledge.manage", "widgets.manage", "conversations.reply", "settings.manage"}),
    "chat": frozenset({"conversations.view", "conversations.reply"}),
}
DEFAULT_SCOPES = ("read", "write", "chat")


def role_has_permission(role: str | None, permission: str) -> bool:
    if role is None:
        return False
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")  # fail closed on typos
    return Role(role) in PERMISSIONS[permission]


def scopes_have_permission(scopes: list[str] | tuple[str, ...], permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return any(permission in SCOPES.get(scope, ()) for scope in scopes)


def roles_with(permission: str) -> frozenset[Role]:
    return PERMISSIONS[permission]


# Who may grant which role: an admin can't make owners; only an owner can.
ASSIGNABLE_BY: dict[Role, frozenset[Role]] = {
    Role.OWNER: ALL_ROLES,
    Role.ADMIN: frozenset({Role.ADMIN, Role.AGENT, Role.VIEWER}),
}
