"""A real website on loopback for crawl tests: pages held in a dict the test may change while the server runs,
robots.txt, sitemaps (plain, index, gzip), ETag / Last-Modified with conditional answers (304), and a gate that
holds one page's answer until the test releases it. It records every request (path, status)."""
from __future__ import annotations

import gzip
import hashlib
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Website:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[bytes, str]] = {}  # path → (body, content type)
        self.modified: dict[str, float] = {}
        self.requests: list[tuple[str, int]] = []
        self.gates: dict[str, threading.Event] = {}
        self.reached: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path
                if path in site.reached:
                    site.reached[path].set()
                gate = site.gates.get(path)
                if gate is not None:
                    gate.wait(timeout=300)
                with site._lock:
                    entry = site.pages.get(path)
                    stamp = site.modified.get(path, 1_700_000_000.0)
                if entry is None:
                    status = 410 if path.startswith("/gone410") else 404
                    return self.reply(status, b"not here", "text/plain", {})
                body, content_type = entry
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                validators = {"ETag": etag, "Last-Modified": formatdate(stamp, usegmt=True)}
                if self.headers.get("If-None-Match") == etag:
                    return self.reply(304, b"", content_type, validators)
                self.reply(200, body, content_type, validators)

            def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
                site.requests.append((self.path, status))
                self.send_response(status)
                if status != 304:
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                if status == 304:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def url(self, path: str) -> str:
        return self.root + path

    def put(self, path: str, body: bytes | str, content_type: str = "text/html; charset=utf-8",
            stamp: float | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self.pages[path] = (data, content_type)
            self.modified[path] = stamp or (self.modified.get(path, 1_700_000_000.0) + 60)

    def remove(self, path: str) -> None:
        with self._lock:
            self.pages.pop(path, None)

    def put_sitemap(self, path: str, urls: list[str], *, index: bool = False, gzipped: bool = False) -> None:
        tag, item = ("sitemapindex", "sitemap") if index else ("urlset", "url")
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
               + "".join(f"<{item}><loc>{self.url(u) if u.startswith('/') else u}</loc></{item}>" for u in urls)
               + f"</{tag}>").encode()
        if gzipped:
            self.put(path, gzip.compress(xml), "application/gzip")
        else:
            self.put(path, xml, "application/xml")

    def hold(self, path: str) -> tuple[threading.Event, threading.Event]:
        """Hold the answer to `path` until the returned gate is set; `reached` is set when it is requested."""
        self.gates[path], self.reached[path] = threading.Event(), threading.Event()
        return self.gates[path], self.reached[path]

    def hits(self, path: str) -> list[int]:
        return [status for requested, status in self.requests if requested == path]

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self.http.shutdown()
        self.http.server_close()


def page(title: str, *sections: tuple[str, str, str], links: list[str] = ()) -> str:
    """An HTML page: a nav of links (boilerplate, dropped from the text), then (anchor id, heading, text) sections."""
    nav = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    body = "".join(f'<h2 id="{anchor}">{heading}</h2><p>{text}</p>' for anchor, heading, text in sections)
    return (f"<html><head><title>{title}</title></head><body><nav>{nav}</nav><main><h1>{title}</h1>{body}"
            f"</main></body></html>")
