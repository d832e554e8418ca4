"""Fetching and discovery for website sources: URL normalisation, same-site and path rules, robots.txt, links and
heading anchors of a page, sitemaps (index and gzip). No database here: documents/sources.py drives a run.

Every request goes through documents.fetch.url_fetch, so the URL import's rules hold on every hop and redirect:
http(s) only, every resolved address checked (private networks refused unless URL_IMPORT_ALLOWED_NETWORKS),
connections pinned to the checked address, a byte cap and a time limit.
"""
from __future__ import annotations

import fnmatch
import gzip
import io
import posixpath
import tempfile
import threading
import time
import urllib.robotparser
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import lxml.html
from django.conf import settings
from lxml import etree

from config.errors import ErrorCode
from documents.fetch import FetchError, FetchedUrl, url_fetch
from documents.parsers.base import inline_clean

USER_AGENT = "CustomerCareGPT-crawler/1.0 (+website sources)"
ROBOTS_AGENT = "CustomerCareGPT"
ROBOTS_MAX_BYTES = 512 * 1024
SITEMAP_MAX_BYTES = 50 * 1024 * 1024  # the sitemaps.org limit, uncompressed
SITEMAP_MAX_URLS = 50_000
MAX_LINKS_PER_PAGE = 2000
_SKIPPED_SUFFIXES = {  # links to these are not pages we can read: never fetched
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico", ".css", ".js", ".mjs", ".zip", ".gz", ".tgz", ".bz2",
    ".xz", ".7z", ".rar", ".mp3", ".mp4", ".webm", ".avi", ".mov", ".wav", ".ogg", ".woff", ".woff2", ".ttf",
    ".eot", ".exe", ".dmg", ".iso", ".apk", ".json", ".rss", ".atom",
}


def crawl_timeout() -> float:
    return float(getattr(settings, "DOCUMENT_URL_TIMEOUT", 20))


def url_normalize(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without fragment, with lowercase scheme and host, no default port, a path of at
    least "/"; None for anything else (mailto:, javascript:, unparsable)."""
    try:
        absolute = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(absolute)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    path = parts.path or "/"
    if "/." in path:  # /a/./b, /a/../b
        trailing = path.endswith("/")
        path = posixpath.normpath(path)
        path = path + "/" if trailing and path != "/" else path
        path = "/" + path.lstrip("/")
    return urlunsplit((scheme, host, path, parts.query, ""))


def url_site(url: str) -> str:
    """What "the same site" means: host and port (http and https of one host are one site)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}" if port not in (80, 443) else host


def same_site(url: str, root: str) -> bool:
    return url_site(url) == url_site(root)


