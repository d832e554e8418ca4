"""Signup, login and the cross-host handoff through Django's test client, in-process, on the real database.

Bad input (issue #2): taken, reserved, invalid, SQL-ish and unicode-trick slugs, weak passwords and known emails give a
4xx page naming the field and create nothing; login throttling; unknown hosts; members of one workspace on another's
host; handoff tokens that are reused or meant for another workspace; the password-reset round trip.
"""
from __future__ import annotations

import html
import re
import secrets
from urllib.parse import parse_qs, urlparse

import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Membership, User
from accounts.services import invitation_create, login_handoff_token, membership_create
from config.throttle import parse_rate, throttle_reset
from tenants.models import Domain, Workspace
from tenants.selectors import public_url
from tenants.services import schema_name_for_slug
from tests.factories import PASSWORD, member, unique_slug, workspace_with_owner

PUBLIC_HOST = "localhost"
STRONG_PASSWORD = "Correct-Horse-Battery-9"


# --- helpers -------------------------------------------------------------------------------------------------------


def unique_email(prefix: str = "signup") -> str:
    return f"{prefix}-{secrets.token_hex(5)}@example.test"


def unique_ip() -> str:
    """A client address of its own, so the per-IP login throttle of one test never leaks into another."""
    return "10.{}.{}.{}".format(*secrets.token_bytes(3))


def field_errors(page: str, field: str) -> list[str]:
    """The error messages rendered under one form field (templates/partials/form.html)."""
    match = re.search(
        rf'<div class="field has-error">\s*<label for="id_{field}">.*?(?=<div class="field|</form>)', page, re.S
    )
    if not match:
        return []
    return [html.unescape(m) for m in re.findall(r'<p class="field-error" role="alert">(.*?)</p>', match.group(0))]


def form_errors(page: str) -> list[str]:
    match = re.search(r'<div class="form-errors" role="alert">(.*?)</div>', page, re.S)
    return [html.unescape(m) for m in re.findall(r"<p>(.*?)</p>", match.group(1))] if match else []


