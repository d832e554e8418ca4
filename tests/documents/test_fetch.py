"""URL import against real HTTP servers on loopback: private targets, slow, endless and redirecting servers."""
from __future__ import annotations

import gzip
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.test import override_settings

from documents.fetch import FetchError, address_is_forbidden, url_fetch

PAGE = b"<html><head><title>Hello</title></head><body><h1>Hello</h1><p>World</p></body></html>"
MB = 1024 * 1024


class Server:
    """A real HTTP server in a thread, with a few misbehaving routes; it records what it was asked."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.redirect_target = ""
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, self.headers.get("Host", "")))
                route = getattr(self, "route_" + self.path.strip("/").split("/")[0].replace("-", "_").replace(".", "_"),
                                None)
                if route is None:
                    return self.reply(404, b"not found")
                route()

            def reply(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
                      **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def redirect(self, location: str) -> None:
                self.reply(302, b"", Location=location)

            def route_page_html(self) -> None:
                self.reply(200, PAGE)

            def route_article(self) -> None:
                self.reply(200, PAGE)

            def route_notes_md(self) -> None:
                self.reply(200, b"# Notes\n\nhello", content_type="text/plain")

            def route_host(self) -> None:
                self.reply(200, self.headers.get("Host", "").encode(), content_type="text/plain")

            def route_download(self) -> None:
                self.reply(200, b"%PDF-1.4 fake", content_type="application/pdf",
                           Content_Disposition='attachment; filename="..\\\\..\\\\etc/pass\twd.pdf"')

            def route_missing(self) -> None:
                self.reply(404, b"nope")

            def route_broken(self) -> None:
                self.reply(500, b"oops")

            def route_endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Connection", "close")
                self.end_headers()
                block = b"x" * 65536
                deadline = time.monotonic() + 30  # bounded: stops by itself
                try:
                    for _ in range(16384):  # at most 1 GB
                        if server.stop.is_set() or time.monotonic() > deadline:
                            break
                        self.wfile.write(block)
                except OSError:
                    pass
                self.close_connection = True

            def route_declared_huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                self.close_connection = True

            def route_trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for _ in range(600):  # one byte every 0.1 s, at most a minute
                        if server.stop.is_set():
                            break
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass
                self.close_connection = True

            def route_gzip(self) -> None:
                self.reply(200, gzip.compress(PAGE), Content_Encoding="gzip")

            def route_gzip_bomb(self) -> None:
                self.reply(200, gzip.compress(b"\0" * (50 * MB), compresslevel=9), content_type="text/plain",
                           Content_Encoding="gzip")

            def route_loop(self) -> None:
                self.redirect("/loop")

            def route_chain(self) -> None:
                left = int(self.path.rstrip("/").rsplit("/", 1)[-1])
                self.redirect(f"/chain/{left - 1}" if left > 1 else "/page.html")

            def route_relative(self) -> None:
                self.redirect("page.html")

            def route_elsewhere(self) -> None:
                self.redirect(server.redirect_target)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def allow_private() -> Iterator[None]:
    with override_settings(URL_IMPORT_ALLOW_PRIVATE=True):
        yield


def fetch_error(url: str, dest: Path, **kwargs: object) -> FetchError:
    options = {"max_bytes": 5 * MB, "timeout": 5.0, **kwargs}
    with pytest.raises(FetchError) as caught:
        url_fetch(url=url, dest=dest, **options)
    return caught.value


# --- what may be reached -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "address",
    ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "127.8.9.10", "169.254.169.254", "224.0.0.1",
     "0.0.0.0", "240.0.0.1", "255.255.255.255", "100.64.0.1", "192.0.2.1", "::1", "::", "fe80::1", "fc00::1",
     "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2002:a00:1::1", "64:ff9b::a00:1", "2001:db8::1"],
)
def test_private_and_special_addresses_are_forbidden(address: str) -> None:
    assert address_is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not address_is_forbidden(ipaddress.ip_address(address))


def test_private_targets_are_refused_by_default_before_connecting(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    for url in (f"{server.base}/page.html", f"http://localhost:{server.port}/page.html",
                f"http://[::ffff:127.0.0.1]:{server.port}/page.html", f"http://2130706433:{server.port}/page.html",
                f"http://0.0.0.0:{server.port}/page.html", f"http://[::1]:{server.port}/page.html"):
        error = fetch_error(url, dest)
        assert error.code == "url_forbidden", url
    assert server.requests == []
    assert not dest.exists()


def test_redirects_to_private_addresses_are_refused(server: Server, tmp_path: Path) -> None:
    inside = Server("127.0.0.2")
    try:
        server.redirect_target = f"{inside.base}/page.html"
        # The first server's address is allowed explicitly; the redirect target is not.
        with override_settings(URL_IMPORT_ALLOW_PRIVATE=False, URL_IMPORT_ALLOWED_NETWORKS=["127.0.0.1/32"]):
            error = fetch_error(f"{server.base}/elsewhere", tmp_path / "out")
        assert error.code == "url_forbidden"
        assert error.details["address"] == "127.0.0.2"
        assert [path for path, _host in server.requests] == ["/elsewhere"]
        assert inside.requests == []
    finally:
        inside.close()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/file.pdf", "file:///etc/passwd", "javascript:alert(1)", "gopher://example.com/",
     "http://", "//example.com/page", "example.com/page", "", "http://user:secret@example.com/",
     "http://exa mple.com/\n", "http://example.com:99999/"],
)
def test_only_plain_http_and_https_urls(url: str, tmp_path: Path) -> None:
    error = fetch_error(url, tmp_path / "out")
    assert error.code == "url_invalid"
    assert error.status_code == 400


def test_redirect_to_another_scheme_is_refused(server: Server, tmp_path: Path, allow_private: None) -> None:
    server.redirect_target = "file:///etc/passwd"
    assert fetch_error(f"{server.base}/elsewhere", tmp_path / "out").code == "url_invalid"


# --- fetching ------------------------------------------------------------------------------------------------

def test_fetches_a_page_to_disk(server: Server, tmp_path: Path, allow_private: None) -> None:
    dest = tmp_path / "out"
    fetched = url_fetch(url=f"{server.base}/page.html", dest=dest, max_bytes=MB, timeout=5)
    assert dest.read_bytes() == PAGE
    assert fetched.size == len(PAGE)
    assert fetched.final_url == f"{server.base}/page.html"
    assert fetched.filename == "page.html"
    assert fetched.content_type_header == "text/html; charset=utf-8"


def test_connects_to_the_checked_address_and_sends_the_real_host(server: Server, tmp_path: Path,
                                                                  allow_private: None) -> None:
    dest = tmp_path / "out"
    url_fetch(url=f"http://localhost:{server.port}/host", dest=dest, max_bytes=MB, timeout=5)
    assert dest.read_bytes() == f"localhost:{server.port}".encode()


def test_file_names_follow_the_content(server: Server, tmp_path: Path, allow_private: None) -> None:
    dest = tmp_path / "out"
    assert url_fetch(url=f"{server.base}/article", dest=dest, max_bytes=MB, timeout=5).filename == "article.html"
    assert url_fetch(url=f"{server.base}/notes.md", dest=dest, max_bytes=MB, timeout=5).filename == "notes.md"
    download = url_fetch(url=f"{server.base}/download", dest=dest, max_bytes=MB, timeout=5)
    assert download.filename == "passwd.pdf"  # no folders, no control characters


def test_redirects_are_followed_up_to_the_limit(server: Server, tmp_path: Path, allow_private: None) -> None:
    dest = tmp_path / "out"
    fetched = url_fetch(url=f"{server.base}/chain/3", dest=dest, max_bytes=MB, timeout=5, max_redirects=3)
    assert fetched.final_url == f"{server.base}/page.html"
    assert dest.read_bytes() == PAGE
    error = fetch_error(f"{server.base}/chain/4", dest, max_redirects=3)
    assert error.code == "url_too_many_redirects"
    relative = url_fetch(url=f"{server.base}/relative", dest=dest, max_bytes=MB, timeout=5)
    assert relative.final_url == f"{server.base}/page.html"


def test_redirect_loops_stop(server: Server, tmp_path: Path, allow_private: None) -> None:
    error = fetch_error(f"{server.base}/loop", tmp_path / "out", max_redirects=3)
    assert error.code == "url_too_many_redirects"
    assert len(server.requests) == 4


def test_endless_bodies_stop_at_the_byte_cap(server: Server, tmp_path: Path, allow_private: None) -> None:
    dest = tmp_path / "out"
    error = fetch_error(f"{server.base}/endless", dest, max_bytes=MB, timeout=30)
    assert error.code == "url_too_large"
    assert error.details["limit"] == MB
    assert not dest.exists()


def test_declared_sizes_over_the_cap_are_refused_unread(server: Server, tmp_path: Path, allow_private: None) -> None:
    assert fetch_error(f"{server.base}/declared-huge", tmp_path / "out", max_bytes=MB).code == "url_too_large"


def test_compressed_bodies_are_decoded_within_the_cap(server: Server, tmp_path: Path, allow_private: None) -> None:
    dest = tmp_path / "out"
    fetched = url_fetch(url=f"{server.base}/gzip", dest=dest, max_bytes=MB, timeout=5)
    assert dest.read_bytes() == PAGE and fetched.size == len(PAGE)
    assert fetch_error(f"{server.base}/gzip-bomb", dest, max_bytes=MB).code == "url_too_large"
    assert not dest.exists()


def test_a_server_that_trickles_hits_the_total_time_limit(server: Server, tmp_path: Path,
                                                          allow_private: None) -> None:
    dest = tmp_path / "out"
    error = fetch_error(f"{server.base}/trickle", dest, timeout=1.0)
    assert error.code == "url_timeout"
    assert error.transient is True
    assert not dest.exists()


def test_a_server_that_never_answers_times_out(tmp_path: Path, allow_private: None) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        port = silent.getsockname()[1]
        assert fetch_error(f"http://127.0.0.1:{port}/", tmp_path / "out", timeout=1.0).code == "url_timeout"


def test_nothing_listening_is_unreachable(tmp_path: Path, allow_private: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = fetch_error(f"http://127.0.0.1:{port}/", tmp_path / "out")
    assert error.code == "url_unreachable"
    assert error.transient is True


def test_http_errors_are_unreachable_with_their_status(server: Server, tmp_path: Path, allow_private: None) -> None:
    missing = fetch_error(f"{server.base}/missing", tmp_path / "out")
    assert (missing.code, missing.details["status"], missing.transient) == ("url_unreachable", 404, False)
    broken = fetch_error(f"{server.base}/broken", tmp_path / "out")
    assert (broken.code, broken.details["status"], broken.transient) == ("url_unreachable", 500, True)
