"""Generated isolation test: every URL pattern of the workspace URLconf, every method, every role of workspace A,
against workspace B's host, with valid payloads pointing at B's real objects.

- A member of A, by session, gets exactly 403 from every route of B (API: code `not_a_member`; dashboard: the
  not-a-member page). A's API key gets exactly 401 `invalid_api_key` from every API route of B, and the dashboard
  pages send it to the login page. Nothing else passes: a view that forgot its permission would answer 2xx, or
  400/404/405 before its permission check, and fail here.
- The payloads are the valid ones: built from the OpenAPI request bodies (`/api/schema/`) with values pointing at
  real objects (DASHBOARD_FORMS for the dashboard's forms), and `test_the_payloads_are_valid` proves it by sending
  the same requests as the owner of a third workspace C, filled the same way: they pass validation there.
- B is filled with real rows of every kind first (tests/full_workspace.py), and everything it owns — every table
  of its schema, its shared-table rows, its members' user rows, its vectors and media files — is fingerprinted
  before and after each sweep: nothing may change.

New routes are picked up automatically; a route that needs a new kind of URL argument fails here until the
workspace filler learns to provide it, so nothing slips through untested.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.services import api_key_create
from tests.factories import member, workspace_with_owner
from tests.full_workspace import fingerprint_diff, workspace_fill, workspace_fingerprint
from tests.tenants.test_billing import workspace_on

ROLES = ("owner", "admin", "agent", "viewer")
METHODS = ("get", "post", "put", "patch", "delete")
# Routes anyone may reach by design (the API description, login, invitation links): they answer, but nothing of B
# may be in what they say. The widget's doors (/widget/v1/) answer per embed key and allowed origin.
PUBLIC_ENTRY_POINTS = {"api/schema/", "api/docs/", "login/", "logout/", "auth/handoff/", "invitations/<str:token>/"}
PROBES = {"healthz", "readyz"}  # no workspace data behind them; covered by the health tests


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


def fill_path(route: str, pattern: URLPattern, ids: dict[str, Any]) -> str:
    """Turn 'team/<int:membership_id>/' into a concrete path that points at the workspace's own objects."""

    def value(match: re.Match) -> str:
        name = match.group(2)
        if name not in ids:
            raise AssertionError(f"isolation test can't fill <{name}> in {route}: teach tests/full_workspace.py")
        return str(ids[name])

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", value, route)


# --- valid payloads -----------------------------------------------------------------------------------------------

# Field values the schema can't know: they must point at real objects or name real choices.
FIELD_VALUES = {
    "membership_id": lambda ids: ids["admin_membership_id"],
    "agent_id": lambda ids: ids["agent_user_id"],
    "plan": lambda ids: "pro",
    "role": lambda ids: "agent",
    "email": lambda ids: f"probe-{secrets.token_hex(4)}@example.test",
    "url": lambda ids: "https://example.com/probe",
    "allowed_origins": lambda ids: ["https://probe.example"],
    "timezone": lambda ids: "Europe/Berlin",
    "weekly_hours": lambda ids: {"mon": [["09:00", "17:00"]]},
    "theme": lambda ids: {"title": "Probe"},
    "behaviour": lambda ids: {},
    "metadata": lambda ids: {},
    "channel": lambda ids: "api",
    "value": lambda ids: 1,
    "expires_at": lambda ids: None,  # an API key's optional expiry: never
    "csv": lambda ids: SimpleUploadedFile(  # curated answers' CSV import
        "probe.csv", f"question,answer\nProbe {secrets.token_hex(4)}?,Probe answer\n".encode(), content_type="text/csv"),
    "source_message_id": lambda ids: ids["message_id"],
    "include": lambda ids: ["/docs/*"],  # a website source's path patterns
    "exclude": lambda ids: ["/blog/*"],
}