def workspace_schemas() -> set[str]:
    """Schemas of real workspaces (not the warm pool's `ws__pool_*` or other `ws__*` helpers)."""
    with connection.cursor() as cursor:
        cursor.execute(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ws\_%' AND nspname NOT LIKE 'ws\_\_%'")
        return {row[0] for row in cursor.fetchall()}


def snapshot() -> tuple[set[str], set[str], int, int, int]:
    return (
        set(Workspace.objects.values_list("slug", flat=True)),
        workspace_schemas(),
        Domain.objects.count(),
        User.objects.count(),
        Membership.objects.count(),
    )


def signup_data(**overrides: str) -> dict[str, str]:
    data = {
        "full_name": "Ada Signup",
        "email": unique_email(),
        "password": STRONG_PASSWORD,
        "workspace_name": "Acme Support",
        "slug": unique_slug("acme"),
    }
    data.update(overrides)
    return data


def login(client, email: str, password: str):
    return client.post("/login/", {"email": email, "password": password})


def handoff_token(location: str) -> str:
    return parse_qs(urlparse(location).query)["token"][0]


# --- signup --------------------------------------------------------------------------------------------------------


def test_signup_creates_the_workspace_and_hands_off_to_its_host(host_client):
    """The control case for the bad-input tests below: the same form with good input does create everything."""
    client = host_client(PUBLIC_HOST)
    assert client.get("/signup/").status_code == 200
    data = signup_data()
    response = client.post("/signup/", data)

    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert location.hostname == f"{data['slug']}.{settings.BASE_DOMAIN}"
    assert location.path == "/auth/handoff/"
    workspace = Workspace.objects.get(slug=data["slug"])
    assert workspace.name == "Acme Support"
    assert schema_name_for_slug(data["slug"]) in workspace_schemas()
    assert Membership.objects.get(workspace=workspace, user__email=data["email"]).role == "owner"

    # The handoff lands the owner in the dashboard of the new workspace.
    workspace_client = host_client(location.hostname)
    assert workspace_client.get(f"/auth/handoff/?{location.query}")["Location"] == "/"
    page = workspace_client.get("/")
    assert page.status_code == 200
    assert "Acme Support" in page.content.decode()


def test_signup_without_a_slug_derives_one_from_the_name(host_client):
    data = signup_data(slug="", workspace_name=f"Zebra Tours {secrets.token_hex(3)}")
    response = host_client(PUBLIC_HOST).post("/signup/", data)
    assert response.status_code == 302
    workspace = Workspace.objects.get(memberships__user__email=data["email"])
    assert workspace.slug == data["workspace_name"].lower().replace(" ", "-")


BAD_SLUGS = {
    # reserved names (subdomains and schemas the platform uses)
    "www": (400, "reserved"),
    "api": (400, "reserved"),
    "admin": (400, "reserved"),
    "public": (400, "reserved"),
    # not valid as a schema-ish name
    "a": (400, "3-40 lowercase letters"),
    "-x": (400, "3-40 lowercase letters"),
    "x_y": (400, "3-40 lowercase letters"),
    "Acme": (400, "3-40 lowercase letters"),
    "acme--x": (400, "3-40 lowercase letters"),
    "a" * 41: (400, "at most 40 characters"),
    "9lives": (400, "3-40 lowercase letters"),
    "acme-": (400, "3-40 lowercase letters"),
    # SQL-ish
    "a';drop schema public;--": (400, "3-40 lowercase letters"),
    'acme"; drop table x': (400, "3-40 lowercase letters"),
    # unicode tricks
    "ａｃｍｅ": (400, "lowercase letters, digits and dashes only"),  # fullwidth letters (NFKC folds them to "acme")
    "аcme": (400, "lowercase letters, digits and dashes only"),  # Cyrillic "а" homoglyph
    "ac\u200dme": (400, "lowercase letters, digits and dashes only"),  # zero-width joiner
    "acme\u0301": (400, "lowercase letters, digits and dashes only"),  # combining accent
}


@pytest.mark.parametrize("slug", list(BAD_SLUGS), ids=[repr(s) for s in BAD_SLUGS])
def test_signup_refuses_a_bad_slug_and_creates_nothing(host_client, slug):
    status, words = BAD_SLUGS[slug]
    data = signup_data(slug=slug)
    before = snapshot()

    response = host_client(PUBLIC_HOST).post("/signup/", data)

    assert response.status_code == status
    page = response.content.decode()
    errors = field_errors(page, "slug")
    assert errors and any(words in error for error in errors), (errors, form_errors(page))
    assert "Create your workspace" in page  # the form again, with what was typed
    assert snapshot() == before
    assert not User.objects.filter(email=data["email"]).exists()


def test_signup_refuses_a_taken_slug_and_creates_nothing(host_client):
    taken = workspace_with_owner(name="Taken Co")
    data = signup_data(slug=taken.workspace.slug, workspace_name="Another Co")
    before = snapshot()

    response = host_client(PUBLIC_HOST).post("/signup/", data)

    assert response.status_code == 409
    assert field_errors(response.content.decode(), "slug") == ["That workspace address is taken."]
    assert snapshot() == before
    assert Workspace.objects.get(slug=taken.workspace.slug).name == "Taken Co"


WEAK_PASSWORDS = {
    "short": ("Ab1!xyz", "too short"),
    "common": ("password123", "too common"),
    "numeric": ("83027491650", "entirely numeric"),
    "like the email": ("zanzibar-bookkeeping", "too similar"),
}


@pytest.mark.parametrize("kind", list(WEAK_PASSWORDS))
def test_signup_refuses_a_weak_password_and_creates_nothing(host_client, kind):
    password, words = WEAK_PASSWORDS[kind]
    data = signup_data(password=password, email=f"zanzibar-bookkeeping-{secrets.token_hex(3)}@example.test")
    before = snapshot()

    response = host_client(PUBLIC_HOST).post("/signup/", data)

    assert response.status_code == 400
    page = response.content.decode()
    errors = field_errors(page, "password")
    assert any(words in error for error in errors), (errors, form_errors(page))
    assert f'value="{password}"' not in page  # a password is never echoed back
    assert snapshot() == before


def test_signup_refuses_an_existing_email_and_creates_nothing(host_client):
    existing = workspace_with_owner()
    data = signup_data(email=existing.owner.email.upper())  # emails are case-insensitive
    before = snapshot()

    response = host_client(PUBLIC_HOST).post("/signup/", data)

    assert response.status_code == 409
    assert field_errors(response.content.decode(), "email") == ["An account with this email exists; log in instead."]
    assert snapshot() == before


@pytest.mark.parametrize(
    "overrides, field",
    [({"email": "not-an-email"}, "email"), ({"workspace_name": "   "}, "workspace_name"), ({"password": ""}, "password")],
)
def test_signup_refuses_missing_or_malformed_fields(host_client, overrides, field):
    before = snapshot()
    response = host_client(PUBLIC_HOST).post("/signup/", signup_data(**overrides))
    assert response.status_code == 400
    assert field_errors(response.content.decode(), field)
    assert snapshot() == before


# --- login and throttling ------------------------------------------------------------------------------------------


@pytest.fixture
def throttled_identities():
    """Emails and IPs a test throttles; their counters are cleared afterwards so nothing else is refused."""
    emails: list[str] = []
    ips: list[str] = []
    yield emails, ips
    for email in emails:
        throttle_reset("login-email", email)
    for ip in ips:
        throttle_reset("login-ip", ip)


def test_public_login_sends_a_member_to_their_workspace(host_client, tenant):
    response = login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), tenant.owner.email, PASSWORD)
    assert response.status_code == 302
    location = urlparse(response["Location"])
    assert (location.hostname, location.path) == (tenant.host, "/auth/handoff/")


