"""The role matrix, generated from accounts/roles.py and the workspace URLconf: every role (and every API-key scope)
against every protected page and endpoint.

For each route the permission is read off the view -- dashboard views carry `required_permission` (set by
@workspace_permission_required), DRF views have it as a class attribute, possibly a per-method dict -- and the
request must get through (2xx, a redirect after a form post, a validation error, or a 404 for an object that
deliberately doesn't exist) when the role holds the permission, and exactly 403 when it doesn't.

A view added without a permission fails `test_every_protected_view_declares_a_permission` (and the role runs, since
the permission can't be checked). Object ids the fixture didn't create are filled with ids that don't exist: the
request must still get through the permission check (404) or be refused (403) as the matrix says. A converter that
isn't an int, uuid or the workspace slug fails until `fill()` learns it.
"""
from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern
from django_tenants.utils import tenant_context

from accounts.permissions import view_permission
from accounts.roles import PERMISSIONS, SCOPES, Role, role_has_permission, scopes_have_permission
from accounts.services import api_key_create
from tests.factories import member
from tests.tenants.test_billing import workspace_on
from tests.test_isolation import tenant_routes

# Entry points anyone may reach: they authenticate people, describe the API, or answer probes.
PUBLIC_ROUTES = frozenset({
    "login/", "logout/", "auth/handoff/", "invitations/<str:token>/", "api/schema/", "api/docs/", "healthz", "readyz",
})
# The widget's own endpoints (PRODUCT.md: /widget/v1/...) serve the anonymous visitors of a customer's site; they are
# authorised by the embed's public key and allowed origins (embeds), not by workspace roles.
PUBLIC_PREFIXES = ("widget/",)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MISSING_ID = 987_654_321
# Through the permission check: success, a redirect after a form post, or a request-shape error (400; 415 from the
# upload endpoints, which take multipart only -- DRF parses the body after the permission check).
OK_WHEN_ALLOWED = {200, 201, 202, 204, 302, 400, 415}


@dataclass(frozen=True)
class Endpoint:
    route: str
    pattern: URLPattern
    is_api: bool
    # method -> permission; "*" for dashboard views, whose one permission guards every method
    permissions: dict[str, str | None]


def endpoints() -> list[Endpoint]:
    found = []
    for route, pattern in tenant_routes():
        if route in PUBLIC_ROUTES or route.startswith(PUBLIC_PREFIXES):
            continue
        view_class = getattr(pattern.callback, "view_class", None)
        if view_class is not None:
            methods = [m for m in METHODS if hasattr(view_class, m.lower())]
            permissions = {m: view_permission(view_class, m) for m in methods}
        else:
            permissions = {"*": getattr(pattern.callback, "required_permission", None)}
        found.append(Endpoint(route=route, pattern=pattern, is_api=view_class is not None, permissions=permissions))
    return found


def test_every_protected_view_declares_a_permission():
    missing = [f"{e.route} {method}" for e in endpoints() for method, perm in e.permissions.items() if perm is None]
    assert missing == [], f"views without a permission (add @workspace_permission_required / required_permission): {missing}"
    unknown = {perm for e in endpoints() for perm in e.permissions.values()} - set(PERMISSIONS)
    assert unknown == set(), f"permissions missing from accounts/roles.py: {unknown}"


def test_the_matrix_covers_the_billing_team_and_audit_routes():
    routes = {e.route for e in endpoints()}
    assert {"settings/billing/", "settings/billing/plan/", "settings/billing/overage/", "team/transfer/",
            "settings/audit-log/export/", "api/v1/usage/", "api/v1/usage/ledger/", "api/v1/plans/",
            "api/v1/subscription/", "api/v1/audit-log/export/", "api/v1/ownership-transfer/"} <= routes
    assert len(routes) >= 50


# --- the workspace under test and the objects its URLs point at --------------------------------------------------


