"""Content-Security-Policy on our HTML pages (the API docs included); the widget frame keeps its own; JSON gets none."""
from __future__ import annotations

import pytest


def _directives(header: str) -> dict[str, str]:
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] if " " in part else "" for part in header.split("; ")}


def test_dashboard_pages_get_a_strict_policy(tenant, host_client):
    client = host_client(tenant.host)
    client.force_login(tenant.owner)
    for path in ("/", "/knowledge/", "/team/", "/login/"):
        response = client.get(path)
        assert response.status_code in (200, 302), path
        policy = _directives(response["Content-Security-Policy"])
        assert policy["script-src"] == "'self'", path  # no inline scripts, no eval
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'", path
        assert policy["connect-src"] == f"'self' ws://{tenant.host}", path


def test_public_pages_and_error_pages_get_it_too(host_client):
    response = host_client("localhost").get("/signup/")
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_json_responses_carry_no_page_policy(tenant, host_client):
    assert "Content-Security-Policy" not in host_client(tenant.host).get("/api/v1/me/")


def test_the_api_docs_page_is_under_the_policy_and_uses_no_cdn(tenant, host_client):
    client = host_client(tenant.host)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert _directives(response["Content-Security-Policy"])["script-src"] == "'self'"
    html = response.content.decode()
    assert "cdn.jsdelivr.net" not in html and "<script>" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


@pytest.mark.browser
def test_swagger_ui_renders_the_schema_without_a_policy_violation(page, live_server, tenant):
    """The `context` fixture fails the test on any CSP violation; the page must also draw the operations."""
    from playwright.sync_api import expect

    requested: set[str] = set()
    page.on("request", lambda request: requested.add(request.url.split("/")[2]))
    page.goto(live_server.url(tenant.host, "/api/docs/"))
    expect(page.locator(".opblock").first).to_be_visible(timeout=60_000)
    assert requested == {f"{tenant.host}:{live_server.port}"}  # nothing from a CDN


def test_the_widget_frame_keeps_its_own_policy(tenant, host_client):
    from django_tenants.utils import tenant_context

    from embeds.services import embed_create

    with tenant_context(tenant.workspace):
        embed = embed_create(name="csp", allowed_origins=["https://shop.example"])
    response = host_client(tenant.host).get(f"/widget/v1/frame/{embed.public_key}/?o=https://shop.example",
                                            HTTP_SEC_FETCH_DEST="iframe")
    policy = _directives(response["Content-Security-Policy"])
    assert policy["frame-ancestors"] == "https://shop.example"