def test_wrong_password_is_refused_with_the_same_words_for_unknown_accounts(host_client, tenant, throttled_identities):
    emails, ips = throttled_identities
    ip = unique_ip()
    ips.append(ip)
    client = host_client(PUBLIC_HOST, REMOTE_ADDR=ip)
    unknown = unique_email("nobody")
    emails.extend([tenant.owner.email, unknown])

    wrong = login(client, tenant.owner.email, "Not-the-password-1")
    missing = login(client, unknown, "Not-the-password-1")

    assert wrong.status_code == missing.status_code == 400
    assert form_errors(wrong.content.decode()) == form_errors(missing.content.decode()) == ["Email or password is wrong."]


def test_login_is_throttled_per_email_even_with_the_right_password(host_client, throttled_identities):
    emails, ips = throttled_identities
    ws = workspace_with_owner()
    email = ws.owner.email
    emails.append(email)
    limit, _window = parse_rate(settings.LOGIN_THROTTLE)

    for attempt in range(limit):
        ip = unique_ip()  # a different address each time: the per-email budget alone must stop this
        ips.append(ip)
        assert login(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email, f"wrong-{attempt}").status_code == 400

    ip = unique_ip()
    ips.append(ip)
    refused = login(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email, PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed attempts" in form_errors(refused.content.decode())[0]
    assert "Location" not in refused

    # The budget is the platform's, not the host's: the workspace's own login refuses too.
    on_workspace = login(host_client(ws.host, REMOTE_ADDR=ip), email, PASSWORD)
    assert on_workspace.status_code == 429
    assert "_auth_user_id" not in host_client(ws.host).session

    # Once the counter is cleared, the right password works again.
    throttle_reset("login-email", email)
    assert login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), email, PASSWORD).status_code == 302


def test_login_is_throttled_per_ip_across_accounts(host_client, throttled_identities):
    emails, ips = throttled_identities
    ip = unique_ip()
    ips.append(ip)
    client = host_client(PUBLIC_HOST, REMOTE_ADDR=ip)
    limit, _window = parse_rate(settings.LOGIN_THROTTLE)
    for _ in range(limit):
        email = unique_email("spray")
        emails.append(email)
        assert login(client, email, "Guess-password-1").status_code == 400

    victim = workspace_with_owner()
    emails.append(victim.owner.email)
    assert login(client, victim.owner.email, PASSWORD).status_code == 429
    # Another address is not affected.
    assert login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), victim.owner.email, PASSWORD).status_code == 302


