"""bench/widget: the chat widget's costs, each next to a baseline measured in the same run.

    python -m bench widget            # 1,000 widget sockets, 15 s of HTTP load, 10 page loads
    python -m bench widget --quick    # 200 sockets, 5 s, 3 page loads

* **loader size**: loader.js raw and gzipped (-9, as served); the budget is 5 KB gzipped.
* **page load → interactive** in Debian's Chromium (Playwright): a host page on another origin
  (http://shop.localhost:<port>, a plain http.server) embeds the snippet of an auto-opening widget. From the page's
  navigation start to the launcher drawn (`ccw:launcher` mark) and to the chat frame's input enabled
  (`ccw:interactive` mark in the frame: loader, config, frame, session, conversation list all done). The host page's
  own load event is the reference.
* **HTTP requests/s**: `GET /widget/v1/config/<key>/` with an allowed Origin (embed lookup, origin check, three rate
  limit counters in Redis, CORS) against ONE uvicorn process, next to an empty Django view on a bare Django (no
  middleware, no database) in one uvicorn process of its own, same client, same concurrency; and, in between, the
  workspace host's floor: loader.js through the whole middleware stack (host → workspace lookup included).
* **WebSocket sessions held**: N widget sockets (each a visitor with its token and conversation: origin check, token
  check, embed lookup, welcome, resume) opened against ONE uvicorn process and held, next to the bare Channels echo
  consumer (bench/echo_asgi.py) on the same server: opened, held until the end (answering a ping), connect time,
  server RSS.

Setup (subprocesses, as bench/chat.py): a database of its own (`<db>_bench_widget`), Redis db BENCH_WIDGET_REDIS_DB
(13), a fresh workspace and embed; visitor tokens are minted by the services in a seed subprocess (same SECRET_KEY as
the server). Rate limits are raised for the run (one client IP plays every visitor); the workspace is deleted at the
end. Results: bench/results/widget.json.
"""
from __future__ import annotations

import asyncio
import functools
import gzip
import json
import secrets
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench._support import (
    BASE_DIR,
    CONNECT_CONCURRENCY,
    DATA_DIR,
    PASSWORD,
    Server,
    database_prepare,
    free_port,
    percentiles,
    seed_run,
    widget_limits_raised,
    workspace_delete,
)
from bench._support import bench_env as _bench_env
# bench/analytics.py imports these three from here.
from bench._support import database_create as _database_create  # noqa: F401
from bench._support import manage as _manage  # noqa: F401
from bench._support import services_env as _services_env  # noqa: F401

FOLDER = DATA_DIR / "bench-widget"
LOADER = BASE_DIR / "static" / "widget" / "loader.js"
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync,DestroyProfileOnBrowserClose,HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,"
    "LensOverlay,MediaRouter,PaintHolding,AvoidCorsURLLoaderRestartOnRedirect,OptimizationHints,"
    "NetworkTimeServiceQuerying,AimEnabled,PreconnectToSearch"
)


# --- environment ---------------------------------------------------------------------------------------------------
def bench_env() -> dict[str, str]:
    return _bench_env(name="widget", redis_db_variable="BENCH_WIDGET_REDIS_DB", redis_db_default=13, folder=FOLDER,
                      CHAT_WS_IDLE_TIMEOUT="1800", WIDGET_TOKEN_TTL="7200", **widget_limits_raised())


def prepare(env: dict[str, str], *, sockets: int, host_origin: str) -> dict[str, Any]:
    database_prepare(env)
    return seed_run(env, "bench.widget", str(sockets), host_origin)


