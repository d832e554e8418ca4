"""Import a document from a URL without letting the URL reach inside our network.

Only http and https. Every hop (the URL and each redirect) is resolved once, every address it resolves to is
checked (private, loopback, link-local, multicast, reserved, unspecified, and IPv6 forms that embed IPv4 ones),
and the connection goes to an address that was checked — never to a second DNS answer — with the original host
name in the Host header and in TLS (SNI and certificate check). The body streams to disk under a byte cap and a
total time limit.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from django.conf import settings

from config.errors import ApplicationError, ErrorCode

USER_AGENT = "CustomerCareGPT-URL-import/1.0"
MAX_URL_LENGTH = 2000
_REDIRECTS = {301, 302, 303, 307, 308}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXTENSIONS = {
    "text/html": ".html", "application/xhtml+xml": ".html", "text/markdown": ".md", "text/x-markdown": ".md",
    "text/csv": ".csv", "text/plain": ".txt", "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
_OUR_EXTENSIONS = {".md", ".markdown", ".csv", ".tsv", ".txt", ".html", ".htm", ".pdf", ".docx"}
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="url-resolve")


class FetchError(ApplicationError):
    """A URL import that failed; `transient` says whether trying again later can help."""

    status_code = 422
    default_code = ErrorCode.URL_UNREACHABLE

    def __init__(self, message: str, *, transient: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.transient = transient


@dataclass(frozen=True)
class FetchedUrl:
    final_url: str
    filename: str
    content_type_header: str
    size: int
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False  # a conditional GET answered 304: nothing was written to dest


def url_fetch(*, url: str, dest: Path, max_bytes: int, timeout: float, max_redirects: int = 3,
              etag: str = "", last_modified: str = "", user_agent: str = "") -> FetchedUrl:
    """Download `url` to `dest`, following at most `max_redirects` redirects, within `timeout` seconds in all.

    `etag` / `last_modified` (from an earlier fetch) make the request conditional: a 304 answer comes back as
    `not_modified` with nothing written. Every hop is checked the same way (url_validate, url_addresses)."""
    deadline = time.monotonic() + timeout
    current = url_validate(url)
    dest = Path(dest)
    redirects = 0
    conditional = {}
    if etag:
        conditional["If-None-Match"] = etag
    if last_modified:
        conditional["If-Modified-Since"] = last_modified
    with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        while True:
            target = url_validate(current)
            addresses = url_addresses(target, deadline=deadline)
            outcome = _request(client, target, addresses, dest=dest, max_bytes=max_bytes, deadline=deadline,
                               extra_headers={**conditional, **({"User-Agent": user_agent} if user_agent else {})})
            if isinstance(outcome, str):  # a redirect
                redirects += 1
                if redirects > max_redirects:
                    raise FetchError(f"The address redirects more than {max_redirects} times.",
                                     code=ErrorCode.URL_TOO_MANY_REDIRECTS, details={"url": url[:300]})
                current = urljoin(target, outcome)
                continue
            content_type, size, disposition, headers = outcome
            return FetchedUrl(final_url=target, filename=_filename(target, content_type, disposition),
                              content_type_header=content_type, size=size, etag=headers.get("etag", "")[:300],
                              last_modified=headers.get("last-modified", "")[:100],
                              not_modified=headers.get("status") == "304")


def url_validate(url: str) -> str:
    """The URL if it is an absolute http(s) URL we may try; FetchError url_invalid otherwise."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_LENGTH or _CONTROL.search(url):
        raise _invalid("Enter a web address that starts with http:// or https://.", url)
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _invalid("That web address is not valid.", url) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("Only http:// and https:// addresses can be imported.", url)
    if not parts.hostname:
        raise _invalid("That web address has no host.", url)
    if parts.username is not None or parts.password is not None:
        raise _invalid("Web addresses with a user name or password cannot be imported.", url)
    if port == 0:
        raise _invalid("That web address is not valid.", url)
    return url


