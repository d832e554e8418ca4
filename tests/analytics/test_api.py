"""The analytics API's edges: bad filters are 400s with stable codes; permissions; workspace isolation; the
rebuild command."""
from __future__ import annotations

import io
import json
import secrets
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django_tenants.utils import tenant_context

from accounts.services import api_key_create
from tests.analytics.factories import event, events_record
from tests.factories import member, workspace_with_owner

API = "/api/v1/analytics/"
ENDPOINTS = ("summary", "queries-over-time", "top-queries", "unanswered", "documents", "embeds", "quality",
             "handoffs")


@pytest.fixture(scope="module")
def pair(django_db_blocker):
    """Workspace A with one question; workspace B with a secret question, handoff reason and origin."""
    with django_db_blocker.unblock():
        a = workspace_with_owner(name="Analytics A")
        b = workspace_with_owner(name="Analytics B")
        marker = f"secret-{secrets.token_hex(4)}"
        at = datetime(2026, 6, 1, 12, tzinfo=UTC)
        with tenant_context(a.workspace):
            events_record([event("question_asked", at, question_text="A's own question", embed_id=None, origin="",
                                 conversation_id=None)])
            call_command("rebuild_analytics", "--workspace", a.workspace.slug, "--json", stdout=io.StringIO())
        with tenant_context(b.workspace):
            events_record([
                event("widget_opened", at, embed_id=4242, origin=f"https://{marker}.example"),
                event("question_asked", at, question_text=f"B asks {marker}?", embed_id=4242,
                      origin=f"https://{marker}.example", conversation_id=None),
                event("answer_completed", at, question_text=f"B asks {marker}?", outcome="declined", embed_id=4242,
                      origin=f"https://{marker}.example", conversation_id=None, latency_first_token_ms=5),
                event("handoff_requested", at, reason=marker[:40], embed_id=4242, conversation_id=None),
            ])
        out = io.StringIO()
        call_command("rebuild_analytics", "--workspace", b.workspace.slug, "--json", stdout=out)
        report = json.loads(out.getvalue())
        _key, a_key = api_key_create(workspace=a.workspace, name="read", scopes=["read"])
        _key, a_write = api_key_create(workspace=a.workspace, name="write", scopes=["write"])
        viewer = member(a.workspace, "viewer")
    return {"a": a, "b": b, "marker": marker, "a_key": a_key, "a_write": a_write, "viewer": viewer,
            "b_report": report}


def test_rebuild_command_reports_in_json(pair):
    report = pair["b_report"]
    assert report["workspace"] == pair["b"].workspace.slug and report["events"] == 4
    # one widget (4242) and the all-widgets row, for one hour and one day
    assert report["hourly_rows"] == 2 and report["daily_rows"] == 2 and report["questions_clustered"] == 1
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("rebuild_analytics", "--workspace", "no-such-workspace", "--json", stdout=out)
    assert exited.value.code == 1 and json.loads(out.getvalue())["error"]["code"] == "workspace_not_found"


@pytest.mark.parametrize("query,code", [
    ("start=yesterday", "invalid_date"),
    ("end=2026-02-30", "invalid_date"),
    ("start=2026-13-01", "invalid_date"),
    ("start=9999-12-31&end=9999-12-31", "invalid_date"),
    ("tz=Mars/Olympus", "invalid_timezone"),
    ("tz=../../etc/passwd", "invalid_timezone"),
    ("interval=minute", "invalid_interval"),
    ("start=2026-03-10&end=2026-03-01", "invalid_range"),
    ("start=2024-01-01&end=2026-01-01", "range_too_long"),
    ("start=2026-01-01&end=2026-03-01&interval=hour", "range_too_long"),
    ("embed=abc", "invalid_embed"),
    ("embed=-1", "invalid_embed"),
])
def test_bad_filters_are_400_with_a_stable_code(pair, host_client, query, code):
    client = host_client(pair["a"].host)
    for name in ENDPOINTS:
        response = client.get(f"{API}{name}/?{query}", HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}")
        assert response.status_code == 400, (name, query, response.content[:300])
        error = response.json()["error"]
        assert error["code"] == code and error["message"] and error["details"]["fields"]


def test_bad_limits_are_400(pair, host_client):
    client = host_client(pair["a"].host)
    for name in ("top-queries", "unanswered"):
        for limit in ("0", "x", "100000"):
            response = client.get(f"{API}{name}/?limit={limit}", HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}")
            assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_default_range_is_the_last_30_days(pair, host_client):
    client = host_client(pair["a"].host)
    response = client.get(f"{API}queries-over-time/", HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}")
    assert response.status_code == 200 and len(response.json()) == 31  # 30 days ending now: 31 partial/whole days


def test_permissions(pair, host_client):
    client = host_client(pair["a"].host)
    assert client.get(f"{API}summary/").status_code == 401
    response = client.get(f"{API}summary/", HTTP_AUTHORIZATION=f"Api-Key {pair['a_write']}")
    assert response.status_code == 403 and response.json()["error"]["details"]["permission"] == "analytics.view"
    client.force_login(pair["viewer"])
    response = client.get(f"{API}summary/?start=2026-06-01&end=2026-06-01")
    assert response.status_code == 200 and response.json()["questions"] == 1


def test_a_never_sees_b(pair, host_client):
    """A's figures hold only A's events; A's key and A's members get nothing on B's host."""
    marker = pair["marker"]
    client = host_client(pair["a"].host)
    for name in ENDPOINTS:
        for query in ("start=2026-06-01&end=2026-06-01", "start=2026-06-01&end=2026-06-01&embed=4242",
                      "start=2026-06-01T12:00:00Z&end=2026-06-01T12:30:00Z"):
            response = client.get(f"{API}{name}/?{query}", HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}")
            assert response.status_code == 200 and marker not in response.content.decode()
    summary = client.get(f"{API}summary/?start=2026-06-01&end=2026-06-01",
                         HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}").json()
    assert summary["questions"] == 1 and summary["handoffs"] == 0 and summary["unanswered"] == 0
    assert client.get(f"{API}embeds/?start=2026-06-01&end=2026-06-01&embed=4242",
                      HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}").json() == []
    b_client = host_client(pair["b"].host)
    for name in ENDPOINTS:
        response = b_client.get(f"{API}{name}/?start=2026-06-01&end=2026-06-01",
                                HTTP_AUTHORIZATION=f"Api-Key {pair['a_key']}")
        assert response.status_code == 401 and marker not in response.content.decode()
    b_client.force_login(pair["a"].owner)
    response = b_client.get(f"{API}summary/?start=2026-06-01&end=2026-06-01")
    assert response.status_code == 403 and marker not in response.content.decode()
    # The same figures on B's own host do show B's events (the check above is not vacuous).
    b_key = api_key_create(workspace=pair["b"].workspace, name="read", scopes=["read"])[1]
    response = host_client(pair["b"].host).get(f"{API}handoffs/?start=2026-06-01&end=2026-06-01",
                                               HTTP_AUTHORIZATION=f"Api-Key {b_key}")
    assert response.json() == [{"reason": marker, "count": 1}]
