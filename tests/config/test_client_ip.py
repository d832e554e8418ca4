"""Who the client is (config/client_ip.py): X-Forwarded-For counts only when the direct peer is one of our own
proxies (TRUSTED_PROXIES), read from the right; the same answer for an HttpRequest and for an ASGI scope; and the
login throttle over HTTP uses it (a rotating header does not buy a fresh per-IP budget)."""
from __future__ import annotations

import secrets

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from config.client_ip import UNKNOWN, client_ip
from config.throttle import parse_rate, throttle_reset


def request(peer: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def scope(peer: str | None, *forwarded: str) -> dict:
    return {"type": "websocket", "client": (peer, 50000) if peer else None,
            "headers": [(b"host", b"x"), *((b"x-forwarded-for", value.encode()) for value in forwarded)]}


@pytest.mark.parametrize("make", [request, lambda peer, fwd=None: scope(peer, *([fwd] if fwd else []))])
def test_forwarded_for_is_ignored_without_trusted_proxies(settings, make):
    settings.TRUSTED_PROXIES = []
    assert client_ip(make("127.0.0.1", "203.0.113.9")) == "127.0.0.1"
    assert client_ip(make("198.51.100.4", "203.0.113.9, 10.0.0.1")) == "198.51.100.4"


@pytest.mark.parametrize("make", [request, lambda peer, fwd=None: scope(peer, *([fwd] if fwd else []))])
def test_forwarded_for_from_a_trusted_proxy_is_walked_from_the_right(settings, make):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    # the client wrote "1.1.1.1" itself; our proxies appended the real address and each other's
    assert client_ip(make("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.2.3.4")) == "203.0.113.9"
    assert client_ip(make("10.9.9.9", "203.0.113.10")) == "203.0.113.10"
    # a peer that is not our proxy: its header means nothing
    assert client_ip(make("198.51.100.4", "203.0.113.9")) == "198.51.100.4"
    # a trusted peer without the header, or only proxies in it: the furthest address reached
    assert client_ip(make("127.0.0.1")) == "127.0.0.1"
    assert client_ip(make("127.0.0.1", "10.1.1.1")) == "10.1.1.1"
    # garbage stops the walk at the last good address; ports and brackets are dropped
    assert client_ip(make("127.0.0.1", "<script>, 203.0.113.9")) == "203.0.113.9"
    assert client_ip(make("127.0.0.1", "nonsense")) == "127.0.0.1"
    assert client_ip(make("127.0.0.1", "203.0.113.9:4711")) == "203.0.113.9"
    assert client_ip(make("127.0.0.1", "[2001:db8::7]:4711")) == "2001:db8::7"


def test_several_forwarded_headers_on_a_socket_are_one_list(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert client_ip(scope("127.0.0.1", "1.1.1.1", "203.0.113.9")) == "203.0.113.9"


def test_unreadable_peer_and_bad_setting(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip(scope(None)) == UNKNOWN
    assert client_ip(request("")) == UNKNOWN
    assert client_ip(request("::ffff:192.0.2.1")) == "192.0.2.1"
    settings.TRUSTED_PROXIES = ["not-a-network"]
    with pytest.raises(ImproperlyConfigured):
        client_ip(request("127.0.0.1", "203.0.113.9"))


@pytest.mark.django_db
def test_login_ip_budget_is_not_escaped_by_rotating_forwarded_for(settings, host_client):
    settings.TRUSTED_PROXIES = []
    peer = "10.{}.{}.{}".format(*secrets.token_bytes(3))
    limit, _window = parse_rate(settings.LOGIN_THROTTLE)
    emails = [f"nobody-{secrets.token_hex(4)}@example.test" for _ in range(limit + 1)]
    try:
        for email in emails[:limit]:
            spoofed = f"203.0.113.{secrets.randbelow(250)}"
            client = host_client("localhost", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=spoofed)
            assert client.post("/login/", {"email": email, "password": "wrong-password-1"}).status_code == 400
        client = host_client("localhost", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="198.51.100.77")
        assert client.post("/login/", {"email": emails[-1], "password": "wrong-password-1"}).status_code == 429
        # behind a trusted proxy the forwarded address is the client: another address, another budget
        settings.TRUSTED_PROXIES = [peer]
        assert client.post("/login/", {"email": emails[-1], "password": "wrong-password-1"}).status_code == 400
    finally:
        for email in emails:
            throttle_reset("login-email", email)
        for ip in (peer, "198.51.100.77"):
            throttle_reset("login-ip", ip)
