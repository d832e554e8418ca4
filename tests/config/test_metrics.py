"""/metrics: Prometheus text on the public host, HTTP latency by route pattern, nothing secret."""
from __future__ import annotations

from django.test import override_settings


def test_metrics_expose_latency_by_route_pattern(tenant, host_client):
    client = host_client(tenant.host)
    client.force_login(tenant.owner)
    assert client.get("/team/").status_code == 200
    response = host_client("localhost").get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'ccgpt_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/team/",status="2xx"}' in text
    # Labels are patterns, never concrete paths or hosts.
    assert tenant.workspace.slug not in text and tenant.owner.email not in text


def test_metrics_are_not_served_on_workspace_hosts(tenant, host_client):
    assert host_client(tenant.host).get("/metrics").status_code == 404


@override_settings(METRICS_REQUIRE_TOKEN=True, OPS_TOKEN="ops-secret-token")
def test_metrics_can_require_the_ops_token(host_client):
    client = host_client("localhost")
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_X_OPS_TOKEN="ops-secret-token").status_code == 200
