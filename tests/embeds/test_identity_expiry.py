"""Identity verification with a signed timestamp: `user_hash = HMAC(secret, "<user_ts>:<user_id>")`, accepted for
WIDGET_IDENTITY_MAX_AGE and up to WIDGET_IDENTITY_CLOCK_SKEW ahead; the legacy form (bare user id, valid forever)
only on embeds that allow it. Through the widget's real session door (in-process client, real Redis and PostgreSQL)."""
from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import override_settings

from embeds import services
from embeds.security import identity_hash
from tests.embeds.conftest import embed_make, in_workspace
from tests.factories import workspace_with_owner

SHOP = "https://shop.example"


@pytest.fixture
def identified() -> dict[str, Any]:
    ws = workspace_with_owner()
    embed = embed_make(ws.workspace, [SHOP], name="Identified")
    embed, secret = in_workspace(ws.workspace, services.embed_identity_secret_rotate, embed=embed)
    return {"ws": ws, "embed": embed, "secret": secret}


def session(host_client, identified: dict[str, Any], **identity: Any):
    host = identified["ws"].host
    return host_client(host).post(
        f"/widget/v1/session/{identified['embed'].public_key}/", {"host_origin": SHOP, **identity},
        content_type="application/json", HTTP_ORIGIN=f"http://{host}", HTTP_SEC_FETCH_SITE="same-origin",
    )


def signed(secret: str, user_id: str, user_ts: int) -> dict[str, Any]:
    return {"user_id": user_id, "user_ts": user_ts, "user_hash": identity_hash(secret, user_id, user_ts)}


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.content
    assert "token" not in response.json()


@override_settings(WIDGET_IDENTITY_MAX_AGE=3600, WIDGET_IDENTITY_CLOCK_SKEW=300)
def test_a_recent_signature_verifies_and_an_old_or_future_one_is_refused(identified, host_client):
    secret, now = identified["secret"], int(time.time())
    for user_ts in (now, now - 3000, now + 200, str(now)):  # a string of digits is the same timestamp
        response = session(host_client, identified, **signed(secret, "alice", int(user_ts)), )
        assert response.status_code == 200 and response.json()["verified"] is True, (user_ts, response.content)
    assert session(host_client, identified, user_id="alice", user_ts=str(now),
                   user_hash=identity_hash(secret, "alice", now)).json()["verified"] is True
    expired = session(host_client, identified, **signed(secret, "alice", now - 3700))
    assert_refused(expired, 403, "identity_expired")
    assert expired.json()["error"]["details"]["max_age"] == 3600
    assert_refused(session(host_client, identified, **signed(secret, "alice", now + 900)), 403,
                   "identity_timestamp_invalid")
    # The timestamp is signed: moving it forward breaks the hash.
    moved = {**signed(secret, "alice", now - 3700), "user_ts": now}
    assert_refused(session(host_client, identified, **moved), 403, "identity_invalid")
    for garbage in ("yesterday", -5, 1.5, True, "1" * 13, {"ts": now}):
        assert_refused(session(host_client, identified, user_id="alice", user_ts=garbage,
                               user_hash=identity_hash(secret, "alice", now)), 400, "identity_timestamp_invalid")


def test_the_legacy_form_only_where_the_embed_allows_it(identified, host_client):
    secret, ws = identified["secret"], identified["ws"]
    legacy = {"user_id": "bob", "user_hash": identity_hash(secret, "bob")}
    assert not identified["embed"].identity_legacy_hashes  # new widgets refuse it
    assert_refused(session(host_client, identified, **legacy), 403, "identity_timestamp_required")
    in_workspace(ws.workspace, services.embed_update, embed=identified["embed"], identity_legacy_hashes=True)
    assert session(host_client, identified, **legacy).json()["verified"] is True
    # Even then a timestamped hash is checked as such (no falling back to the legacy form).
    assert_refused(session(host_client, identified, **legacy, user_ts=int(time.time())), 403, "identity_invalid")


def test_the_api_shows_and_switches_the_legacy_form(identified, host_client):
    ws = identified["ws"]
    client = host_client(ws.host)
    client.force_login(ws.owner)
    url = f"/api/v1/embeds/{identified['embed'].pk}/"
    assert client.get(url).json()["identity_legacy_hashes"] is False
    response = client.patch(url, {"identity_legacy_hashes": True}, content_type="application/json")
    assert response.status_code == 200 and response.json()["identity_legacy_hashes"] is True