def seed_main(count: int, host_origin: str) -> None:
    """(subprocess) A workspace with two embeds allowed on `host_origin` (one opens by itself, for the page-load
    measure) and `count` visitors, each with a token and a conversation; JSON on stdout."""
    import django

    django.setup()
    from django.db import connection

    from accounts.services import workspace_signup
    from embeds import services

    slug = f"bench-widget-{secrets.token_hex(3)}"
    _owner, signup = workspace_signup(email=f"owner@{slug}.test", password=PASSWORD,
                                      workspace_name="Bench Widget", slug=slug, plan="enterprise")
    workspace = signup.workspace
    connection.set_tenant(workspace)
    embed = services.embed_create(name="bench", allowed_origins=[host_origin])
    auto = services.embed_create(name="bench auto-open", allowed_origins=[host_origin], behaviour={"auto_open": True})
    visitors = []
    for _ in range(count):
        session = services.visitor_session_start(embed=embed, host_origin=host_origin)
        conversation = services.visitor_conversation_start(claims=session.claims)
        visitors.append([str(conversation.public_id), session.token])
    connection.set_schema_to_public()
    print(json.dumps({"slug": slug, "host": workspace.domains.get(is_primary=True).domain, "key": embed.public_key,
                      "auto_key": auto.public_key, "visitors": visitors}))


