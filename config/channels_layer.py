"""The Redis channel layer, configured for redis-py 8.

Two traps (channels_redis#422 and the asyncio pool cap): redis-py's default 5 s socket timeout is the same as the
layer's 5 s BZPOPMIN, so an idle consumer's receive loop dies with "Timeout reading from ..." and its socket closes;
and redis-py's asyncio ConnectionPool raises MaxConnectionsError past 100 connections instead of waiting, which kills
sockets under load and leaves stale group members. We give the socket a timeout well above the blocking pop and use a
blocking pool that waits for a free connection.

The pool stays small: layer commands take well under a millisecond, so a burst (a thousand sockets opening or closing
at once) is served faster by queueing on a few connections than by opening one per command -- with a cap of 1,000,
1,000 group_add at once opened 1,000 connections, took ~9 s on a busy machine and some hit connect timeouts; with 50
they took ~1.3 s and none failed (tests/config/test_websocket.py holds a test of 1,000).
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis import asyncio as aioredis

SOCKET_TIMEOUT_MARGIN = 10.0
POOL_MAX_CONNECTIONS = 50  # per process and Redis host
POOL_WAIT_SECONDS = 30.0


class WorkspaceRedisChannelLayer(RedisChannelLayer):
    def create_pool(self, index: int) -> aioredis.ConnectionPool:
        host: dict[str, Any] = dict(self.hosts[index])
        address = host.pop("address")
        host.setdefault("socket_timeout", self.brpop_timeout + SOCKET_TIMEOUT_MARGIN)
        host.setdefault("socket_connect_timeout", 5.0)
        host.setdefault("socket_keepalive", True)
        host.setdefault("health_check_interval", 30)
        host.setdefault("max_connections", POOL_MAX_CONNECTIONS)
        host.setdefault("timeout", POOL_WAIT_SECONDS)
        return aioredis.BlockingConnectionPool.from_url(address, **host)


def workspace_group(schema_name: str, *parts: str) -> str:
    """Channel-layer group names always carry the workspace schema (names allow [a-zA-Z0-9-_.])."""
    return ".".join(["ws", schema_name, *parts])[:99]


class GroupSender:
    """Channel-layer group sends from sync code (tasks, services) through one event loop thread per process, so the
    layer's Redis connections are pooled and reused (async_to_sync would start a loop, and a connection, for every
    send; a worker sends many). A forked child starts its own loop."""

    SEND_TIMEOUT = 5.0

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self._thread_name, daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def send(self, group: str, message: dict[str, Any]) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self._running_loop())
        future.result(timeout=self.SEND_TIMEOUT)
