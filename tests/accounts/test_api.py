"""The REST API's authentication, scopes, roles and error shape, through the real middleware stack."""
from __future__ import annotations

import json

import pytest

from accounts.models import ApiKey, Membership
from accounts.services import api_key_create, api_key_revoke
from tests.factories import member, workspace_with_owner


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


@pytest.fixture
def ws():
    return workspace_with_owner()


def test_api_key_lifecycle(ws, host_client):
    client = host_client(ws.host)
    key, raw = api_key_create(workspace=ws.workspace, name="ci", scopes=["read"])
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64  # only a hash at rest

    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert response.status_code == 200
    assert response.json()["kind"] == "api_key" and response.json()["scopes"] == ["read"]
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None

    api_key_revoke(key=key, actor=ws.owner)
    assert_error(client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}"), 401, "api_key_revoked")


@pytest.mark.parametrize(
    "header",
    ["Api-Key ", "Api-Key garbage", "Api-Key ccg_", "Api-Key ccg_deadbeef_wrongsecret", "Api-Key " + "x" * 5000,
     "Api-Key ccg_' OR 1=1 --_x"],
)
def test_malformed_or_unknown_keys_get_401_with_code(ws, host_client, header):
    assert_error(host_client(ws.host).get("/api/v1/me/", HTTP_AUTHORIZATION=header), 401, "invalid_api_key")


def test_no_credentials_is_401_not_authenticated(ws, host_client):
    response = host_client(ws.host).get("/api/v1/members/")
    assert_error(response, 401, "not_authenticated")
    assert "Api-Key" in response.headers.get("WWW-Authenticate", "")


def test_scopes_limit_what_a_key_may_do(ws, host_client):
    client = host_client(ws.host)
    _key, read_only = api_key_create(workspace=ws.workspace, name="reader", scopes=["read"])
    assert client.get("/api/v1/members/", HTTP_AUTHORIZATION=f"Api-Key {read_only}").status_code == 200
    # No scope lets a key manage keys or the team.
    _key, full = api_key_create(workspace=ws.workspace, name="full", scopes=["read", "write", "chat"])
    assert_error(client.get("/api/v1/api-keys/", HTTP_AUTHORIZATION=f"Api-Key {full}"), 403, "permission_denied")
    assert_error(
        client.post("/api/v1/invitations/", data={"email": "x@example.test"}, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Api-Key {full}"),
        403, "permission_denied",
    )


def test_session_api_create_key_shows_secret_once(ws, host_client):
    client = host_client(ws.host)
    client.force_login(ws.owner)
    created = client.post("/api/v1/api-keys/", data={"name": "deploy", "scopes": ["read"]}, content_type="application/json")
    assert created.status_code == 201
    secret = created.json()["key"]
    listed = client.get("/api/v1/api-keys/").json()
    assert any(k["name"] == "deploy" for k in listed) and secret not in json.dumps(listed)
    assert host_client(ws.host).get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {secret}").status_code == 200


def test_bad_input_gets_4xx_in_the_error_shape(ws, host_client):
    client = host_client(ws.host)
    client.force_login(ws.owner)
    assert_error(client.post("/api/v1/api-keys/", data="{not json", content_type="application/json"), 400, "malformed_request")
    body = assert_error(client.post("/api/v1/api-keys/", data={"name": ""}, content_type="application/json"), 400, "invalid")
    assert "name" in body["error"]["details"]["fields"]
    assert_error(client.post("/api/v1/api-keys/", data={"name": "k", "scopes": ["root"]}, content_type="application/json"), 400, "invalid")
    assert_error(client.post("/api/v1/invitations/", data={"email": "not-an-email"}, content_type="application/json"), 400, "invalid")
    assert_error(client.patch("/api/v1/members/999999/", data={"role": "admin"}, content_type="application/json"), 404, "not_found")
    assert_error(client.put("/api/v1/me/"), 405, "method_not_allowed")
    assert_error(client.get("/api/v1/no-such-endpoint/"), 404, "not_found")
    assert_error(client.post("/api/v1/api-keys/", data="x", content_type="application/xml"), 415, "unsupported_media_type")


def test_roles_on_the_team_api(ws, host_client):
    viewer, agent, admin = (member(ws.workspace, role) for role in ("viewer", "agent", "admin"))
    owner_membership = Membership.objects.get(workspace=ws.workspace, user=ws.owner)

    def client_for(user):
        client = host_client(ws.host)
        client.force_login(user)
        return client

    assert client_for(viewer).get("/api/v1/members/").status_code == 403  # viewers don't see the team
    assert client_for(agent).get("/api/v1/members/").status_code == 200
    assert_error(client_for(agent).post("/api/v1/invitations/", data={"email": "n@example.test"}, content_type="application/json"), 403, "permission_denied")
    # An admin can invite but can't make owners.
    assert client_for(admin).post("/api/v1/invitations/", data={"email": "n@example.test", "role": "agent"}, content_type="application/json").status_code == 201
    assert_error(client_for(admin).post("/api/v1/invitations/", data={"email": "m@example.test", "role": "owner"}, content_type="application/json"), 403, "permission_denied")
    # The last owner can't be demoted or removed.
    assert_error(client_for(ws.owner).patch(f"/api/v1/members/{owner_membership.pk}/", data={"role": "admin"}, content_type="application/json"), 409, "last_owner")
    assert_error(client_for(ws.owner).delete(f"/api/v1/members/{owner_membership.pk}/"), 409, "last_owner")


def test_openapi_schema_and_docs_are_served(ws, host_client):
    client = host_client(ws.host)
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/members/" in paths and "/api/v1/api-keys/" in paths
    assert client.get("/api/docs/").status_code == 200


def test_api_is_not_served_on_the_public_host(host_client):
    response = host_client("localhost").get("/api/v1/me/")
    assert response.status_code == 404


# --- expiring keys ---------------------------------------------------------------------------------------------------
def test_an_expired_key_gets_401_api_key_expired(ws, host_client):
    from datetime import timedelta

    from django.utils import timezone

    client = host_client(ws.host)
    key, raw = api_key_create(workspace=ws.workspace, name="temp", scopes=["read"],
                              expires_at=timezone.now() + timedelta(hours=1))
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))  # an hour later
    assert_error(client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}"), 401, "api_key_expired")
    _forever, forever = api_key_create(workspace=ws.workspace, name="forever", scopes=["read"])
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {forever}").status_code == 200