# The dashboard's forms (their views take form posts, not the API's JSON).
DASHBOARD_FORMS: dict[str, Any] = {
    "team/": lambda ids: {"email": f"probe-{secrets.token_hex(4)}@example.test", "role": "agent"},
    "team/<int:membership_id>/": lambda ids: {"role": "agent"},
    "team/transfer/": lambda ids: {"membership_id": ids["admin_membership_id"]},
    "settings/api-keys/": lambda ids: {"name": "probe", "scopes": ["read"]},
    "settings/retention/": lambda ids: {"days": "30"},
    "settings/billing/plan/": lambda ids: {"plan": "pro"},
    "settings/billing/overage/": lambda ids: {"enabled": "1"},
    "knowledge/add-text/": lambda ids: {"title": "Probe", "text": f"Probe text {secrets.token_hex(4)}"},
    "knowledge/add-faq/": lambda ids: {"question": "Probe?", "answer": f"Probe answer {secrets.token_hex(4)}"},
    "knowledge/import-url/": lambda ids: {"url": "https://example.com/probe"},
    "knowledge/<int:document_id>/version/": lambda ids: {"file": _probe_file()},
    "knowledge/curated/new/": lambda ids: {"question": f"Probe {secrets.token_hex(4)}?", "answer": "Probe answer",
                                           "examples": "Probe phrasing", "message": str(ids["message_id"])},
    "knowledge/curated/<int:curated_answer_id>/": lambda ids: {"question": "Probe question?",
                                                               "answer": "Probe answer edited"},
    "knowledge/sources/add/": lambda ids: {"url": "https://example.com/probe", "kind": "site", "max_pages": "5",
                                           "schedule": "weekly", "exclude": "/blog/*"},
    "knowledge/sources/<int:source_id>/settings/": lambda ids: {"schedule": "daily", "max_pages": "50"},
    "conversations/office-hours/": lambda ids: {"timezone": "Europe/Berlin", "mon": "09:00-17:00",
                                                "notify_agents": "on", "notify_after_seconds": "60"},
    "widgets/new/": lambda ids: _embed_form("Probe widget"),
    "widgets/<int:embed_id>/": lambda ids: _embed_form("Probe widget renamed"),
    "widgets/<int:embed_id>/actions/": lambda ids: {"action": "deactivate"},
    "settings/webhooks/": lambda ids: {"action": "create", "url": "https://example.com/probe",
                                       "events": ["conversation.created"]},
    "settings/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/redeliver/": lambda ids: {},
}


def _probe_file() -> SimpleUploadedFile:
    return SimpleUploadedFile("probe.txt", f"Probe file {secrets.token_hex(8)}\n".encode(), content_type="text/plain")


def _embed_form(name: str) -> dict[str, Any]:
    return {"name": name, "allowed_origins": "https://probe.example", "color_primary": "#112233",
            "color_background": "#ffffff", "color_text": "#000000", "position": "bottom-right",
            "launcher_icon": "chat", "language": "en"}


def openapi_schema(client) -> dict[str, Any]:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.status_code
    return json.loads(response.content)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in spec:
        spec = schema["components"]["schemas"][spec["$ref"].rsplit("/", 1)[1]]
    if "allOf" in spec and len(spec["allOf"]) == 1:
        return _resolve(schema, spec["allOf"][0])
    if "oneOf" in spec:
        return _resolve(schema, spec["oneOf"][0])
    return spec


def _example(schema: dict[str, Any], name: str, spec: dict[str, Any], ids: dict[str, Any]) -> Any:
    if name in FIELD_VALUES:
        return FIELD_VALUES[name](ids)
    spec = _resolve(schema, spec)
    if "default" in spec:
        return spec["default"]
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    if kind == "string":
        if spec.get("format") == "binary":
            return _probe_file()
        if spec.get("format") == "email":
            return f"probe-{secrets.token_hex(4)}@example.test"
        return "probe"
    if kind == "integer":
        return max(1, spec.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(schema, name, spec.get("items", {}), ids)]
    if kind == "object":
        return {key: _example(schema, key, sub, ids) for key, sub in spec.get("properties", {}).items()}
    raise AssertionError(f"can't build a value for {name}: {spec}; add it to FIELD_VALUES")


