"""IDOR on one's own host: members, API keys, invitations, audit entries and exports live in shared (public-schema)
tables, so the schema switch does not keep workspaces apart there — every lookup must be scoped to the workspace.

A's owner, on A's own host, addresses B's rows by their ids (read, change, delete): every such request answers 404
(or is refused without touching anything, where the id is a form field), and everything B owns is unchanged
(tests/full_workspace.py fingerprints it). Lists and exports on A's host show none of B's rows.
"""
from __future__ import annotations

import secrets
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from accounts.services import invitation_create
from tests.factories import member, workspace_with_owner
from tests.full_workspace import fingerprint_diff, workspace_fill, workspace_fingerprint


@pytest.fixture(scope="module")
def ab(django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        a = workspace_with_owner(name=f"Alpha {secrets.token_hex(3)}")
        a_agent = member(a.workspace, "agent")
        with tenant_context(a.workspace):
            from chat.services import conversation_start

            a_conversation = conversation_start(channel="api", created_by=a.owner)
        b = workspace_with_owner(name=f"Bravo {secrets.token_hex(3)}")
        filled = workspace_fill(workspace=b.workspace, owner=b.owner)
        _invitation, b_token = invitation_create(
            workspace=b.workspace, email=f"second-{secrets.token_hex(3)}@example.test", role="agent",
            invited_by=b.owner, actor_role="owner")
    return {"a": a, "a_agent": a_agent, "a_conversation": a_conversation, "b": b, "b_ids": filled.ids,
            "b_secrets": filled.secrets, "b_token": b_token}


@pytest.fixture
def a_owner(ab, host_client):
    client = host_client(ab["a"].host)
    client.force_login(ab["a"].owner)
    return client


def _unchanged(ab: dict[str, Any], before: dict[str, Any]) -> None:
    changed = fingerprint_diff(before, workspace_fingerprint(ab["b"].workspace))
    assert changed == [], "B's data changed:\n" + "\n".join(changed)


# (method, path with B's ids, JSON body) -> 404 in the error shape
API_BY_ID = [
    ("patch", "/api/v1/members/{membership_id}/", {"role": "admin"}),
    ("patch", "/api/v1/members/{membership_id}/", {"role": "viewer"}),
    ("delete", "/api/v1/members/{membership_id}/", None),
    ("delete", "/api/v1/members/{admin_membership_id}/", None),
    ("post", "/api/v1/api-keys/{key_id}/revoke/", None),
    ("post", "/api/v1/ownership-transfer/", {"membership_id": "{admin_membership_id}"}),
]


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {key: int(_fill(item, ids)) if str(item).startswith("{") else item for key, item in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "body"), API_BY_ID, ids=[f"{m} {p} {b}" for m, p, b in API_BY_ID])
def test_api_by_id_of_b_is_404_on_a_host(method, path, body, ab, a_owner):
    before = workspace_fingerprint(ab["b"].workspace)
    kwargs = {"data": _fill(body, ab["b_ids"]), "content_type": "application/json"} if body is not None else {}
    response = getattr(a_owner, method)(_fill(path, ab["b_ids"]), **kwargs)
    assert response.status_code == 404, (response.status_code, response.content[:300])
    assert response.json()["error"]["code"] == "not_found"
    _unchanged(ab, before)


# Dashboard forms: the id in the URL -> 404 page; the id in a form field -> refused with a message, nothing done.
DASHBOARD_BY_ID = [
    ("post", "/team/{membership_id}/", {"role": "admin"}, 404),
    ("post", "/team/{membership_id}/", {"action": "remove"}, 404),
    ("post", "/team/invitations/{invitation_id}/revoke/", {}, 404),
    ("get", "/settings/export/{export_id}/download/", None, 404),
    ("post", "/settings/api-keys/", {"revoke": "{key_id}"}, 302),
    ("post", "/team/transfer/", {"membership_id": "{admin_membership_id}"}, 302),
]


