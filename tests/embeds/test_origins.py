"""Allowed origins: what staff may type (normalised, validated) and what browsers' origins match."""
from __future__ import annotations

import pytest

from config.errors import ValidationFailed
from embeds.origins import OriginError, origin_matches, origin_normalize, origins_clean


@pytest.mark.parametrize("typed, canonical", [
    ("https://shop.example", "https://shop.example"),
    ("HTTPS://Shop.Example/", "https://shop.example"),
    ("https://shop.example:443", "https://shop.example"),
    ("http://shop.example:80", "http://shop.example"),
    ("https://shop.example:8443", "https://shop.example:8443"),
    ("  https://shop.example  ", "https://shop.example"),
    ("https://*.shop.example", "https://*.shop.example"),
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("http://shop.localhost:8123", "http://shop.localhost:8123"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
])
def test_origins_are_normalised_to_what_browsers_send(typed, canonical):
    assert origin_normalize(typed) == canonical


@pytest.mark.parametrize("typed", [
    "", "shop.example", "ftp://shop.example", "javascript:alert(1)", "https://shop.example/path",
    "https://shop.example?x=1", "https://shop.example#x", "https://user:pw@shop.example", "https://*.example",
    "https://*", "*", "https://sh*p.example", "https://*.*.shop.example", "https://shop .example",
    "https://shop.example:99999", "https://[::1]", "https://-bad-.example", "null", "https://shop.ex\nample",
    "https://shop_example.com", "https://" + "a" * 300 + ".example",
])
def test_what_is_not_an_origin_is_refused(typed):
    with pytest.raises(OriginError):
        origin_normalize(typed)


def test_a_list_needs_one_origin_and_reports_each_bad_entry():
    with pytest.raises(ValidationFailed) as empty:
        origins_clean([])
    assert empty.value.code == "origin_invalid"
    with pytest.raises(ValidationFailed) as bad:
        origins_clean(["https://ok.example", "ftp://no.example", "https://x.example/path"])
    assert len(bad.value.details["fields"]["allowed_origins"]) == 2
    assert origins_clean("https://a.example\nhttps://A.example/\n\nhttps://*.b.example") == [
        "https://a.example", "https://*.b.example"]


@pytest.mark.parametrize("origin, allowed", [
    ("https://shop.example", True),
    ("https://SHOP.example", True),
    ("https://eu.shop.example", True),  # wildcard
    ("https://a.b.shop.example", True),  # wildcard, deeper
    ("http://shop.example", False),  # scheme
    ("https://shop.example:8443", False),  # port
    ("https://evilshop.example", False),  # not a subdomain
    ("https://shop.example.evil.example", False),
    ("https://eu.shop.example:444", False),
    ("http://eu.shop.example", False),
    ("null", False),
    ("", False),
    (None, False),
    ("https://*.shop.example", False),  # a wildcard is not an origin a browser sends
    ("https://shop.example/", True),
])
def test_origin_matching(origin, allowed):
    assert origin_matches(origin, ["https://shop.example", "https://*.shop.example"]) is allowed


def test_a_wildcard_does_not_match_its_bare_domain():
    assert not origin_matches("https://shop.example", ["https://*.shop.example"])
    assert origin_matches("https://www.shop.example", ["https://*.shop.example"])
