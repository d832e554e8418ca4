"""Web origins of the pages allowed to show a widget: normalising what staff type, and matching what browsers send.

An allowed origin is `scheme://host[:port]` exactly as a browser writes it in the `Origin` header (lowercase, the
host in its ASCII/punycode form, no default port, no path), or a wildcard over the subdomains of a host:
`https://*.shop.example` matches `https://eu.shop.example` and `https://a.b.shop.example`, but not
`https://shop.example` itself (list that too if the bare host embeds the widget) nor another scheme or port.

Everything here is pure: the same functions validate the dashboard form, the API, the operator command, and check
each request, so a value that was accepted is always matched the way it was shown.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from config.errors import ValidationFailed
from embeds.errors import EmbedErrorCode

MAX_ORIGINS = 20
MAX_ORIGIN_CHARS = 253 + 20
SCHEMES = ("https", "http")
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class OriginError(ValueError):
    """Why a string is not an origin (the message is shown to staff)."""


def _host_ascii(host: str) -> str:
    host = host.rstrip(".").lower()
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise OriginError("The host name is not valid.") from None
    labels = ascii_host.split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise OriginError("The host name is not valid.")
    return ascii_host


def origin_normalize(value: str, *, allow_wildcard: bool = True) -> str:
    """The canonical form of an allowed origin (see the module docstring); raises OriginError."""
    if not isinstance(value, str):
        raise OriginError("An origin is text like https://shop.example.")
    text = value.strip()
    if not text:
        raise OriginError("An origin can't be empty.")
    if len(text) > MAX_ORIGIN_CHARS or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise OriginError("An origin is one scheme://host[:port], without spaces.")
    if "://" not in text:
        raise OriginError("Write the scheme too, e.g. https://shop.example.")
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise OriginError("Only http:// and https:// pages can embed the widget.")
    wildcard = False
    if rest.startswith("*."):
        if not allow_wildcard:
            raise OriginError("A wildcard is not an origin.")
        wildcard, rest = True, rest[2:]
    if "*" in rest:
        raise OriginError("A wildcard may only stand for the subdomains: https://*.shop.example.")
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError:
        raise OriginError("The port is not valid.") from None
    if parts.username is not None or parts.password is not None or "@" in rest:
        raise OriginError("An origin has no user name or password.")
    if parts.query or parts.fragment or "?" in rest or "#" in rest or parts.path not in ("", "/"):
        raise OriginError("An origin has no path: https://shop.example, not https://shop.example/page.")
    if not parts.hostname or parts.netloc.startswith("["):
        raise OriginError("The host name is not valid.")
    host = _host_ascii(parts.hostname)
    if wildcard:
        if host.count(".") < 1 or _is_ip(host):
            raise OriginError("A wildcard needs a domain with at least two labels: https://*.shop.example.")
        host = "*." + host
    if port is not None and not 0 < port < 65536:
        raise OriginError("The port is not valid.")
    suffix = "" if port is None or port == DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{suffix}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


def origins_clean(values: Iterable[str] | str, *, field: str = "allowed_origins") -> list[str]:
    """A validated, de-duplicated list (order kept) of at least one allowed origin; ValidationFailed otherwise,
    with one message per bad entry."""
    if isinstance(values, str):
        values = [line for line in re.split(r"[\r\n,]+", values)]
    cleaned: list[str] = []
    errors: list[str] = []
    for raw in values:
        if not isinstance(raw, str):
            errors.append("Each origin is text like https://shop.example.")
            continue
        if not raw.strip():
            continue
        try:
            origin = origin_normalize(raw)
        except OriginError as error:
            errors.append(f"{raw.strip()[:80]}: {error}")
            continue
        if origin not in cleaned:
            cleaned.append(origin)
    if not errors and not cleaned:
        errors.append("List at least one origin (the website that shows the widget), e.g. https://shop.example.")
    if len(cleaned) > MAX_ORIGINS:
        errors.append(f"At most {MAX_ORIGINS} origins per widget.")
    if errors:
        raise ValidationFailed(
            "The allowed origins are not valid.", code=EmbedErrorCode.ORIGIN_INVALID, details={"fields": {field: errors}}
        )
    return cleaned


def request_origin_parse(value: str | None) -> str | None:
    """The origin a browser sent (an Origin header, or the `o` the loader passed), canonical, or None if it is not
    one (absent, "null", a wildcard, garbage)."""
    if not value or value == "null":
        return None
    try:
        return origin_normalize(value, allow_wildcard=False)
    except OriginError:
        return None


def origin_matches(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a page of `origin` (as a browser sends it) may show a widget whose allowed origins are `allowed`."""
    canonical = request_origin_parse(origin)
    if canonical is None:
        return False
    scheme, _, hostport = canonical.partition("://")
    host, _, port = hostport.partition(":")
    for entry in allowed:
        if entry == canonical:
            return True
        entry_scheme, _, entry_hostport = entry.partition("://")
        if entry_scheme != scheme or not entry_hostport.startswith("*."):
            continue
        entry_host, _, entry_port = entry_hostport[2:].partition(":")
        if entry_port == port and host.endswith("." + entry_host):
            return True
    return False