@pytest.mark.parametrize(("method", "path", "form", "status"), DASHBOARD_BY_ID,
                         ids=[f"{m} {p} {f}" for m, p, f, _s in DASHBOARD_BY_ID])
def test_dashboard_by_id_of_b_does_nothing_on_a_host(method, path, form, status, ab, a_owner):
    before = workspace_fingerprint(ab["b"].workspace)
    data = {key: str(value).format(**ab["b_ids"]) for key, value in (form or {}).items()}
    response = getattr(a_owner, method)(path.format(**ab["b_ids"]), **({"data": data} if form is not None else {}))
    assert response.status_code == status, (response.status_code, response.content[:300])
    _unchanged(ab, before)


def test_a_colleague_of_b_cannot_be_assigned_a_conversation_of_a(ab, a_owner):
    """Users are shared too: B's agent is nobody here."""
    before = workspace_fingerprint(ab["b"].workspace)
    conversation = ab["a_conversation"]
    response = a_owner.post(f"/api/v1/conversations/{conversation.public_id}/assign/",
                            data={"agent_id": ab["b_ids"]["agent_user_id"]}, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "agent_id" in response.json()["error"]["details"]["fields"]
    with tenant_context(ab["a"].workspace):
        conversation.refresh_from_db()
        assert conversation.assigned_agent_id is None
    # and the same request does reach A's own agent (the refusal above is about the workspace, not the request)
    response = a_owner.post(f"/api/v1/conversations/{conversation.public_id}/assign/",
                            data={"agent_id": ab["a_agent"].pk}, content_type="application/json")
    assert response.status_code == 200, response.content[:300]
    _unchanged(ab, before)


def test_an_invitation_link_of_b_is_404_on_a_host(ab, host_client):
    before = workspace_fingerprint(ab["b"].workspace)
    client = host_client(ab["a"].host)
    assert client.get(f"/invitations/{ab['b_token']}/").status_code == 404
    response = client.post(f"/invitations/{ab['b_token']}/", data={"password": "Another-password-4711"})
    assert response.status_code == 404
    _unchanged(ab, before)
    # the link does work on B's own host: the 404s above are about the workspace
    assert host_client(ab["b"].host).get(f"/invitations/{ab['b_token']}/").status_code == 200


LISTS = ["/api/v1/members/", "/api/v1/invitations/", "/api/v1/api-keys/", "/api/v1/audit-log/",
         "/api/v1/audit-log/export/", "/team/", "/settings/api-keys/", "/settings/audit-log/",
         "/settings/audit-log/export/", "/settings/"]


@pytest.mark.parametrize("path", LISTS)
def test_lists_and_exports_on_a_host_show_nothing_of_b(path, ab, a_owner):
    response = a_owner.get(path)
    assert response.status_code == 200, (path, response.status_code)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode(errors="replace")
    assert ab["a"].owner.email in text or path in ("/api/v1/invitations/", "/api/v1/api-keys/", "/settings/api-keys/",
                                                    "/settings/"), f"{path} shows not even A's own rows"
    for secret in ab["b_secrets"]:
        assert secret not in text, f"{path} shows {secret!r} of B"


def test_a_own_rows_by_id_do_answer(ab, a_owner):
    """Guard against a vacuous pass: the same requests with A's own ids get through."""
    from accounts.selectors import membership_get

    a = ab["a"].workspace
    agent_membership = a.memberships.get(user=ab["a_agent"])
    response = a_owner.patch(f"/api/v1/members/{agent_membership.pk}/", data={"role": "viewer"},
                             content_type="application/json")
    assert response.status_code == 200 and response.json()["role"] == "viewer"
    response = a_owner.patch(f"/api/v1/members/{agent_membership.pk}/", data={"role": "agent"},
                             content_type="application/json")
    assert response.status_code == 200
    assert membership_get(workspace=a, membership_id=agent_membership.pk).role == "agent"
