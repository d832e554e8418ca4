"""Generated isolation test: every URL pattern of the workspace URLconf, every role of workspace A, against
workspace B's host. A member of A — by session or by A's API key — gets nothing of B (status and body checked).

New routes are picked up automatically; a route that needs a new kind of URL argument fails here until the
generator below learns how to fill it, so nothing slips through untested.
"""
from __future__ import annotations

import re
import secrets
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.services import api_key_create, audit_record, invitation_create
from tests.factories import member, workspace_with_owner

ROLES = ("owner", "admin", "agent", "viewer")
# Routes anyone may reach by design (the API description, login, invitation links, the widget's public loader,
# frame and config endpoints, which answer per embed key): they answer, but nothing of B may be in what they say.
PUBLIC_ENTRY_POINTS = {"api/schema/", "api/docs/", "login/", "logout/", "auth/handoff/", "invitations/<str:token>/"}


def tenant_routes() -> list[tuple[str, URLPattern]]:
    routes: list[tuple[str, URLPattern]] = []

    def walk(resolver: URLResolver, prefix: str) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                walk(entry, prefix + str(entry.pattern))
            else:
                routes.append((prefix + str(entry.pattern), entry))

    walk(get_resolver("config.urls_tenant"), "")
    return routes


def fill_path(route: str, pattern: URLPattern, b_ids: dict[str, Any]) -> str:
    """Turn 'team/<int:membership_id>/' into a concrete path that points at B's objects where possible."""
    converters = pattern.pattern.converters
    defaults = {"IntConverter": 1, "StringConverter": "x", "SlugConverter": "x", "PathConverter": "x",
                "UUIDConverter": "00000000-0000-0000-0000-000000000000"}

    def value(match: re.Match) -> str:
        name = match.group(2)
        if name in b_ids:
            return str(b_ids[name])
        kind = type(converters[name]).__name__
        if kind not in defaults:
            raise AssertionError(f"isolation test can't fill <{name}> ({kind}) in {route}: teach fill_path")
        return str(defaults[kind])

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", value, route)


def _embed_of(workspace: Any, name: str) -> Any:
    """B's chat widget (issue #5), so that the widget and embed routes point at a real object of B."""
    from django_tenants.utils import tenant_context

    from embeds.services import embed_create

    with tenant_context(workspace):
        return embed_create(name=name, allowed_origins=["https://b-shop.example"])


@pytest.fixture(scope="module")
def two_workspaces(django_db_blocker):
    with django_db_blocker.unblock():
        marker = f"SECRET-{secrets.token_hex(6)}"
        a = workspace_with_owner(name=f"Alpha {secrets.token_hex(3)}")
        b = workspace_with_owner(name=f"Bravo {marker}")
        a_users = {"owner": a.owner, **{role: member(a.workspace, role) for role in ROLES[1:]}}
        b_agent = member(b.workspace, "agent")
        _key, a_key = api_key_create(workspace=a.workspace, name="a-key", scopes=["read", "write", "chat"])
        b_key, _raw = api_key_create(workspace=b.workspace, name=f"b-key {marker}")
        invitation, _token = invitation_create(
            workspace=b.workspace, email=f"invitee-{marker.lower()}@example.test", role="viewer", invited_by=b.owner,
            actor_role="owner",
        )
        audit_record(workspace=b.workspace, actor=b.owner, action="test.marker", target=marker)
        b_embed = _embed_of(b.workspace, name=f"Widget {marker}")
        b_ids = {"membership_id": b.workspace.memberships.get(user=b_agent).pk, "key_id": b_key.pk,
                 "slug": b.workspace.slug, "token": "not-a-token",
                 "embed_id": b_embed.pk, "public_key": b_embed.public_key}
        secrets_of_b = [marker, b.owner.email, b_agent.email, b.workspace.name]
    return {"a": a, "b": b, "a_users": a_users, "a_key": a_key, "b_ids": b_ids, "secrets": secrets_of_b}


def _assert_nothing_of_b(response, secrets_of_b: list[str], context: str) -> None:
    body = response.content.decode(errors="replace")
    for secret in secrets_of_b:
        assert secret not in body, f"{context}: response reveals {secret!r}"
    assert response.status_code in (301, 302, 400, 401, 403, 404, 405), f"{context}: status {response.status_code}"
    if response.status_code in (301, 302):
        location = response.headers.get("Location", "")
        assert "/login" in location or location.startswith("/"), f"{context}: redirected to {location}"


def test_routes_are_discovered():
    routes = [route for route, _ in tenant_routes()]
    assert "api/v1/members/" in routes and "team/" in routes and len(routes) >= 20


@pytest.mark.parametrize("role", ROLES)
def test_member_of_a_gets_nothing_of_b_by_session(role, two_workspaces, host_client):
    data = two_workspaces
    b_host = data["b"].host
    client = host_client(b_host)
    client.force_login(data["a_users"][role])
    checked = 0
    for route, pattern in tenant_routes():
        path = fill_path(route, pattern, data["b_ids"])
        if route in ("healthz", "readyz"):
            continue  # no workspace data behind them; covered by the health tests
        for method in ("get", "post", "patch", "delete"):
            response = getattr(client, method)(path, **({"data": {}, "content_type": "application/json"} if method != "get" else {}))
            if route in PUBLIC_ENTRY_POINTS or route.startswith("widget/"):
                body = response.content.decode(errors="replace")
                for secret in data["secrets"]:
                    assert secret not in body, f"{method} {path} reveals {secret}"
                assert response.status_code < 500
                continue
            _assert_nothing_of_b(response, data["secrets"], f"{role} {method.upper()} {path}")
            checked += 1
    assert checked > 40


def test_api_key_of_a_gets_nothing_of_b(two_workspaces, host_client):
    data = two_workspaces
    client = host_client(data["b"].host)
    for route, pattern in tenant_routes():
        if not route.startswith("api/v1/"):
            continue
        path = fill_path(route, pattern, data["b_ids"])
        for method in ("get", "post", "patch", "delete"):
            response = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Api-Key {data['a_key']}",
                                               **({"data": {}, "content_type": "application/json"} if method != "get" else {}))
            assert response.status_code in (401, 405), f"{method} {path}: {response.status_code}"
            if response.status_code == 401:
                assert response.json()["error"]["code"] == "invalid_api_key"
            _assert_nothing_of_b(response, data["secrets"], f"api-key {method} {path}")


def test_the_same_requests_do_reach_a_own_data(two_workspaces, host_client):
    """Guard against a vacuous pass: the same member and key do see their own workspace."""
    data = two_workspaces
    client = host_client(data["a"].host)
    client.force_login(data["a_users"]["owner"])
    assert client.get("/team/").status_code == 200
    assert client.get("/api/v1/members/").status_code == 200
    keyed = host_client(data["a"].host)
    response = keyed.get("/api/v1/members/", HTTP_AUTHORIZATION=f"Api-Key {data['a_key']}")
    assert response.status_code == 200 and len(response.json()) == 4