def test_workspace_login_admits_members_only(host_client, tenant, other_tenant, throttled_identities):
    emails, ips = throttled_identities
    ip = unique_ip()
    ips.append(ip)
    emails.append(other_tenant.owner.email)

    outsider = login(host_client(tenant.host, REMOTE_ADDR=ip), other_tenant.owner.email, PASSWORD)
    assert outsider.status_code == 400
    assert form_errors(outsider.content.decode()) == ["Email or password is wrong."]

    client = host_client(tenant.host, REMOTE_ADDR=ip)
    response = client.post("/login/?next=/team/", {"email": tenant.owner.email, "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, "/team/")
    # An open redirect to another host is refused.
    response = host_client(tenant.host, REMOTE_ADDR=ip).post(
        "/login/?next=http://evil.example/", {"email": tenant.owner.email, "password": PASSWORD}
    )
    assert (response.status_code, response["Location"]) == (302, "/")


# --- hosts ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["nope-does-not-exist.localhost", "pool.localhost", "ws-x.localhost"])
def test_unknown_host_gets_a_clear_404_page(host_client, host):
    for path in ("/", "/login/", "/team/"):
        response = host_client(host).get(path)
        assert response.status_code == 404
        page = response.content.decode()
        assert "No workspace at this address" in page
        assert "Traceback" not in page
        assert f'href="{public_url()}"' in page  # the way out leads to the public site, not to this host again
    # The page's stylesheet is served on any host (static files come before host resolution).
    stylesheet = host_client(host).get("/static/css/app.css")
    assert stylesheet.status_code == 200
    assert stylesheet["Content-Type"].startswith("text/css")


def test_unknown_host_gets_a_json_error_on_api_paths(host_client):
    response = host_client("nope-does-not-exist.localhost").get("/api/v1/me/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "workspace_not_found"


def test_member_of_a_on_b_host_gets_403_revealing_nothing_of_b(host_client, tenant, other_tenant):
    b = other_tenant
    b_viewer = member(b.workspace, "viewer")
    client = host_client(tenant.host, REMOTE_ADDR=unique_ip())
    assert login(client, tenant.owner.email, PASSWORD).status_code == 302

    # The test client sends its cookies to every host, which is what a session on B's host would look like.
    client.defaults["HTTP_HOST"] = b.host
    secrets_of_b = [b.workspace.name, b.owner.email, b_viewer.email, b.workspace.schema_name]
    for path in ("/", "/team/", "/settings/", "/knowledge/", "/settings/api-keys/"):
        response = client.get(path)
        assert response.status_code == 403, path
        page = response.content.decode()
        assert "not a member of this workspace" in page
        for secret in secrets_of_b:
            assert secret not in page, (path, secret)

    api = client.get("/api/v1/members/")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "not_a_member"
    for secret in secrets_of_b:
        assert secret not in api.content.decode()

    # B's invitation page never accepts A's session for B's invitation links it doesn't have.
    assert client.get("/invitations/not-a-real-token/").status_code == 404


# --- handoff tokens ------------------------------------------------------------------------------------------------


def test_handoff_token_works_once(host_client, tenant):
    response = login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), tenant.owner.email, PASSWORD)
    token = handoff_token(response["Location"])

    first = host_client(tenant.host)
    assert first.get(f"/auth/handoff/?token={token}")["Location"] == "/"
    assert first.get("/").status_code == 200

    second = host_client(tenant.host)
    reused = second.get(f"/auth/handoff/?token={token}", follow=True)
    assert reused.redirect_chain[0] == ("/login/", 302)
    assert "not valid here" in reused.content.decode()
    assert second.get("/").status_code == 302  # still not logged in


def test_handoff_token_for_another_workspace_is_refused(host_client, tenant, other_tenant):
    both = member(tenant.workspace, "agent")
    membership_create(workspace=other_tenant.workspace, user=both, role="viewer")
    token_for_a = login_handoff_token(user=both, workspace=tenant.workspace)

    on_b = host_client(other_tenant.host)
    response = on_b.get(f"/auth/handoff/?token={token_for_a}", follow=True)
    assert response.redirect_chain[0] == ("/login/", 302)
    assert "not valid here" in response.content.decode()
    assert on_b.get("/").status_code == 302

    # Refused on B, the token still works where it was meant to go.
    on_a = host_client(tenant.host)
    assert on_a.get(f"/auth/handoff/?token={token_for_a}")["Location"] == "/"


@pytest.mark.parametrize("token", ["", "garbage", "eyJ1IjoxfQ:1tamper:ed"])
def test_malformed_handoff_token_is_refused(host_client, tenant, token):
    client = host_client(tenant.host)
    response = client.get(f"/auth/handoff/?token={token}", follow=True)
    assert response.redirect_chain[0] == ("/login/", 302)
    assert "expired" in response.content.decode()
    assert client.get("/").status_code == 302


def test_handoff_token_of_a_removed_member_is_refused(host_client, tenant):
    leaver = member(tenant.workspace, "agent")
    token = login_handoff_token(user=leaver, workspace=tenant.workspace)
    Membership.objects.filter(workspace=tenant.workspace, user=leaver).delete()

    client = host_client(tenant.host)
    response = client.get(f"/auth/handoff/?token={token}", follow=True)
    assert response.redirect_chain[0] == ("/login/", 302)
    assert "not a member" in response.content.decode()


# --- password reset ------------------------------------------------------------------------------------------------


def test_password_reset_sends_a_link_that_sets_a_new_password(host_client, mailoutbox):
    ws = workspace_with_owner()
    email = ws.owner.email
    client = host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip())

    response = client.post("/password-reset/", {"email": email.upper()})
    assert (response.status_code, response["Location"]) == (302, "/password-reset/sent/")
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [email]
    link = re.search(r"https?://\S+/reset/\S+/", mailoutbox[0].body).group(0)
    assert urlparse(link).hostname == PUBLIC_HOST

    form_page = client.get(urlparse(link).path, follow=True)
    assert form_page.status_code == 200
    set_password_path = form_page.redirect_chain[-1][0]
    assert set_password_path.endswith("/set-password/")

    weak = client.post(set_password_path, {"new_password1": "password123", "new_password2": "password123"})
    assert "too common" in html.unescape(weak.content.decode())

    new_password = "Brand-new-password-77"
    done = client.post(set_password_path, {"new_password1": new_password, "new_password2": new_password})
    assert (done.status_code, done["Location"]) == (302, "/reset/done/")

    assert login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), email, PASSWORD).status_code == 400
    assert login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), email, new_password).status_code == 302
    # The link is single-use: it stops working once the password changed.
    reused = host_client(PUBLIC_HOST).get(urlparse(link).path, follow=True)
    assert "not valid any more" in reused.content.decode()
    throttle_reset("login-email", email)