def test_keys_are_created_with_an_expiry_over_the_api(ws, host_client):
    from datetime import timedelta

    from django.utils import timezone

    client = host_client(ws.host)
    client.force_login(ws.owner)
    when = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    created = client.post("/api/v1/api-keys/", {"name": "quarterly", "scopes": ["read"],
                                                "expires_at": when.isoformat()}, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["is_active"] is True
    assert ApiKey.objects.get(pk=created.json()["id"]).expires_at == when
    listed = {k["name"]: k for k in client.get("/api/v1/api-keys/").json()}
    assert listed["quarterly"]["expires_at"] and listed["quarterly"]["is_active"] is True
    past = (timezone.now() - timedelta(days=1)).isoformat()
    assert_error(client.post("/api/v1/api-keys/", {"name": "stale", "expires_at": past},
                             content_type="application/json"), 400, "invalid")
    assert client.post("/api/v1/api-keys/", {"name": "open-ended", "expires_at": None},
                       content_type="application/json").json()["expires_at"] is None
    # The dashboard list says until when a key works.
    page = client.get("/settings/api-keys/").content.decode()
    assert f"active until {when:%Y-%m-%d}" in page


def test_create_api_key_command_takes_expires_in_days(ws):
    import io
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    out = io.StringIO()
    call_command("create_api_key", "--workspace", ws.workspace.slug, "--name", "ci-week", "--expires-in-days", "7",
                 "--json", stdout=out)
    data = json.loads(out.getvalue())
    expires_at = ApiKey.objects.get(pk=data["id"]).expires_at
    assert data["expires_at"] and abs(expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=5)
    refused = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("create_api_key", "--workspace", ws.workspace.slug, "--name", "ci-0", "--expires-in-days", "0",
                     "--json", stdout=refused)
    assert json.loads(refused.getvalue())["error"]["code"] == "invalid"
    assert not ApiKey.objects.filter(name="ci-0").exists()