# --- servers -----------------------------------------------------------------------------------------------------
def empty_django_application() -> Any:
    """(uvicorn --factory) The baseline for HTTP: Django with one view that returns an empty JSON object — no
    middleware, no database, no cache."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, SECRET_KEY="bench-empty", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
                           MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={})
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _empty_view(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({})


def __getattr__(name: str) -> Any:  # urlpatterns for the baseline app, built only when Django asks for them
    if name == "urlpatterns":
        from django.urls import path

        return [path("empty/", _empty_view)]
    raise AttributeError(name)


# --- HTTP --------------------------------------------------------------------------------------------------------
async def _http_load(url: str, headers: dict[str, str], *, seconds: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def worker() -> None:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                            continue
                except Exception as exc:  # noqa: BLE001 — counted, not fatal
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests_per_s": round(len(latencies) / elapsed, 1), "ok": len(latencies), "errors": errors,
            "latency_ms": percentiles(latencies, digits=2), "concurrency": concurrency, "seconds": round(elapsed, 1)}


def http_phase(env: dict[str, str], seed: dict[str, Any], *, seconds: float, host_origin: str) -> dict[str, Any]:
    concurrency = 32
    ours = Server("config.asgi:application", env, "asgi-http", folder=FOLDER)
    try:
        config_url = f"http://127.0.0.1:{ours.port}/widget/v1/config/{seed['key']}/"
        headers = {"Host": f"{seed['host']}:{ours.port}", "Origin": host_origin}
        asyncio.run(_http_load(config_url, headers, seconds=1, concurrency=4))  # warm up
        widget = asyncio.run(_http_load(config_url, headers, seconds=seconds, concurrency=concurrency))
        refused = asyncio.run(_http_load(config_url, {**headers, "Origin": "https://evil.example"},
                                         seconds=min(seconds, 3), concurrency=concurrency))
        widget["rss_mb"] = ours.rss_mb()
        # The stack's floor on a workspace host: loader.js goes through every middleware (the host → workspace
        # lookup in PostgreSQL included) and does nothing else.
        loader_url = f"http://127.0.0.1:{ours.port}/widget/v1/loader.js"
        floor = asyncio.run(_http_load(loader_url, {"Host": headers["Host"], "Accept-Encoding": "gzip"},
                                       seconds=seconds, concurrency=concurrency))
    finally:
        ours.stop()
    empty = Server("bench.widget:empty_django_application", env, "empty-django", factory=True, folder=FOLDER)
    try:
        url = f"http://127.0.0.1:{empty.port}/empty/"
        asyncio.run(_http_load(url, {}, seconds=1, concurrency=4))
        baseline = asyncio.run(_http_load(url, {}, seconds=seconds, concurrency=concurrency))
    finally:
        empty.stop()
    return {
        "widget_config": widget,
        # a disallowed Origin: the 403 path (errors are the point here: every response should be a 403)
        "widget_config_refused_403_per_s": round(sum(refused["errors"].values()) / max(refused["seconds"], 0.1), 1),
        "workspace_host_floor_loader_js": floor,
        "empty_django_view": baseline,
        "ratio_config_to_empty_view": round(widget["requests_per_s"] / max(baseline["requests_per_s"], 0.1), 3),
        "ratio_config_to_workspace_floor": round(widget["requests_per_s"] / max(floor["requests_per_s"], 0.1), 3),
    }


# --- WebSockets --------------------------------------------------------------------------------------------------
async def _hold(port: int, targets: list[tuple[str, dict[str, str], str]], *, hold: float) -> dict[str, Any]:
    """Open every (path, headers, host) socket (welcome, resume → resumed), hold them `hold` seconds, then count the
    ones that still answer a ping."""
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[Any] = []
    connect_ms: list[float] = []
    errors: dict[str, int] = {}

    async def open_one(path: str, headers: dict[str, str], host: str) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                ws = await connect(f"ws://{host}:{port}{path}", host="127.0.0.1", port=port,
                                   additional_headers=headers, compression=None, open_timeout=120,
                                   ping_interval=None, max_queue=None)
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if welcome.get("type") != "welcome":
                    raise RuntimeError(welcome.get("code") or welcome.get("type"))
                await ws.send(json.dumps({"type": "resume", "last_seq": 0}))
                while json.loads(await asyncio.wait_for(ws.recv(), 120)).get("type") != "resumed":
                    pass
            except Exception as exc:  # noqa: BLE001
                key = str(exc)[:60] or type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                return
            connect_ms.append((time.perf_counter() - started) * 1000)
            opened.append(ws)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(path, headers, host) for path, headers, host in targets))
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(hold)

    async def alive(ws: Any) -> bool:
        try:
            await ws.send(json.dumps({"type": "ping", "nonce": "held"}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if frame.get("type") == "pong":
                    return True
        except Exception:  # noqa: BLE001
            return False

    async def gated_alive(ws: Any) -> bool:
        async with gate:  # clients ping every 25 s, spread out; not a thousand in the same instant
            return await alive(ws)

    held = sum(await asyncio.gather(*(gated_alive(ws) for ws in opened)))
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return {"attempted": len(targets), "opened": len(opened), "held": held, "errors": errors,
            "open_all_seconds": round(open_seconds, 1), "connect_ms": percentiles(connect_ms, digits=2)}


def socket_phase(env: dict[str, str], seed: dict[str, Any], *, hold: float) -> dict[str, Any]:
    ours = Server("config.asgi:application", env, "asgi-ws", folder=FOLDER)
    try:
        own = f"http://{seed['host']}:{ours.port}"
        targets = [(f"/widget/v1/ws/{conversation}/?token={token}", {"Origin": own}, seed["host"])
                   for conversation, token in seed["visitors"]]
        idle = ours.rss_mb()
        widget = asyncio.run(_hold(ours.port, targets, hold=hold))
        widget["rss_mb"] = {"idle": idle, "after": ours.rss_mb()}
    finally:
        ours.stop()
    echo = Server("bench.echo_asgi:application", env, "echo", folder=FOLDER)
    try:
        targets = [(f"/ws/chat/{conversation}/", {}, "localhost") for conversation, _token in seed["visitors"]]
        idle = echo.rss_mb()
        bare = asyncio.run(_hold(echo.port, targets, hold=hold))
        bare["rss_mb"] = {"idle": idle, "after": echo.rss_mb()}
    finally:
        echo.stop()

    def per_socket_kb(result: dict[str, Any]) -> float | None:
        if not result["opened"]:
            return None
        return round((result["rss_mb"]["after"] - result["rss_mb"]["idle"]) * 1024 / result["opened"], 1)

    widget["rss_kb_per_socket"], bare["rss_kb_per_socket"] = per_socket_kb(widget), per_socket_kb(bare)
    return {"widget_sockets": widget, "echo_consumer": bare,
            "ratio_held_widget_to_echo": round(widget["held"] / max(bare["held"], 1), 3)}


# --- the browser ---------------------------------------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def browser_phase(env: dict[str, str], seed: dict[str, Any], *, loads: int, site_port: int, folder: Path) -> dict[str, Any]:
    import shutil

    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    ours = Server("config.asgi:application", env, "asgi-browser", folder=FOLDER)
    server = ThreadingHTTPServer(("127.0.0.1", site_port), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{seed['host']}:{ours.port}"
    snippet = f'<script src="{base}/widget/v1/loader.js" data-embed="{seed["auto_key"]}" async></script>'
    (folder / "index.html").write_text(
        "<!doctype html><html><head><meta charset=utf-8><title>Shop</title></head>"
        f"<body><h1>Shop</h1><p>A product page.</p>{snippet}</body></html>")
    url = f"http://shop.localhost:{site_port}/index.html"
    launcher, interactive, page_load = [], [], []
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium") or None, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                      # as visitors' browsers do (Playwright turns it off; tests/embeds/conftest.py says why)
                      f"--disable-features={PLAYWRIGHT_DISABLED_FEATURES}",
                      "--enable-features=ThirdPartyStoragePartitioning"])
            for index in range(loads + 1):  # the first load warms the server's caches and is not counted
                context = browser.new_context()
                page = context.new_page()
                try:
                    page.goto(url)
                    frame = page.frame_locator("iframe#ccw-frame")
                    frame.locator("#ccw-input:not([disabled])").wait_for(timeout=120_000)
                    start = page.evaluate("performance.timeOrigin")
                    drawn = page.evaluate("performance.getEntriesByName('ccw:launcher')[0].startTime")
                    loaded = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                    inner = next(f for f in page.frames if "/widget/v1/frame/" in f.url)
                    ready = inner.evaluate(
                        "performance.timeOrigin + performance.getEntriesByName('ccw:interactive')[0].startTime")
                    if index:
                        launcher.append(drawn)
                        interactive.append(ready - start)
                        page_load.append(loaded)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                finally:
                    context.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        ours.stop()
    return {"loads": len(interactive), "errors": errors,
            "host_page_load_event_ms": percentiles(page_load),
            "launcher_drawn_ms": percentiles(launcher),
            "chat_interactive_ms": percentiles(interactive)}


# --- run -----------------------------------------------------------------------------------------------------------
def loader_size() -> dict[str, Any]:
    raw = LOADER.read_bytes()
    gzipped = len(gzip.compress(raw, compresslevel=9, mtime=0))
    return {"raw_bytes": len(raw), "gzip_bytes": gzipped, "budget_gzip_bytes": 5 * 1024,
            "within_budget": gzipped <= 5 * 1024}


def run(quick: bool = False) -> dict[str, Any]:
    sockets = 200 if quick else 1000
    seconds = 5.0 if quick else 15.0
    loads = 3 if quick else 10
    env = bench_env()
    FOLDER.mkdir(parents=True, exist_ok=True)
    site_port = free_port()
    host_origin = f"http://shop.localhost:{site_port}"
    result: dict[str, Any] = {"loader": loader_size()}
    seed = prepare(env, sockets=sockets, host_origin=host_origin)
    try:
        result["page_load"] = browser_phase(env, seed, loads=loads, site_port=site_port, folder=FOLDER / "site")
        result["http"] = http_phase(env, seed, seconds=seconds, host_origin=host_origin)
        result["websocket"] = socket_phase(env, seed, hold=5.0 if quick else 15.0)
    finally:
        cleanup_error = workspace_delete(env, seed["slug"])
        if cleanup_error:
            result["cleanup_error"] = cleanup_error[-200:]
    result["setup"] = {"sockets": sockets, "http_seconds": seconds, "page_loads": loads,
                       "server": "one uvicorn process each, --ws-per-message-deflate false",
                       "rate_limits": "raised for the run (one client IP plays every visitor)"}
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "seed":
        seed_main(int(sys.argv[2]), sys.argv[3])
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
