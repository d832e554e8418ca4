"""Who the client is: the one place that reads a client's address, for every per-IP limit (HTTP and WebSocket).

The direct peer (REMOTE_ADDR / the ASGI scope's `client`) is the client, unless it is one of our own reverse proxies
(settings.TRUSTED_PROXIES, IPs or CIDRs; empty = trust nobody). Only then is X-Forwarded-For read, from the right
(the part our proxies appended), skipping addresses that are themselves trusted proxies; the first one that isn't is
the client. Anything left of it was written by the client and is never believed. uvicorn runs with
`--no-proxy-headers`, so the peer we see is the socket's own (docs/operations.md "Client addresses").

Written here rather than taken from django-ipware: one function must serve both an HttpRequest and an ASGI scope,
and the walk must be right-to-left over CIDRs.
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

UNKNOWN = "0.0.0.0"  # noqa: S104 — not a bind address: the identity of a peer we could not read (a valid IP for limits)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as error:
            raise ImproperlyConfigured(f"TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR") from error
    return tuple(networks)


def trusted_proxy_networks() -> tuple[Network, ...]:
    return _networks(tuple(entry for entry in getattr(settings, "TRUSTED_PROXIES", ()) if entry.strip()))


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:4711"
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:4711"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:1.2.3.4) is that IPv4 client.
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def _peer_and_forwarded(source: HttpRequest | Mapping[str, Any]) -> tuple[str, list[str]]:
    if isinstance(source, HttpRequest):
        return source.META.get("REMOTE_ADDR", "") or "", [source.META.get("HTTP_X_FORWARDED_FOR", "")]
    client = source.get("client") or ("", 0)
    forwarded = [value.decode("latin-1") for name, value in source.get("headers", []) if name == b"x-forwarded-for"]
    return str(client[0] or ""), forwarded


def client_ip(source: HttpRequest | Mapping[str, Any]) -> str:
    """The client's address for an HttpRequest or an ASGI scope (see the module's docstring); UNKNOWN ("0.0.0.0")
    when the peer's address can't be read."""
    peer_text, forwarded = _peer_and_forwarded(source)
    peer = _parse(peer_text)
    if peer is None:
        return UNKNOWN
    networks = trusted_proxy_networks()
    if not networks or not any(peer in network for network in networks):
        return str(peer)
    hops = [hop for header in forwarded for hop in header.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:  # our proxies write addresses; garbage means the chain can't be followed further
            break
        client = address
        if not any(address in network for network in networks):
            break
    return str(client)