def path_allowed(url: str, *, include: list[str], exclude: list[str]) -> bool:
    """Include/exclude patterns are shell-style (fnmatch) on the path and query: "/docs/*", "*/print/*", "*.pdf".
    A path must match one include pattern (when there are any) and no exclude pattern."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if include and not any(fnmatch.fnmatchcase(target, pattern) for pattern in include):
        return False
    return not any(fnmatch.fnmatchcase(target, pattern) for pattern in exclude)


def url_is_readable(url: str) -> bool:
    suffix = posixpath.splitext(urlsplit(url).path.lower())[1]
    return suffix not in _SKIPPED_SUFFIXES


# --- fetching ------------------------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    url: str
    fetched: FetchedUrl | None = None
    path: Path | None = None
    error: FetchError | None = None

    @property
    def status(self) -> int | None:
        return (self.error.details or {}).get("status") if self.error is not None else None


class Politeness:
    """At most `concurrency` requests to the site at a time, and requests start at least `delay` seconds apart."""

    def __init__(self, *, concurrency: int, delay: float) -> None:
        self.slots = threading.Semaphore(max(1, concurrency))
        self.delay = max(0.0, delay)
        self._lock = threading.Lock()
        self._next_start = 0.0

    def wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.delay
        if start > now:
            time.sleep(start - now)


def page_fetch(*, url: str, folder: Path, max_bytes: int, etag: str = "", last_modified: str = "",
               politeness: Politeness | None = None) -> FetchResult:
    """Fetch one URL into `folder` (conditional when validators are given); errors come back, never raise."""
    dest = Path(tempfile.mkstemp(dir=folder, prefix="page-")[1])
    try:
        if politeness is not None:
            politeness.slots.acquire()
            politeness.wait_turn()
        try:
            fetched = url_fetch(url=url, dest=dest, max_bytes=max_bytes, timeout=crawl_timeout(), max_redirects=5,
                                etag=etag, last_modified=last_modified, user_agent=USER_AGENT)
        finally:
            if politeness is not None:
                politeness.slots.release()
    except FetchError as error:
        dest.unlink(missing_ok=True)
        return FetchResult(url=url, error=error)
    except Exception as exc:  # a bug or an odd server must not end the whole run
        dest.unlink(missing_ok=True)
        return FetchResult(url=url, error=FetchError(f"The page could not be fetched ({type(exc).__name__}).",
                                                     code=ErrorCode.URL_UNREACHABLE))
    if fetched.not_modified:
        dest.unlink(missing_ok=True)
        return FetchResult(url=url, fetched=fetched)
    return FetchResult(url=url, fetched=fetched, path=dest)


# --- robots.txt ------------------------------------------------------------------------------------------------------


@dataclass
class Robots:
    parser: urllib.robotparser.RobotFileParser | None = None
    sitemaps: list[str] = field(default_factory=list)

    def allows(self, url: str) -> bool:
        return True if self.parser is None else self.parser.can_fetch(ROBOTS_AGENT, url)

    def crawl_delay(self) -> float:
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(ROBOTS_AGENT)
        return float(delay) if delay else 0.0


def robots_load(*, root: str, folder: Path) -> Robots:
    """The site's robots.txt. Missing (4xx) allows everything; unreachable (5xx, network) raises the FetchError:
    a crawl must not guess what the site allows."""
    parts = urlsplit(root)
    url = urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))
    result = page_fetch(url=url, folder=folder, max_bytes=ROBOTS_MAX_BYTES)
    if result.error is not None:
        status = result.status
        if status is not None and 400 <= status < 500:
            return Robots()
        raise result.error
    assert result.path is not None
    text = result.path.read_bytes().decode("utf-8", "replace")
    result.path.unlink(missing_ok=True)
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(text.splitlines())
    sitemaps = [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.lower().startswith("sitemap:")]
    return Robots(parser=parser, sitemaps=sitemaps)


# --- pages -------------------------------------------------------------------------------------------------------------


def _html_root(data: bytes) -> etree._Element | None:
    from documents.parsers.html import _encoding

    parser = lxml.html.HTMLParser(encoding=_encoding(data), remove_comments=True, no_network=True, huge_tree=False)
    try:
        return lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None


def page_links(data: bytes, *, base_url: str) -> list[str]:
    """Normalised absolute links of an HTML page (<a href> and <link rel=next>), in page order, without
    nofollow links; `<base href>` is honoured."""
    root = _html_root(data)
    if root is None:
        return []
    meta_robots = " ".join((m.get("content") or "").lower() for m in root.iter("meta")
                           if (m.get("name") or "").lower() == "robots")
    if "nofollow" in meta_robots:
        return []
    base = base_url
    for element in root.iter("base"):
        if element.get("href"):
            base = urljoin(base_url, element.get("href"))
            break
    seen: dict[str, None] = {}
    for element in root.iter("a", "link"):
        href = element.get("href")
        if not href or "nofollow" in (element.get("rel") or "").lower():
            continue
        if element.tag == "link" and (element.get("rel") or "").lower() not in ("next", "prev"):
            continue
        url = url_normalize(href, base)
        if url and url not in seen:
            seen[url] = None
            if len(seen) >= MAX_LINKS_PER_PAGE:
                break
    return list(seen)


def page_anchors(data: bytes) -> dict[str, str]:
    """Heading text → the id a link can jump to (the heading's id, an anchor inside it, or its section's id)."""
    root = _html_root(data)
    anchors: dict[str, str] = {}
    if root is None:
        return anchors
    for element in root.iter("h1", "h2", "h3", "h4", "h5", "h6"):
        text = inline_clean(element.text_content() or "")
        if not text or text in anchors:
            continue
        anchor = element.get("id") or ""
        if not anchor:
            for inner in element.iter("a"):
                anchor = inner.get("id") or inner.get("name") or ""
                if anchor:
                    break
        if not anchor:
            parent = element.getparent()
            if parent is not None and parent.tag in ("section", "div", "article") and len(parent) \
                    and parent[0] is element:
                anchor = parent.get("id") or ""
        if anchor:
            anchors[text[:300]] = anchor[:200]
    return anchors


# --- sitemaps -----------------------------------------------------------------------------------------------------


@dataclass
class Sitemap:
    is_index: bool
    urls: list[str]


def sitemap_parse(path: Path) -> Sitemap:
    """A sitemap (urlset) or sitemap index, plain or gzip; at most SITEMAP_MAX_URLS entries; no entities, no DTDs,
    no network."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head == b"\x1f\x8b":
        with gzip.open(path, "rb") as handle:
            data = handle.read(SITEMAP_MAX_BYTES + 1)
    else:
        data = path.read_bytes()
    if len(data) > SITEMAP_MAX_BYTES:
        raise FetchError("The sitemap is larger than 50 MB.", code=ErrorCode.URL_TOO_LARGE,
                         details={"limit": SITEMAP_MAX_BYTES})
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                             remove_comments=True)
    try:
        root = etree.parse(io.BytesIO(data), parser).getroot()
    except etree.XMLSyntaxError:
        raise FetchError("The sitemap is not valid XML.", code=ErrorCode.CORRUPT_FILE) from None
    local = etree.QName(root).localname if isinstance(root.tag, str) else ""
    if local not in ("urlset", "sitemapindex"):
        raise FetchError("This is not a sitemap (no <urlset> or <sitemapindex>).", code=ErrorCode.UNSUPPORTED_TYPE)
    urls = []
    for element in root.iter():
        if isinstance(element.tag, str) and etree.QName(element).localname == "loc" and element.text:
            urls.append(element.text.strip())
            if len(urls) >= SITEMAP_MAX_URLS:
                break
    return Sitemap(is_index=local == "sitemapindex", urls=urls)