def test_password_reset_for_an_unknown_email_sends_nothing_and_says_the_same(host_client, mailoutbox):
    response = host_client(PUBLIC_HOST).post("/password-reset/", {"email": unique_email("ghost")})
    assert (response.status_code, response["Location"]) == (302, "/password-reset/sent/")
    assert mailoutbox == []


# --- links ---------------------------------------------------------------------------------------------------------


def local_links(page: str) -> set[str]:
    return {href for href in re.findall(r'href="(/[^"/][^"]*|/)"', page) if not href.startswith("/static/")}


def test_pages_anyone_can_reach_link_only_to_pages_that_exist(host_client, tenant):
    """Public pages and a workspace host's anonymous pages (login, invitation, errors): every local link resolves
    on the host it is shown on (a workspace host has no /signup/, for one)."""
    _invitation, token = invitation_create(
        workspace=tenant.workspace, email=unique_email("linkcheck"), role="viewer", invited_by=tenant.owner,
        actor_role="owner",
    )
    pages = {
        PUBLIC_HOST: ["/", "/signup/", "/login/", "/password-reset/", "/no-such-page/"],
        tenant.host: ["/login/", f"/invitations/{token}/", "/invitations/not-a-token/", "/no-such-page/"],
    }
    for host, paths in pages.items():
        client = host_client(host)
        for path in paths:
            page = client.get(path).content.decode()
            links = local_links(page)
            assert links, (host, path)
            for href in links:
                assert client.get(href).status_code in (200, 302), (host, path, href)