def _invalid(message: str, url: object) -> FetchError:
    return FetchError(message, code=ErrorCode.URL_INVALID, status_code=400, details={"url": str(url)[:300]})


def address_is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for addresses an import must not reach: everything that is not a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:  # ::ffff:a.b.c.d reaches a.b.c.d
            return address_is_forbidden(address.ipv4_mapped)
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and address_is_forbidden(embedded):
            return True
    return (
        address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified or not address.is_global
    )


def url_addresses(url: str, *, deadline: float) -> list[str]:
    """Resolve the URL's host once; refuse the URL if any address is forbidden (unless settings allow it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        infos = [str(literal)]
    except ValueError:
        infos = _resolve(host, port, deadline)
    allowed_networks = [ipaddress.ip_network(n, strict=False) for n in settings.URL_IMPORT_ALLOWED_NETWORKS]
    addresses: list[str] = []
    for text in infos:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        if (
            address_is_forbidden(address)
            and not settings.URL_IMPORT_ALLOW_PRIVATE
            and not any(address in network for network in allowed_networks)
        ):
            raise FetchError("That address points into a private network and cannot be imported.",
                             code=ErrorCode.URL_FORBIDDEN, status_code=400,
                             details={"host": host[:255], "address": str(address)})
        if str(address) not in addresses:
            addresses.append(str(address))
    return addresses


def _resolve(host: str, port: int, deadline: float) -> list[str]:
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(deadline - time.monotonic(), 0.001))
    except FutureTimeout:
        raise FetchError("The address did not resolve in time.", code=ErrorCode.URL_TIMEOUT, transient=True,
                         details={"host": host[:255]}) from None
    except (socket.gaierror, UnicodeError, OSError):
        raise FetchError("That host name does not exist.", code=ErrorCode.URL_UNREACHABLE, transient=True,
                         details={"host": host[:255]}) from None
    return [info[4][0] for info in infos]


def _request(client: httpx.Client, url: str, addresses: list[str], *, dest: Path, max_bytes: int,
             deadline: float, extra_headers: dict[str, str] | None = None) -> str | tuple[str, int, str, dict]:
    """One hop: a redirect's Location, or (content type, size, content disposition, validators) of the body saved
    to dest (a 304 to a conditional request: nothing saved, validators["status"] == "304")."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host_header = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    last_error: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        netloc = f"[{address}]" if ":" in address else address
        pinned = f"{parts.scheme}://{netloc}:{port}{path}"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        headers = {"Host": host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate, identity",
                   "Accept": "text/html,application/pdf,text/*;q=0.9,*/*;q=0.5", **(extra_headers or {})}
        try:
            with client.stream("GET", pinned, headers=headers, extensions=extensions,
                               timeout=httpx.Timeout(remaining)) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError("The address redirects nowhere.", code=ErrorCode.URL_UNREACHABLE,
                                         details={"status": response.status_code})
                    return location
                validators = {"etag": response.headers.get("etag", ""),
                              "last-modified": response.headers.get("last-modified", "")}
                if response.status_code == 304 and extra_headers and (
                        "If-None-Match" in extra_headers or "If-Modified-Since" in extra_headers):
                    return (response.headers.get("content-type", ""), 0, "", {**validators, "status": "304"})
                if response.status_code >= 400:
                    raise FetchError(f"The server answered {response.status_code}.", code=ErrorCode.URL_UNREACHABLE,
                                     transient=response.status_code in (408, 429) or response.status_code >= 500,
                                     details={"status": response.status_code})
                if response.status_code != 200:
                    raise FetchError(f"The server answered {response.status_code} without a document.",
                                     code=ErrorCode.URL_UNREACHABLE, details={"status": response.status_code})
                size = _save(response, dest=dest, max_bytes=max_bytes, deadline=deadline)
                return (response.headers.get("content-type", ""), size,
                        response.headers.get("content-disposition", ""), validators)
        except httpx.TimeoutException:
            raise FetchError("The server did not answer in time.", code=ErrorCode.URL_TIMEOUT,
                             transient=True) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            last_error = exc
            continue
    if last_error is None and deadline - time.monotonic() <= 0:
        raise FetchError("The server did not answer in time.", code=ErrorCode.URL_TIMEOUT, transient=True)
    raise FetchError("The server could not be reached.", code=ErrorCode.URL_UNREACHABLE, transient=True,
                     details={"reason": type(last_error).__name__ if last_error else "no address"})


