"""Embed codes: the services (create, update, rotate, identity secret, deactivate), the plan's widget limit, the audit
trail, the REST API (/api/v1/embeds/) with roles and API-key scopes, the dashboard pages and `manage.py
create_embed --json`."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from django.core.management import call_command

from accounts.models import AuditEntry
from accounts.services import api_key_create
from config.errors import QuotaExceeded, ValidationFailed
from embeds import security, selectors, services
from embeds.models import Embed
from tests.embeds.conftest import embed_make, in_workspace, workspace_on_plan
from tests.factories import member
from tests.live import BASE_DIR, process_env


@pytest.fixture(scope="module")
def shop(django_db_blocker):
    with django_db_blocker.unblock():
        return workspace_on_plan("Embeds Co", plan="pro")


def test_create_normalises_validates_and_audits(shop):
    embed = embed_make(shop.workspace, ["HTTPS://Shop.Example/", "https://*.shop.example"], name="  Main   site ",
                       theme={"color_primary": "#ABC", "language": "de", "greeting": "Hallo!\n\nFragen?"},
                       behaviour={"collect_email": True}, created_by=shop.owner)
    assert embed.name == "Main site"
    assert embed.allowed_origins == ["https://shop.example", "https://*.shop.example"]
    assert embed.color_primary == "#abc" and embed.language == "de" and embed.greeting == "Hallo!\n\nFragen?"
    assert embed.collect_email is True and embed.show_sources is True and embed.is_active
    assert security.public_key_plausible(embed.public_key)
    assert not embed.identity_verification_enabled
    entry = AuditEntry.objects.filter(workspace=shop.workspace, action="embed.created").latest("id")
    assert entry.actor == shop.owner and embed.public_key in entry.target


@pytest.mark.parametrize("theme, field", [
    ({"color_primary": "red;} body{display:none"}, "color_primary"),
    ({"color_primary": "#12345g"}, "color_primary"),
    ({"color_background": "expression(alert(1))"}, "color_background"),
    ({"color_text": "#fff;background:url(https://evil.example/x)"}, "color_text"),
    ({"color_text": "</style><script>alert(1)</script>"}, "color_text"),
    ({"avatar_url": "http://img.example/a.png"}, "avatar_url"),
    ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
    ({"avatar_url": "https://img.example/a.png\" onerror=\"alert(1)"}, "avatar_url"),
    ({"avatar_url": "data:image/svg+xml,<svg onload=alert(1)>"}, "avatar_url"),
    ({"position": "top-center"}, "position"),
    ({"language": "fr"}, "language"),
    ({"launcher_icon": "https://evil.example/icon.svg"}, "launcher_icon"),
    ({"title": "x" * 61}, "title"),
    ({"unknown": "x"}, "unknown"),
])
def test_theme_values_that_could_break_out_are_refused(shop, theme, field):
    with pytest.raises(ValidationFailed) as refused:
        embed_make(shop.workspace, ["https://shop.example"], theme=theme)
    assert field in refused.value.details["fields"]["theme"]


def test_origins_are_required(shop):
    with pytest.raises(ValidationFailed) as refused:
        embed_make(shop.workspace, [])
    assert refused.value.code == "origin_invalid"


def test_update_records_origin_changes_before_and_after(shop):
    embed = embed_make(shop.workspace, ["https://a.example"])
    updated = in_workspace(shop.workspace, services.embed_update, embed=embed, actor=shop.owner,
                           allowed_origins=["https://a.example", "https://b.example"], theme={"title": "Help"})
    assert updated.allowed_origins == ["https://a.example", "https://b.example"] and updated.title == "Help"
    change = AuditEntry.objects.filter(workspace=shop.workspace, action="embed.origins_changed").latest("id")
    assert change.data == {"before": ["https://a.example"], "after": ["https://a.example", "https://b.example"]}
    assert AuditEntry.objects.filter(workspace=shop.workspace, action="embed.updated", data={"fields": ["title"]}).exists()


def test_rotate_key_identity_secret_and_deactivate(shop):
    embed = embed_make(shop.workspace, ["https://a.example"])
    old_key = embed.public_key
    rotated = in_workspace(shop.workspace, services.embed_public_key_rotate, embed=embed, actor=shop.owner)
    assert rotated.public_key != old_key and security.public_key_plausible(rotated.public_key)
    assert in_workspace(shop.workspace, selectors.embed_by_public_key, public_key=old_key) is None

    embed, secret = in_workspace(shop.workspace, services.embed_identity_secret_rotate, embed=rotated, actor=shop.owner)
    assert secret.startswith("ccis_") and embed.identity_secret_hint == secret[-4:]
    stored = in_workspace(shop.workspace, lambda: Embed.objects.get(pk=embed.pk))
    # Stored encrypted (not readable from the row), and decryptable with the key derived from SECRET_KEY.
    assert secret not in stored.identity_secret_encrypted
    assert security.identity_secret_decrypt(stored.identity_secret_encrypted) == secret
    assert secret not in json.dumps(list(AuditEntry.objects.filter(workspace=shop.workspace).values("data", "target")),
                                    default=str)
    embed, second = in_workspace(shop.workspace, services.embed_identity_secret_rotate, embed=embed, actor=shop.owner)
    assert second != secret

    off = in_workspace(shop.workspace, services.embed_deactivate, embed=embed, actor=shop.owner)
    assert not off.is_active and off.deactivated_at is not None
    on = in_workspace(shop.workspace, services.embed_activate, embed=off, actor=shop.owner)
    assert on.is_active
    actions = set(AuditEntry.objects.filter(workspace=shop.workspace).values_list("action", flat=True))
    assert {"embed.key_rotated", "embed.identity_enabled", "embed.identity_secret_rotated", "embed.deactivated",
            "embed.activated"} <= actions


def test_the_plan_limits_active_widgets(django_db_blocker):
    with django_db_blocker.unblock():
        free = workspace_on_plan("Free Widgets", plan="free")  # one widget
    first = embed_make(free.workspace, ["https://a.example"])
    with pytest.raises(QuotaExceeded) as limit:
        embed_make(free.workspace, ["https://b.example"])
    assert limit.value.code == "plan_limit" and limit.value.details["meter"] == "widgets"
    # A switched-off widget doesn't count; switching it on again is checked too.
    in_workspace(free.workspace, services.embed_deactivate, embed=first)
    second = embed_make(free.workspace, ["https://b.example"])
    with pytest.raises(QuotaExceeded):
        in_workspace(free.workspace, services.embed_activate, embed=first)
    assert in_workspace(free.workspace, lambda: Embed.objects.get(pk=second.pk).is_active)


# --- API -------------------------------------------------------------------------------------------------------
def test_api_crud_with_roles(shop, host_client):
    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    created = owner.post("/api/v1/embeds/", {
        "name": "API site", "allowed_origins": ["https://api.example"], "theme": {"color_primary": "#112233"},
        "behaviour": {"offer_human": False}, "identity_verification": True,
    }, content_type="application/json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["identity_secret"].startswith("ccis_") and body["identity_verification"] is True
    assert body["theme"]["color_primary"] == "#112233" and body["behaviour"]["offer_human"] is False
    assert f'data-embed="{body["public_key"]}"' in body["snippet"] and "/widget/v1/loader.js" in body["snippet"]
    embed_id = body["id"]

    detail = owner.get(f"/api/v1/embeds/{embed_id}/").json()
    assert "identity_secret" not in detail and "identity_secret_encrypted" not in json.dumps(detail)
    assert any(e["id"] == embed_id for e in owner.get("/api/v1/embeds/").json())

    patched = owner.patch(f"/api/v1/embeds/{embed_id}/", {"allowed_origins": ["https://*.api.example"]},
                          content_type="application/json")
    assert patched.status_code == 200 and patched.json()["allowed_origins"] == ["https://*.api.example"]
    bad = owner.patch(f"/api/v1/embeds/{embed_id}/", {"theme": {"color_primary": "red"}},
                      content_type="application/json")
    assert bad.status_code == 400 and "color_primary" in bad.json()["error"]["details"]["fields"]["theme"]

    rotated = owner.post(f"/api/v1/embeds/{embed_id}/rotate-key/").json()
    assert rotated["public_key"] != body["public_key"]
    assert owner.post(f"/api/v1/embeds/{embed_id}/deactivate/").json()["is_active"] is False
    assert owner.post(f"/api/v1/embeds/{embed_id}/activate/").json()["is_active"] is True
    secret = owner.post(f"/api/v1/embeds/{embed_id}/identity-secret/").json()["identity_secret"]
    assert secret.startswith("ccis_") and secret != body["identity_secret"]
    assert owner.delete(f"/api/v1/embeds/{embed_id}/identity-secret/").json()["identity_verification"] is False

    viewer = host_client(shop.host)
    viewer.force_login(member(shop.workspace, "viewer"))
    assert viewer.get(f"/api/v1/embeds/{embed_id}/").status_code == 200
    refused = viewer.post("/api/v1/embeds/", {"name": "x", "allowed_origins": ["https://x.example"]},
                          content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert viewer.post(f"/api/v1/embeds/{embed_id}/rotate-key/").status_code == 403
    assert owner.get("/api/v1/embeds/987654/").status_code == 404


def test_api_keys_read_and_write_scopes(shop, host_client):
    _key, read = api_key_create(workspace=shop.workspace, name="ro", scopes=["read"])
    _key, write = api_key_create(workspace=shop.workspace, name="rw", scopes=["read", "write"])
    reader = host_client(shop.host, HTTP_AUTHORIZATION=f"Api-Key {read}")
    writer = host_client(shop.host, HTTP_AUTHORIZATION=f"Api-Key {write}")
    payload = {"name": "Keyed", "allowed_origins": ["https://keyed.example"]}
    assert reader.get("/api/v1/embeds/").status_code == 200
    assert reader.post("/api/v1/embeds/", payload, content_type="application/json").status_code == 403
    created = writer.post("/api/v1/embeds/", payload, content_type="application/json")
    assert created.status_code == 201 and created.json()["identity_secret"] is None
    entry = AuditEntry.objects.filter(workspace=shop.workspace, action="embed.created").latest("id")
    assert entry.actor is None and entry.actor_label == "api-key:rw"


def test_another_workspaces_embed_is_not_reachable(shop, host_client, django_db_blocker):
    with django_db_blocker.unblock():
        other = workspace_on_plan("Other Embeds", plan="pro")
    theirs = embed_make(other.workspace, ["https://theirs.example"], name="Their secret site")
    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    mine = {e["public_key"] for e in owner.get("/api/v1/embeds/").json()}
    assert theirs.public_key not in mine
    response = owner.get(f"/api/v1/embeds/{theirs.pk}/")
    assert response.status_code == 404 or "Their secret site" not in response.content.decode()


# --- dashboard ---------------------------------------------------------------------------------------------------
def test_dashboard_create_edit_snippet_and_actions(shop, host_client):
    owner = host_client(shop.host)
    owner.force_login(shop.owner)
    assert owner.get("/widgets/").status_code == 200
    form = {
        "name": "Dashboard site", "allowed_origins": "https://dash.example\nhttps://*.dash.example",
        "title": "Need help?", "greeting": "Hello <b>there</b>", "placeholder": "Ask", "color_primary": "#0f766e",
        "color_background": "#ffffff", "color_text": "#111111", "position": "bottom-left", "launcher_icon": "help",
        "avatar_url": "", "language": "auto", "show_sources": "on", "offer_human": "on",
    }
    bad = owner.post("/widgets/new/", {**form, "allowed_origins": "dash.example", "color_primary": "red"})
    assert bad.status_code == 400
    assert b"Write the scheme too" in bad.content and b"Use a colour like" in bad.content
    created = owner.post("/widgets/new/", form)
    assert created.status_code == 302, created.content[:2000]
    page = owner.get(created["Location"])
    html = page.content.decode()
    embed = in_workspace(shop.workspace, lambda: Embed.objects.get(name="Dashboard site"))
    assert embed.allowed_origins == ["https://dash.example", "https://*.dash.example"] and embed.position == "bottom-left"
    assert f"data-embed=&quot;{embed.public_key}&quot;" in html  # the snippet, shown as text
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in html and "<b>there</b>" not in html
    assert 'data-widget-preview' in html

    secret_page = owner.post(f"/widgets/{embed.pk}/actions/", {"action": "rotate_secret"})
    assert secret_page.status_code == 200 and secret_page["Cache-Control"] == "no-store"
    secret = re.search(r'data-testid="identity-secret">([^<]+)<', secret_page.content.decode()).group(1)
    assert secret.startswith("ccis_")
    assert secret not in owner.get(f"/widgets/{embed.pk}/").content.decode()  # shown once

    owner.post(f"/widgets/{embed.pk}/actions/", {"action": "rotate_key"})
    owner.post(f"/widgets/{embed.pk}/actions/", {"action": "deactivate"})
    after = in_workspace(shop.workspace, lambda: Embed.objects.get(pk=embed.pk))
    assert after.public_key != embed.public_key and not after.is_active

    viewer = host_client(shop.host)
    viewer.force_login(member(shop.workspace, "viewer"))
    assert viewer.get(f"/widgets/{embed.pk}/").status_code == 200
    assert viewer.post(f"/widgets/{embed.pk}/", form).status_code == 403
    assert viewer.get("/widgets/new/").status_code == 403
    assert viewer.post(f"/widgets/{embed.pk}/actions/", {"action": "activate"}).status_code == 403


# --- operator command --------------------------------------------------------------------------------------------
def test_create_embed_command_prints_json(shop):
    out = io.StringIO()
    call_command("create_embed", "--workspace", shop.workspace.slug, "--name", "site", "--origin",
                 "https://shop.example", "--origin", "https://*.shop.example", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert set(data) >= {"public_key", "snippet"}
    assert data["snippet"] == (f'<script src="{selectors.workspace_base_url(shop.workspace)}/widget/v1/loader.js" '
                               f'data-embed="{data["public_key"]}" async></script>')
    assert data["allowed_origins"] == ["https://shop.example", "https://*.shop.example"]
    assert in_workspace(shop.workspace, selectors.embed_by_public_key, public_key=data["public_key"]) is not None


def test_create_embed_command_errors_in_the_error_shape(shop):
    from django.db import connection

    env = process_env(connection.settings_dict)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", "create_embed", *args, "--json"], cwd=BASE_DIR, env=env,
                              capture_output=True, text=True, timeout=180)

    bad_origin = run("--workspace", shop.workspace.slug, "--name", "x", "--origin", "ftp://nope.example")
    assert bad_origin.returncode == 1 and json.loads(bad_origin.stdout)["error"]["code"] == "origin_invalid"
    missing = run("--workspace", "no-such-workspace", "--name", "x", "--origin", "https://a.example")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "workspace_not_found"
