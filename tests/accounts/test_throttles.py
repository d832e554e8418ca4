"""Throttles of the doors that take a secret or send mail (accounts/throttles.py): the Django admin's login counts
against the same per-e-mail and per-IP budgets as the product login, and password-reset requests are limited per
client address and per e-mail."""
from __future__ import annotations

import re
import secrets

import pytest
from django.conf import settings

from accounts.models import User
from config.throttle import parse_rate, throttle_reset
from tests.factories import PASSWORD

PUBLIC_HOST = "localhost"


def unique_ip() -> str:
    return "10.{}.{}.{}".format(*secrets.token_bytes(3))


@pytest.fixture
def counted():
    """Identities a test spends; their counters are cleared afterwards."""
    spent: list[tuple[str, str]] = []
    yield spent
    for scope, ident in spent:
        throttle_reset(scope, ident)


def admin_login(client, email: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": email, "password": password})


def staff_user() -> User:
    return User.objects.create_user(email=f"staff-{secrets.token_hex(4)}@example.test", password=PASSWORD,
                                    is_staff=True, is_superuser=True)


def test_admin_login_is_throttled_per_email_like_the_product_login(host_client, counted):
    staff = staff_user()
    counted.append(("login-email", staff.email))
    limit, _window = parse_rate(settings.LOGIN_THROTTLE)
    for attempt in range(limit):
        ip = unique_ip()
        counted.append(("login-ip", ip))
        wrong = admin_login(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), staff.email, f"wrong-{attempt}")
        assert wrong.status_code == 200 and "Location" not in wrong  # Django admin's own "wrong password" page

    ip = unique_ip()
    counted.append(("login-ip", ip))
    client = host_client(PUBLIC_HOST, REMOTE_ADDR=ip)
    refused = admin_login(client, staff.email, PASSWORD)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many failed attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # one budget: the product login refuses the same e-mail too
    assert host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()).post(
        "/login/", {"email": staff.email, "password": PASSWORD}).status_code == 429

    throttle_reset("login-email", staff.email)
    ok = admin_login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), staff.email, PASSWORD)
    assert ok.status_code == 302 and ok["Location"] == "/admin/"


def test_admin_login_is_throttled_per_ip_across_accounts(host_client, counted):
    staff = staff_user()
    ip = unique_ip()
    counted.append(("login-ip", ip))
    limit, _window = parse_rate(settings.LOGIN_THROTTLE)
    for _ in range(limit):
        email = f"nobody-{secrets.token_hex(4)}@example.test"
        counted.append(("login-email", email))
        assert admin_login(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email, "wrong-password-1").status_code == 200
    counted.append(("login-email", staff.email))
    assert admin_login(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), staff.email, PASSWORD).status_code == 429
    assert admin_login(host_client(PUBLIC_HOST, REMOTE_ADDR=unique_ip()), staff.email, PASSWORD).status_code == 302


def reset(client, email: str):
    return client.post("/password-reset/", {"email": email})


def test_password_reset_is_throttled_per_email(host_client, counted, mailoutbox, tenant):
    email = tenant.owner.email
    counted.append(("password-reset-email", email))
    limit, _window = parse_rate(settings.PASSWORD_RESET_THROTTLE_EMAIL)
    for _ in range(limit):
        ip = unique_ip()
        counted.append(("password-reset-ip", ip))
        assert reset(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email).status_code == 302
    assert len(mailoutbox) == limit

    ip = unique_ip()
    counted.append(("password-reset-ip", ip))
    refused = reset(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email.upper())
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "Too many reset requests" in refused.content.decode()
    assert len(mailoutbox) == limit  # no further mail


def test_password_reset_is_throttled_per_ip_for_known_and_unknown_addresses(host_client, counted, mailoutbox):
    ip = unique_ip()
    counted.append(("password-reset-ip", ip))
    limit, _window = parse_rate(settings.PASSWORD_RESET_THROTTLE_IP)
    for _ in range(limit):
        email = f"nobody-{secrets.token_hex(4)}@example.test"
        counted.append(("password-reset-email", email))
        assert reset(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email).status_code == 302
    email = f"nobody-{secrets.token_hex(4)}@example.test"
    counted.append(("password-reset-email", email))
    refused = reset(host_client(PUBLIC_HOST, REMOTE_ADDR=ip), email)
    assert refused.status_code == 429
    assert re.search(r"Try again in \d+ minute", refused.content.decode())
    # another address is not affected
    other = unique_ip()
    counted.append(("password-reset-ip", other))
    assert reset(host_client(PUBLIC_HOST, REMOTE_ADDR=other), email).status_code == 302