def _save(response: httpx.Response, *, dest: Path, max_bytes: int, deadline: float) -> int:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding in ("", "identity"):
        decoder = None
    else:
        raise FetchError(f"The server sent the document encoded as {encoding!r}, which we cannot read.",
                         code=ErrorCode.URL_UNREACHABLE, details={"content_encoding": encoding[:50]})
    # A slow server that sends a byte now and then never trips the read timeout: at the deadline, cut the socket.
    timed_out = threading.Event()
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None

    def cut() -> None:
        timed_out.set()
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(max(deadline - time.monotonic(), 0), cut)
    timer.daemon = True
    timer.start()
    written = 0

    def keep(piece: bytes, handle) -> None:
        nonlocal written
        written += len(piece)
        if written > max_bytes:
            raise _too_large(max_bytes)
        handle.write(piece)

    try:
        with open(dest, "wb") as handle:
            for raw in response.iter_raw(chunk_size=64 * 1024):
                if timed_out.is_set() or time.monotonic() > deadline:
                    raise FetchError("The download took too long.", code=ErrorCode.URL_TIMEOUT, transient=True)
                if decoder is None:
                    keep(raw, handle)
                    continue
                # Decompress in bounded steps so a compression bomb never expands in memory.
                pending = raw
                while True:
                    keep(decoder.decompress(pending, 256 * 1024), handle)
                    pending = decoder.unconsumed_tail
                    if not pending:
                        break
            if decoder is not None:
                keep(decoder.flush(), handle)
            if timed_out.is_set():
                raise FetchError("The download took too long.", code=ErrorCode.URL_TIMEOUT, transient=True)
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
        dest.unlink(missing_ok=True)
        if timed_out.is_set():
            raise FetchError("The download took too long.", code=ErrorCode.URL_TIMEOUT, transient=True) from None
        raise FetchError("The connection broke during the download.", code=ErrorCode.URL_UNREACHABLE,
                         transient=True) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        timer.cancel()
    return written


def _too_large(max_bytes: int) -> FetchError:
    return FetchError(f"The document is larger than {max_bytes // (1024 * 1024) or max_bytes} "
                      f"{'MB' if max_bytes >= 1024 * 1024 else 'bytes'}.",
                      code=ErrorCode.URL_TOO_LARGE, details={"limit": max_bytes})


def _filename(url: str, content_type: str, disposition: str) -> str:
    """A safe file name: from Content-Disposition, else the URL's last path segment, else its host.

    The extension helps the sniffer tell text formats apart, so it follows the content type when the name has
    none of ours (page.php served as text/html becomes page.php.html; data.csv served as text/plain stays).
    """
    name = ""
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename() or ""
    if not name:
        parts = urlsplit(url)
        name = unquote(PurePosixPath(parts.path).name) or (parts.hostname or "page")
    name = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip().lstrip(".")[:200] or "page"
    mime = content_type.split(";", 1)[0].strip().lower()
    suffix = PurePosixPath(name.lower()).suffix
    if suffix in _OUR_EXTENSIONS and mime in ("", "text/plain", "application/octet-stream"):
        return name
    wanted = _EXTENSIONS.get(mime)
    if wanted and suffix != wanted and not (wanted == ".html" and suffix in (".htm", ".xhtml")):
        name += wanted
    return name
