"""Content-Security-Policy on our HTML pages; the widget frame keeps its own; JSON and the API docs get none."""
from __future__ import annotations


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


def test_json_responses_and_the_api_docs_page_carry_no_page_policy(tenant, host_client):
    client = host_client(tenant.host)
    assert "Content-Security-Policy" not in client.get("/api/v1/me/")
    assert "Content-Security-Policy" not in client.get("/api/docs/")


def test_the_widget_frame_keeps_its_own_policy(tenant, host_client):
    from django_tenants.utils import tenant_context

    from embeds.services import embed_create

    with tenant_context(tenant.workspace):
        embed = embed_create(name="csp", allowed_origins=["https://shop.example"])
    response = host_client(tenant.host).get(f"/widget/v1/frame/{embed.public_key}/?o=https://shop.example",
                                            HTTP_SEC_FETCH_DEST="iframe")
    policy = _directives(response["Content-Security-Policy"])
    assert policy["frame-ancestors"] == "https://shop.example"
