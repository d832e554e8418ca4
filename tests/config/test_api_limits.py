"""The REST API's default throttles (per key, per user, per anonymous address; accounts.api_throttles) and the cap
on `?limit=` (config.pagination), through the real middleware stack and the test Redis."""
from __future__ import annotations

import pytest
from django.test import override_settings

from accounts.services import api_key_create
from tests.factories import workspace_with_owner

TIGHT = {"api_key": "3/h", "api_user": "2/h", "api_anon": "2/h"}


def assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "rate_limited"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600 and error["details"]["retry_after"] == retry_after


@pytest.fixture
def ws():
    return workspace_with_owner()


@override_settings(API_THROTTLE_RATES=TIGHT)
def test_each_api_key_has_its_own_budget(ws, host_client):
    client = host_client(ws.host)
    _key, raw = api_key_create(workspace=ws.workspace, name="busy", scopes=["read"])
    _other, other_raw = api_key_create(workspace=ws.workspace, name="quiet", scopes=["read"])
    for _ in range(3):
        assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}").status_code == 200
    assert_rate_limited(client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {raw}"))
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {other_raw}").status_code == 200


@override_settings(API_THROTTLE_RATES=TIGHT)
def test_a_signed_in_user_is_throttled_per_user(ws, host_client):
    client = host_client(ws.host)
    client.force_login(ws.owner)
    for _ in range(2):
        assert client.get("/api/v1/me/").status_code == 200
    assert_rate_limited(client.get("/api/v1/me/"))


@override_settings(API_THROTTLE_RATES=TIGHT)
def test_anonymous_callers_are_throttled_per_address_whatever_they_forward(ws, host_client):
    neighbour = workspace_with_owner()
    client = host_client(ws.host, HTTP_ACCEPT="application/vnd.oai.openapi+json")  # the schema, and errors, as JSON
    for index in range(2):
        assert client.get("/api/schema/", HTTP_X_FORWARDED_FOR=f"198.51.100.{index}").status_code == 200
    # No trusted proxy: a made-up X-Forwarded-For is not a new address (config.client_ip).
    assert_rate_limited(client.get("/api/schema/", HTTP_X_FORWARDED_FOR="198.51.100.77"))
    # Another workspace's budget is its own (keys carry the schema).
    assert host_client(neighbour.host).get("/api/schema/").status_code == 200


@override_settings(API_PAGE_MAX_LIMIT=3)
def test_a_huge_limit_is_capped(ws, host_client):
    client = host_client(ws.host)
    _key, raw = api_key_create(workspace=ws.workspace, name="lister", scopes=["read", "chat"])
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}
    for index in range(5):
        response = client.post("/api/v1/conversations/", {"title": f"c{index}"}, content_type="application/json",
                               **auth)
        assert response.status_code == 201, response.content
    body = client.get("/api/v1/conversations/?limit=100000", **auth).json()
    assert body["count"] == 5 and len(body["results"]) == 3
    assert "limit=3" in body["next"]


def test_the_default_cap_is_200():
    from django.conf import settings

    from config.pagination import ApiPagination

    assert settings.API_PAGE_MAX_LIMIT == 200 and ApiPagination().max_limit == 200