def api_payload(schema: dict[str, Any], route: str, method: str, ids: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the test client: a valid body for `method route` from the OpenAPI schema."""
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    operation = schema["paths"].get(path, {}).get(method)
    body = (operation or {}).get("requestBody")
    if method == "get":
        return {}
    if body is None:
        return {"data": {}, "content_type": "application/json"}
    content = body["content"]
    if "application/json" in content:
        data = _example(schema, "", content["application/json"]["schema"], ids)
        return {"data": data, "content_type": "application/json"}
    data = _example(schema, "", content["multipart/form-data"]["schema"], ids)
    assert method == "post", f"multipart {method} {route}: the test client sends multipart with POST only"
    return {"data": data}


def request_kwargs(schema: dict[str, Any], route: str, method: str, ids: dict[str, Any]) -> dict[str, Any]:
    if route.startswith("api/"):
        return api_payload(schema, route, method, ids)
    if method == "get":
        return {}
    if method == "post":
        return {"data": DASHBOARD_FORMS[route](ids) if route in DASHBOARD_FORMS else {}}
    return {"data": "", "content_type": "application/x-www-form-urlencoded"}


def swept_routes() -> list[tuple[str, URLPattern]]:
    return [(route, pattern) for route, pattern in tenant_routes()
            if route not in PUBLIC_ENTRY_POINTS and route not in PROBES and not route.startswith("widget/")]


# --- the workspaces ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workspaces(django_db_blocker):
    with django_db_blocker.unblock():
        a = workspace_with_owner(name=f"Alpha {secrets.token_hex(3)}")
        marker = f"SECRET-{secrets.token_hex(6)}"
        b = workspace_with_owner(name=f"Bravo {marker}")
        a_users = {"owner": a.owner, **{role: member(a.workspace, role) for role in ROLES[1:]}}
        _key, a_key = api_key_create(workspace=a.workspace, name="a-key", scopes=["read", "write", "chat"])
        b_filled = workspace_fill(workspace=b.workspace, owner=b.owner, marker=marker)
        fingerprint = workspace_fingerprint(b.workspace)
    return {"a": a, "b": b, "a_users": a_users, "a_key": a_key, "b_ids": b_filled.ids, "secrets": b_filled.secrets,
            "fingerprint": fingerprint}


def _assert_b_unchanged(data: dict[str, Any]) -> None:
    changed = fingerprint_diff(data["fingerprint"], workspace_fingerprint(data["b"].workspace))
    assert changed == [], "B's data changed:\n" + "\n".join(changed)


def test_routes_are_discovered():
    routes = [route for route, _ in tenant_routes()]
    assert "api/v1/members/" in routes and "team/" in routes and len(routes) >= 20


def test_the_fingerprint_covers_b_data(two_workspaces):
    """The fingerprint is not vacuous: it sees B's rows of every kind."""
    fingerprint = two_workspaces["fingerprint"]
    schema = two_workspaces["b"].workspace.schema_name
    for table in ("documents_document", "documents_chunk", "chat_conversation", "chat_message", "embeds_embed",
                  "analytics_event"):
        assert fingerprint[f"{schema}.{table}"][0] > 0, table
    for table in ("accounts_membership", "accounts_apikey", "accounts_invitation", "accounts_auditentry",
                  "tenants_workspaceexport", "tenants_workspace", "tenants_domain"):
        assert fingerprint[f"public.{table}"][0] > 0, table
    assert fingerprint["public.accounts_membership"][0] == 4
    assert fingerprint["chroma vectors"][0] > 0 and fingerprint["media files"][0] >= 2


def _sweep(client, schema: dict[str, Any], ids: dict[str, Any], routes, check) -> int:
    checked = 0
    for route, pattern in routes:
        path = fill_path(route, pattern, ids)
        for method in METHODS:
            response = getattr(client, method)(path, **request_kwargs(schema, route, method, ids))
            check(route, method, path, response)
            checked += 1
    return checked


def _expected_code(route: str, method: str) -> str:
    """`not_a_member`; a method for which a view's per-method permissions name nothing is refused before the
    membership is looked at (permission_denied: still exactly 403, never a 405 that tells what exists)."""
    from accounts.permissions import view_permission

    view_class = dict(tenant_routes())[route].callback.view_class
    return "not_a_member" if view_permission(view_class, method) is not None else "permission_denied"


@pytest.mark.parametrize("role", ROLES)
def test_member_of_a_gets_403_from_every_route_of_b(role, two_workspaces, host_client):
    data = two_workspaces
    client = host_client(data["b"].host)
    schema = openapi_schema(client)
    client.force_login(data["a_users"][role])
    problems: list[str] = []

    def check(route: str, method: str, path: str, response) -> None:
        where = f"{role} {method.upper()} {path}"
        body = response.content.decode(errors="replace")
        problems.extend(f"{where}: reveals {secret!r}" for secret in data["secrets"] if secret in body)
        if response.status_code != 403:
            problems.append(f"{where}: {response.status_code}, expected 403")
        elif route.startswith("api/") and response.json()["error"]["code"] != _expected_code(route, method):
            problems.append(f"{where}: 403 with code {response.json()['error']['code']}, "
                            f"expected {_expected_code(route, method)}")
        elif not route.startswith("api/") and "not a member of this workspace" not in body:
            problems.append(f"{where}: 403 without the not-a-member page")

    checked = _sweep(client, schema, data["b_ids"], swept_routes(), check)
    assert not problems, "\n".join(problems)
    assert checked > 300
    _assert_b_unchanged(data)


def test_api_key_of_a_gets_401_from_every_route_of_b(two_workspaces, host_client):
    data = two_workspaces
    client = host_client(data["b"].host, HTTP_AUTHORIZATION=f"Api-Key {data['a_key']}")
    schema = openapi_schema(client)
    problems: list[str] = []

    def check(route: str, method: str, path: str, response) -> None:
        where = f"api-key {method.upper()} {path}"
        body = response.content.decode(errors="replace")
        problems.extend(f"{where}: reveals {secret!r}" for secret in data["secrets"] if secret in body)
        if route.startswith("api/"):
            if response.status_code != 401 or response.json()["error"]["code"] != "invalid_api_key":
                problems.append(f"{where}: {response.status_code} {body[:120]}, expected 401 invalid_api_key")
        elif response.status_code != 302 or not response.headers["Location"].startswith("/login/"):
            problems.append(f"{where}: {response.status_code} {response.headers.get('Location')}, "
                            "expected a redirect to /login/ (a key never opens the dashboard)")

    checked = _sweep(client, schema, data["b_ids"], swept_routes(), check)
    assert not problems, "\n".join(problems)
    assert checked > 300
    _assert_b_unchanged(data)


@pytest.mark.parametrize("role", ("owner", "viewer"))
def test_public_entry_points_and_widget_doors_reveal_nothing_of_b(role, two_workspaces, host_client):
    data = two_workspaces
    client = host_client(data["b"].host)
    schema = openapi_schema(client)
    problems: list[str] = []
    for route, pattern in tenant_routes():
        if not (route in PUBLIC_ENTRY_POINTS or route.startswith("widget/")):
            continue
        path = fill_path(route, pattern, data["b_ids"])
        for method in METHODS:
            client.force_login(data["a_users"][role])  # logout/ ends the session: start each request logged in
            response = getattr(client, method)(path, **request_kwargs(schema, route, method, data["b_ids"]))
            body = response.content.decode(errors="replace")
            if route.startswith("api/"):
                body = body.replace(data["b"].host, "")  # the schema names the server it is served from
            problems += [f"{method} {path} reveals {secret!r}" for secret in data["secrets"] if secret in body]
            if response.status_code >= 500:
                problems.append(f"{method} {path}: {response.status_code}")
    assert not problems, "\n".join(problems)
    _assert_b_unchanged(data)


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


def test_the_payloads_are_valid(host_client, django_db_blocker):
    """The sweeps' payloads pass validation: sent by the owner of C (filled like B) to C, every write with a body
    succeeds (2xx, or the dashboard's redirect / page without form errors) or is refused by C's state (a 409, say),
    never for its body or ids (400/404/415/422). Ownership transfers run last (they change who the owner is)."""
    with django_db_blocker.unblock():
        c = workspace_on("starter")  # room for the widgets the payloads create
        filled = workspace_fill(workspace=c.workspace, owner=c.owner)
        before = workspace_fingerprint(c.workspace)
    client = host_client(c.host)
    schema = openapi_schema(client)
    plan = [(route, pattern, method) for route, pattern in swept_routes() for method in METHODS
            if (method == "post" and route in DASHBOARD_FORMS)
            or (route.startswith("api/") and method != "get" and _has_body(schema, route, method))]
    plan.sort(key=lambda item: "transfer" in item[0])
    assert len(plan) >= 30
    problems: list[str] = []
    from accounts.models import Membership

    for route, pattern, method in plan:
        owner = Membership.objects.get(workspace=c.workspace, role="owner")
        client.force_login(owner.user)
        ids = dict(filled.ids)
        if "transfer" in route:  # to a member who is not the owner yet
            ids["admin_membership_id"] = Membership.objects.filter(
                workspace=c.workspace, role="admin").exclude(pk=owner.pk).first().pk
        path = fill_path(route, pattern, ids)
        response = getattr(client, method)(path, **request_kwargs(schema, route, method, ids))
        where = f"{method.upper()} {path}"
        status = response.status_code
        if route.startswith("api/"):
            # Validated, then maybe refused by the state C is in (409 a closed conversation or a duplicate
            # document, 403 customer_only for a widget conversation): fine. Refused for the payload or the ids: not.
            code = response.json()["error"]["code"] if status >= 400 else ""
            if status in (400, 404, 413, 415, 422) or status >= 500 or code in ("permission_denied", "not_a_member"):
                problems.append(f"{where}: {status} {response.content[:200]!r}")
        elif status not in (200, 302):
            problems.append(f"{where}: {status} {_form_errors(response)}")
        elif status == 200 and method == "post" and b'class="errorlist' in response.content:
            problems.append(f"{where}: the form was refused: {_form_errors(response)}")
    assert not problems, "\n".join(problems)
    # The same writes against B would have shown in B's fingerprint: here they change C's, table by table.
    changed = {line.split(":")[0] for line in fingerprint_diff(before, workspace_fingerprint(c.workspace))}
    schema = c.workspace.schema_name
    assert {f"{schema}.documents_document", f"{schema}.chat_message", f"{schema}.embeds_embed",
            "public.accounts_membership", "public.accounts_apikey", "public.accounts_invitation",
            f"{schema}.analytics_webhookendpoint", "public.tenants_workspace", "media files"} <= changed, changed


def _has_body(schema: dict[str, Any], route: str, method: str) -> bool:
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return "requestBody" in schema["paths"].get(path, {}).get(method, {})


def _form_errors(response) -> str:
    body = response.content.decode(errors="replace")
    return " | ".join(re.findall(r'class="errorlist[^>]*>(.*?)</ul>', body, re.S)) or body[:300]