@pytest.fixture(scope="module")
def matrix(django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        ws = workspace_on("pro")  # generous limits: the matrix is about roles, not plans
        users = {"owner": ws.owner, **{role: member(ws.workspace, role) for role in ("admin", "agent", "viewer")}}
        keys = {scope: api_key_create(workspace=ws.workspace, name=f"scope-{scope}", scopes=[scope])[1]
                for scope in SCOPES}
        with tenant_context(ws.workspace):
            from chat.services import conversation_start
            from documents.services import document_create_text

            document = document_create_text(title="Matrix", text=f"Returns within 30 days. {secrets.token_hex(4)}")
            conversation = conversation_start(channel="dashboard", created_by=ws.owner)
            visitor_id = f"v-matrix-{secrets.token_hex(4)}"  # a widget visitor: their data's export page and API
            conversation_start(channel="widget", visitor_id=visitor_id)
    # Reads go to real objects; writes to objects that don't exist (the permission is checked first, and the
    # matrix must not delete or change what the next role's requests look at).
    existing = {"document_id": document.pk, "conversation_id": conversation.public_id, "slug": ws.workspace.slug,
                "visitor_id": visitor_id}
    return {"ws": ws, "users": users, "keys": keys, "existing": existing}


def fill(endpoint: Endpoint, existing: dict[str, Any], *, write: bool) -> tuple[str, bool]:
    """The route with its arguments filled: reads point at real objects where the fixture made one, writes (and
    objects the fixture doesn't know) at ids that don't exist. Returns the path and whether it names a missing
    object (then the permission check must still pass -- a 404, never a 403)."""
    converters = endpoint.pattern.pattern.converters
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        name = match.group(2)
        kind = type(converters[name]).__name__
        if name == "slug" or (not write and name in existing):
            return str(existing[name])
        if name == "visitor_id":  # a visitor id is any string; one nobody has (erasing it would change the reads)
            missing = True
            return "v-matrix-missing"
        if kind not in ("IntConverter", "UUIDConverter"):
            raise AssertionError(f"the role matrix can't fill <{name}> ({kind}) in {endpoint.route}: teach fill()")
        missing = True
        return str(uuid.UUID(int=MISSING_ID) if kind == "UUIDConverter" else MISSING_ID)

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", value, endpoint.route), missing


def call(client, method: str, path: str):
    if method == "GET":
        return client.get(path)
    return getattr(client, method.lower())(path, data={}, content_type="application/json")


def exercise(client, endpoint: Endpoint, allowed_for: Any, existing: dict[str, Any]) -> list[str]:
    """Request `endpoint` with every method it serves; return what didn't match the matrix."""
    problems: list[str] = []
    if endpoint.is_api:
        plan = list(endpoint.permissions.items())
    else:
        # A dashboard view's one permission guards every method it serves: GET, or POST when it is POST-only.
        plan = [("GET", endpoint.permissions["*"])]
    while plan:
        method, permission = plan.pop(0)
        path, missing = fill(endpoint, existing, write=method != "GET")
        response = call(client, method, path)
        status = response.status_code
        allowed = allowed_for(permission)
        where = f"{method} {path} [{permission}]"
        if not endpoint.is_api and method == "GET" and status == 405:
            # A POST-only page (its method check may sit outside the permission decorator): judge it by its POST.
            plan.append(("POST", permission))
            continue
        through = (status == 200 if method == "GET" else status in OK_WHEN_ALLOWED) or (missing and status == 404)
        if allowed and not through:
            problems.append(f"{where}: {status}, expected {'200' if method == 'GET' else '2xx/302/400/415'}"
                            f"{'/404' if missing else ''}")
        elif not allowed and status != 403:
            problems.append(f"{where}: {status}, expected 403")
        elif not allowed and endpoint.is_api and response.json()["error"]["code"] != "permission_denied":
            problems.append(f"{where}: 403 with code {response.json()['error']['code']}")
        if not allowed and not endpoint.is_api and method == "GET":
            plan.append(("POST", permission))  # denied for every method, not only GET
    return problems


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_role_against_every_page_and_endpoint(role, matrix, host_client):
    client = host_client(matrix["ws"].host)
    client.force_login(matrix["users"][role])
    problems: list[str] = []
    for endpoint in endpoints():
        problems += exercise(client, endpoint, lambda perm: role_has_permission(role, perm), matrix["existing"])
    assert problems == [], f"{role}: " + "\n".join(problems)


def _key_allowed(scope: str, endpoint: Endpoint, permission: str) -> bool:
    """What a one-scope key may do. Webhooks (analytics.webhook_apis.HasWebhookAccess) also need conversations.view
    from a key: their payloads and delivery log carry customers' messages and leads."""
    allowed = scopes_have_permission([scope], permission)
    if getattr(endpoint.pattern.callback, "cls", None) is not None and any(
            klass.__name__ == "HasWebhookAccess" for klass in endpoint.pattern.callback.cls.permission_classes):
        allowed = allowed and scopes_have_permission([scope], "conversations.view")
    return allowed


@pytest.mark.parametrize("scope", list(SCOPES))
def test_every_api_key_scope_against_every_endpoint(scope, matrix, host_client):
    client = host_client(matrix["ws"].host, HTTP_AUTHORIZATION=f"Api-Key {matrix['keys'][scope]}")
    problems: list[str] = []
    for endpoint in endpoints():
        if endpoint.is_api:
            problems += exercise(client, endpoint, lambda perm: _key_allowed(scope, endpoint, perm),
                                 matrix["existing"])
    assert problems == [], f"scope {scope}: " + "\n".join(problems)


def test_the_matrix_is_not_vacuous(matrix):
    """Each role is allowed somewhere and refused somewhere, as the matrix says."""
    permissions = {perm for e in endpoints() for perm in e.permissions.values()}
    for role in Role:
        held = {p for p in permissions if role_has_permission(role, p)}
        assert held, role
        if role != Role.OWNER:
            assert permissions - held, role
    assert permissions == {p for p in permissions if role_has_permission(Role.OWNER, p)}
