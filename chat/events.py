"""The event log of a conversation and the fan-out of its events to sockets (docs/websocket-protocol.md).

Why not the channel layer: routing every token through channels-redis `group_send` saturates at 15–20 replies/s on
one process and its `capacity` drops events silently (issue #4). So conversation events take another road:

* **One Redis script per batch of events** (`APPEND_SCRIPT`): allocates the seqs (INCRBY on a per-conversation
  counter), appends each event to the conversation's Redis Stream with the seq as its entry id (`<seq>-0`, so the
  stream is ordered by seq and `XRANGE (seq` is "everything after seq"), trims and expires the stream, and
  PUBLISHes the batch on the conversation's pub/sub channel. Seq allocation and log order are one atomic step, so
  two producers (the bot and, later, a human agent) can never interleave out of order.
* **The stream is the replay log**: `resume {last_seq}` reads it with XRANGE; it is capped (`CHAT_EVENT_LOG_MAXLEN`)
  and expires `CHAT_EVENT_LOG_TTL` seconds after the last event. Completed messages live in PostgreSQL.
* **One pub/sub subscriber connection per process** (`ConversationHub`), subscribed to the conversations that have a
  socket in this process. A producer in the same process also hands its batch straight to the local sockets
  (`ConversationHub.dispatch`), so the asker's tokens never wait for a Redis round trip back; the echo from Redis
  is recognised by its seq and skipped without parsing.
* **Each socket has a `SocketFeed`**: one task that sends in seq order, exactly once, from a cursor. Pub/sub is
  fire-and-forget, so a feed that sees a gap (or overflows its queue) fills it from the stream: the stream, not
  the pub/sub message, is the truth.

Keys and channel names carry the workspace schema: `<prefix>:chat:<schema>:<conversation>:{seq,log,lock}` and the
channel `<prefix>:chat:ws.<schema>.conversation.<conversation>` (config.channels_layer.workspace_group).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from redis import asyncio as aioredis

from chat import protocol
from config.channels_layer import workspace_group
from config.errors import ApplicationError, ErrorCode

logger = logging.getLogger(__name__)

# KEYS: seq counter, stream, answer lock. ARGV: seq floor (from PostgreSQL), stream maxlen, ttl, pub/sub channel,
# answer-lock token to release ('' for none), event bodies... Each body is a JSON object without its seq; the script
# splices `"seq":N,` in front of its first member. The lock is released in the same step that logs the batch (an
# answer's `agent_completed`): whoever takes the lock next finds that event in the log, and no client that has seen
# it can find the lock still taken.
APPEND_SCRIPT = """
local seqkey, stream = KEYS[1], KEYS[2]
if redis.call('EXISTS', seqkey) == 0 then
  -- The counter expired or Redis lost it: never go below what PostgreSQL or the stream has seen.
  local floor = tonumber(ARGV[1])
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if top[1] then
    local s = tonumber(string.match(top[1][1], '^(%d+)'))
    if s > floor then floor = s end
  end
  redis.call('SET', seqkey, floor)
end
local n = #ARGV - 5
local last = redis.call('INCRBY', seqkey, n)
local first = last - n + 1
local out = {}
for i = 1, n do
  local seq = first + i - 1
  local body = '{"seq":' .. seq .. ',' .. string.sub(ARGV[5 + i], 2)
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', body)
  out[i] = body
end
local ttl = tonumber(ARGV[3])
redis.call('EXPIRE', stream, ttl)
redis.call('EXPIRE', seqkey, ttl * 7)
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[4], first .. ' ' .. last .. '\\n' .. table.concat(out, '\\n'))
return first
"""

# KEYS: seq counter, stream. ARGV: floor. Returns {last_seq, oldest retained seq or 0}.
BOUNDS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local oldest = 0
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if head[1] then oldest = tonumber(string.match(head[1][1], '^(%d+)')) end
if current then return {tonumber(current), oldest} end
local floor = tonumber(ARGV[1])
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] then
  local s = tonumber(string.match(top[1][1], '^(%d+)'))
  if s > floor then floor = s end
end
return {floor, oldest}
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

PROCESS_ID = secrets.token_hex(6)
REPLAY_PAGE = 1000
_closing: set[asyncio.Task[Any]] = set()  # idle closes in flight (the loop keeps only weak references to tasks)


def _prefix() -> str:
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'ccgpt')}:chat"


@dataclass(frozen=True)
class ConversationLog:
    """The Redis side of one conversation: its seq counter, its replay log, its channel, its answer lock."""

    schema: str
    conversation: str  # public id, hex
    floor: int = 0  # Conversation.last_seq from PostgreSQL: seqs never restart below it

    @classmethod
    def of(cls, schema: str, conversation: Any) -> ConversationLog:
        return cls(schema=schema, conversation=conversation.public_id.hex, floor=conversation.last_seq or 0)

    @property
    def seq_key(self) -> str:
        return f"{_prefix()}:{self.schema}:{self.conversation}:seq"

    @property
    def stream_key(self) -> str:
        return f"{_prefix()}:{self.schema}:{self.conversation}:log"

    @property
    def lock_key(self) -> str:
        return f"{_prefix()}:{self.schema}:{self.conversation}:lock"

    @property
    def channel(self) -> str:
        return f"{_prefix()}:{workspace_group(self.schema, 'conversation', self.conversation)}"

    def _append_args(self, bodies: list[str], release_lock: str | None = None) -> tuple[list[str], list[Any]]:
        args: list[Any] = [self.floor, settings.CHAT_EVENT_LOG_MAXLEN, settings.CHAT_EVENT_LOG_TTL, self.channel,
                           release_lock or ""]
        return [self.seq_key, self.stream_key, self.lock_key], args + bodies

    # --- sync (services, REST, worker threads) ---
    def append_sync(self, events: list[dict[str, Any]], *, release_lock: str | None = None) -> list[tuple[int, str]]:
        """Log `events` (one seq each); with `release_lock`, give back the answer lock of that token in the same
        step."""
        bodies = [protocol.encode(event) for event in events]
        keys, args = self._append_args(bodies, release_lock)
        first = int(_sync_scripts().append(keys=keys, args=args))
        return sequenced(first, bodies)

    def answer_announcement_find(self, *, message_id: int, depth: int = 500) -> int | None:
        """The seq of the logged `agent_completed` of answer `message_id`, if the retained log has one (newest
        first, at most `depth` events back)."""
        needle = f'"id":{message_id},'.encode()
        for entry_id, fields in sync_client().xrevrange(self.stream_key, max="+", min="-", count=depth):
            body = fields[b"e"]
            if b'"type":"agent_completed"' in body and needle in body:
                event = json.loads(body)
                if (event.get("message") or {}).get("id") == message_id:
                    return int(entry_id.split(b"-", 1)[0])
        return None

    def bounds_sync(self) -> tuple[int, int]:
        current, oldest = _sync_scripts().bounds(keys=[self.seq_key, self.stream_key], args=[self.floor])
        return int(current), int(oldest)

    def lock_acquire(self, *, ttl: float) -> str | None:
        """The conversation's answer lock (one answer at a time). Call and release it from the same thread: besides
        the Redis key it takes a PostgreSQL advisory lock on the thread's connection, because a Redis restarted
        without persistence forgets the key while the answer still runs, and a retried question would be answered
        a second time."""
        token = secrets.token_hex(8)
        if not sync_client().set(self.lock_key, token, nx=True, px=int(ttl * 1000)):
            return None
        try:
            taken = _advisory_lock(self.advisory_key, acquire=True)
        except BaseException:
            # The thread's database connection was cut: the caller refuses the message (the client sends it again),
            # so the Redis key must not outlive this attempt, or the retry would find the lock taken and wait for
            # an answer nobody is writing.
            self._release_key(token)
            raise
        if not taken:
            self._release_key(token)
            return None
        return token

    def lock_take_over_if_abandoned(self, *, ttl: float, grace: float = 2.0) -> str | None:
        """The lock's key is taken: is anyone still answering? A live answer holds the advisory half on its thread's
        connection until its final event; a process that died (a deploy, a crash, an OOM kill) lost its PostgreSQL
        session and with it the advisory lock, but its Redis key would stay for the whole TTL, and a retried
        question would wait for an answer nobody writes. So: if the advisory lock is free, wait `grace` seconds for
        the key (an answer in its last milliseconds releases it with its final event); still taken then, the holder
        is gone — take the lock over. None while someone is answering."""
        if not _advisory_lock(self.advisory_key, acquire=True):
            return None
        try:
            deadline = time.monotonic() + grace
            token = secrets.token_hex(8)
            while time.monotonic() < deadline:
                if sync_client().set(self.lock_key, token, nx=True, px=int(ttl * 1000)):
                    return token
                time.sleep(0.1)
            sync_client().set(self.lock_key, token, px=int(ttl * 1000))
            logger.warning("chat: took over the abandoned answer lock of %s", self.conversation)
            return token
        except BaseException:
            _advisory_lock(self.advisory_key, acquire=False)
            raise

    def _release_key(self, token: str) -> None:
        try:
            _sync_scripts().release(keys=[self.lock_key], args=[token])
        except Exception:  # Redis is away too: the key expires by itself
            logger.warning("chat: could not release the answer lock key %s", self.lock_key, exc_info=True)

    def lock_release(self, token: str) -> None:
        """Give the lock back (a no-op for a token whose key is gone already, e.g. released with the final event)."""
        try:
            _sync_scripts().release(keys=[self.lock_key], args=[token])
        finally:
            self.lock_release_advisory()

    def lock_release_advisory(self) -> None:
        """Give back only this thread's advisory half of the lock; the Redis key goes with the answer's final event
        (`append_sync`/`append` with `release_lock`)."""
        _advisory_lock(self.advisory_key, acquire=False)

    def advisory_release_statement(self) -> tuple[str, list[Any]] | None:
        """The SQL that gives back this thread's advisory half (to send with other statements: config.db), or None
        when this thread does not hold it; call `advisory_released()` once it ran."""
        if self.advisory_key not in (getattr(_advisory_held, "keys", None) or ()):
            return None
        return "SELECT pg_advisory_unlock(%s)", [self.advisory_key]

    def advisory_released(self) -> None:
        (getattr(_advisory_held, "keys", None) or set()).discard(self.advisory_key)

    @property
    def advisory_key(self) -> int:
        digest = hashlib.blake2b(f"chat-answer:{self.schema}:{self.conversation}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def lock_held(self) -> bool:
        return bool(sync_client().exists(self.lock_key))

    # --- async (the ASGI process) ---
    async def append(self, events: list[dict[str, Any]], *, release_lock: str | None = None) -> list[tuple[int, str]]:
        bodies = [protocol.encode(event) for event in events]
        return await self.append_encoded(bodies, release_lock=release_lock)

    async def append_encoded(self, bodies: list[str], *, release_lock: str | None = None) -> list[tuple[int, str]]:
        keys, args = self._append_args(bodies, release_lock)
        first = int(await _async_scripts().append(keys=keys, args=args))
        return sequenced(first, bodies)

    async def bounds(self) -> tuple[int, int]:
        current, oldest = await _async_scripts().bounds(keys=[self.seq_key, self.stream_key], args=[self.floor])
        return int(current), int(oldest)

    async def replay(self, *, after: int) -> list[tuple[int, str]]:
        """Every retained event with seq > after, in order."""
        client = async_client()
        found: list[tuple[int, str]] = []
        start = f"{after + 1}-0"
        while True:
            page = await client.xrange(self.stream_key, min=start, max="+", count=REPLAY_PAGE)
            for entry_id, fields in page:
                found.append((int(entry_id.split(b"-", 1)[0]), fields[b"e"].decode()))
            if len(page) < REPLAY_PAGE:
                return found
            start = f"{found[-1][0] + 1}-0"

    async def publish_ephemeral(self, event: dict[str, Any], *, origin: str = "-") -> None:
        """An event without seq (typing) for the sockets watching now, except the one it came from (`origin`)."""
        body = protocol.encode(event)
        hub().dispatch_ephemeral(self.channel, body, origin=origin)
        await async_client().publish(self.channel, f"E {PROCESS_ID} {origin}\n{body}")

    def publish_ephemeral_sync(self, event: dict[str, Any]) -> None:
        # No local dispatch from a thread: every process's hub (this one's included, process "-") delivers it.
        sync_client().publish(self.channel, f"E - -\n{protocol.encode(event)}")


def authority_channel(schema: str) -> str:
    """The workspace's revocation channel: every conversation socket of the workspace listens on it through its
    process's hub (chat.authority publishes "someone's authority changed: re-check")."""
    return f"{_prefix()}:{workspace_group(schema, 'authority')}"


def authority_publish_sync(schema: str, revoke: dict[str, Any]) -> None:
    sync_client().publish(authority_channel(schema), f"R\n{protocol.encode(revoke)}")


_advisory_held = threading.local()


def _advisory_lock(key: int, *, acquire: bool) -> bool:
    """Take (without waiting) or give back a session-level PostgreSQL advisory lock on this thread's connection. A
    connection that is gone has released it already."""
    from django.db import Error as DatabaseError  # InterfaceError too: a connection closed after a cut
    from django.db import connection

    held: set[int] = getattr(_advisory_held, "keys", None) or set()
    _advisory_held.keys = held
    if not acquire and key not in held:  # not ours (released already, or never taken): nothing to send
        return False
    if acquire and key in held:  # taken already (advisory_lock_taken): a second take would stack on the session
        return True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)" if acquire else "SELECT pg_advisory_unlock(%s)", [key])
            done = bool(cursor.fetchone()[0])
    except DatabaseError:
        held.discard(key)
        if acquire:
            raise
        return False
    if acquire and done:
        held.add(key)
    elif not acquire:
        held.discard(key)
    return done


def advisory_lock_expression(key: int, *, when_status: str) -> tuple[str, list[Any]]:
    """SQL (with its params) that takes the advisory half of a conversation's answer lock inside a read of that
    conversation's row, only when its status is `when_status` (true: taken); the reader then calls
    `advisory_lock_taken`. Taken before the Redis key instead of after it: whoever holds the key and wants the
    advisory half fails to take it and gives the key back, as when two answers race (ConversationLog.lock_acquire);
    a take that nobody uses is given back at the end of the thread's hop (answer_locks_release_all)."""
    from chat.models import Conversation

    return (f'CASE WHEN "{Conversation._meta.db_table}"."status" = %s THEN pg_try_advisory_lock(%s) ELSE false END',
            [when_status, key])


def advisory_lock_taken(key: int) -> None:
    """This thread's connection holds the advisory lock `key` (taken by advisory_lock_expression)."""
    held: set[int] = getattr(_advisory_held, "keys", None) or set()
    _advisory_held.keys = held
    held.add(key)


def answer_locks_release_all() -> None:
    """Give back the advisory answer locks this thread still holds (a path that never reached lock_release): the
    thread keeps its connection for later hops, and a forgotten session lock would never expire."""
    for key in list(getattr(_advisory_held, "keys", None) or ()):
        _advisory_lock(key, acquire=False)


def sequenced(first: int, bodies: list[str]) -> list[tuple[int, str]]:
    """The same bodies the append script stored: `"seq":N,` spliced in front of the first member."""
    return [(first + i, f'{{"seq":{first + i},{body[1:]}') for i, body in enumerate(bodies)]


# --- clients ---------------------------------------------------------------------------------------------------
@dataclass
class _Scripts:
    append: Any
    bounds: Any
    release: Any


_sync_state: dict[str, Any] = {}


def sync_client() -> redis.Redis:
    client = _sync_state.get("client")
    if client is None:
        client = _sync_state["client"] = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
    return client


def _sync_scripts() -> _Scripts:
    scripts = _sync_state.get("scripts")
    if scripts is None:
        client = sync_client()
        scripts = _sync_state["scripts"] = _Scripts(
            client.register_script(APPEND_SCRIPT), client.register_script(BOUNDS_SCRIPT),
            client.register_script(RELEASE_SCRIPT),
        )
    return scripts


@dataclass
class _LoopState:
    client: aioredis.Redis
    scripts: _Scripts
    hub: ConversationHub | None = None


_loop_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()


def _loop_state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _loop_states.get(loop)
    if state is None:
        # A blocking pool: past 200 connections a command waits (up to 20 s) for a free one instead of failing with
        # "Too many connections" — under a burst of sockets that failure lost pongs and replay reads.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
            max_connections=200, timeout=20,
        )
        client = aioredis.Redis(connection_pool=pool)
        state = _LoopState(
            client=client,
            scripts=_Scripts(
                client.register_script(APPEND_SCRIPT), client.register_script(BOUNDS_SCRIPT),
                client.register_script(RELEASE_SCRIPT),
            ),
        )
        _loop_states[loop] = state
    return state


def async_client() -> aioredis.Redis:
    return _loop_state().client


def _async_scripts() -> _Scripts:
    return _loop_state().scripts


def hub() -> ConversationHub:
    state = _loop_state()
    if state.hub is None:
        state.hub = ConversationHub()
    return state.hub


# --- the per-process fan-out -----------------------------------------------------------------------------------
class ConversationHub:
    """One Redis pub/sub connection per process, subscribed to the conversations with a local socket."""

    def __init__(self) -> None:
        self.pubsub_client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5)
        self.pubsub = self.pubsub_client.pubsub()
        self.feeds: dict[bytes, set[SocketFeed]] = {}
        self.ready: dict[bytes, asyncio.Future[None]] = {}
        self.pending_subscribes: dict[bytes, int] = {}
        self.all_feeds: weakref.WeakSet[SocketFeed] = weakref.WeakSet()
        self.reader: asyncio.Task[None] | None = None
        self.sweeper: asyncio.Task[None] | None = None
        # redis-py's PubSub opens its connection lazily: two first subscribes at once would open two, and the
        # reader would only hear one of them. Subscription changes go one at a time.
        self.commands = asyncio.Lock()

    async def join(self, channel: str, feed: SocketFeed) -> None:
        """Watch `channel` from `feed`; returns once the subscription is live (so nothing published later is
        missed by this process)."""
        key = channel.encode()
        self.all_feeds.add(feed)
        self._start_tasks()
        feeds = self.feeds.get(key)
        if feeds is not None:
            feeds.add(feed)
            await asyncio.wait_for(asyncio.shield(self.ready[key]), timeout=10)
            return
        self.feeds[key] = {feed}
        ready = self.ready[key] = asyncio.get_running_loop().create_future()
        async with self.commands:
            self.pending_subscribes[key] = self.pending_subscribes.get(key, 0) + 1
            await self.pubsub.subscribe(key)
            if self.reader is None or self.reader.done():
                self.reader = asyncio.create_task(self._read(), name="chat-hub-reader")
        await asyncio.wait_for(asyncio.shield(ready), timeout=10)

    async def leave(self, channel: str, feed: SocketFeed) -> None:
        key = channel.encode()
        self.all_feeds.discard(feed)
        feeds = self.feeds.get(key)
        if feeds is None:
            return
        feeds.discard(feed)
        if not feeds:
            del self.feeds[key]
            self.pending_subscribes.pop(key, None)
            ready = self.ready.pop(key, None)
            if ready is not None and not ready.done():
                ready.cancel()
            try:
                async with self.commands:
                    await self.pubsub.unsubscribe(key)
            except (redis.RedisError, OSError):
                logger.warning("chat hub: unsubscribe failed", exc_info=True)

    def dispatch(self, channel: str, sequenced_bodies: list[tuple[int, str]]) -> None:
        """Hand a batch that this process just appended to the local sockets of the conversation."""
        feeds = self.feeds.get(channel.encode())
        if feeds and sequenced_bodies:
            first = sequenced_bodies[0][0]
            bodies = [body for _seq, body in sequenced_bodies]
            for feed in feeds:
                feed.offer(first, bodies)

    def dispatch_ephemeral(self, channel: str, body: str, *, origin: str) -> None:
        for feed in self.feeds.get(channel.encode(), ()):
            if feed.id != origin:
                feed.offer_ephemeral(body)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        feeds = self.feeds.get(channel)
        if not feeds:
            return
        head, _, rest = data.partition(b"\n")
        if head == b"R":  # a revocation (authority_publish_sync): each feed's socket decides whether it concerns it
            revoke = json.loads(rest)
            for feed in list(feeds):
                feed.revoke(revoke)
            return
        if head.startswith(b"E "):
            _e, process, origin = head.decode().split(" ", 2)
            if process != PROCESS_ID:  # our own ephemeral events were dispatched locally already
                body = rest.decode()
                for feed in feeds:
                    if feed.id != origin:
                        feed.offer_ephemeral(body)
            return
        first_text, last_text = head.split(b" ", 1)
        first, last = int(first_text), int(last_text)
        bodies: list[str] | None = None
        for feed in feeds:
            if feed.queued_seq >= last:  # our own batch coming back, or already replayed
                continue
            if bodies is None:
                bodies = rest.decode().split("\n")
            feed.offer(first, bodies)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Messages published while we were away are in the streams: every feed re-reads from its cursor.
                logger.warning("chat hub: pub/sub connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(0.5)
                try:
                    async with self.commands:
                        await self._resubscribe()
                except Exception:
                    logger.warning("chat hub: resubscribe failed", exc_info=True)
                    continue
                for feeds in self.feeds.values():
                    for feed in feeds:
                        feed.resync()
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                try:
                    self._on_message(message["channel"], message["data"])
                except Exception:
                    logger.exception("chat hub: bad pub/sub message")
            elif kind == "subscribe":
                key = message["channel"]
                left = self.pending_subscribes.get(key, 0) - 1
                if left <= 0:
                    self.pending_subscribes.pop(key, None)
                    ready = self.ready.get(key)
                    if ready is not None and not ready.done():
                        ready.set_result(None)
                else:
                    self.pending_subscribes[key] = left

    async def _resubscribe(self) -> None:
        try:
            await self.pubsub.aclose()
        except Exception:
            pass
        self.pubsub = self.pubsub_client.pubsub()
        keys = list(self.feeds)
        for key in keys:
            # One confirmation is due, from this subscribe: those of earlier attempts died with their connection.
            # (Counting up here, every failed attempt during an outage left a confirmation that never came, and the
            # next socket to join such a conversation waited for it and was closed with 1011.)
            self.pending_subscribes[key] = 1
        if keys:
            await self.pubsub.subscribe(*keys)
        else:  # get_message needs a connection: subscribe to this process's own (silent) channel
            await self.pubsub.subscribe(f"{_prefix()}:process:{PROCESS_ID}")

    def _start_tasks(self) -> None:
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = asyncio.create_task(self._sweep(), name="chat-hub-idle-sweeper")

    async def _sweep(self) -> None:
        """Closes sockets that sent nothing (not even a ping) for longer than the idle timeout."""
        timeout = settings.CHAT_WS_IDLE_TIMEOUT
        every = max(0.2, min(5.0, timeout / 4))
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for feed in list(self.all_feeds):
                if now - feed.last_activity > timeout:
                    feed.expire()


# --- one socket's view of one conversation ---------------------------------------------------------------------
@dataclass(eq=False)  # hashed by identity: feeds live in sets
class SocketFeed:
    """Sends a conversation's events to one socket in seq order, exactly once, from the client's cursor; and the
    socket's own frames (welcome, ack, pong, errors) in between, in the order they were queued."""

    log: ConversationLog
    send: Callable[[str], Awaitable[None]]
    on_idle: Callable[[], Awaitable[None]]
    max_queued_batches: int = 2000
    on_broken: Callable[[], Awaitable[None]] | None = None  # the feed stopped on an error: close the socket
    on_revoke: Callable[[dict[str, Any]], Awaitable[None]] | None = None  # someone's authority changed: re-check
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    cursor: int | None = None  # last seq sent; None until the client resumes
    queued_seq: int = 0
    last_activity: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._items: deque[tuple[Any, ...]] = deque()
        self._wakeup = asyncio.Event()
        self._batches = 0
        self._overflow = False
        self._expired = False
        self._task = asyncio.create_task(self._run(), name=f"chat-feed-{self.id}")

    # --- producers (never block) ---
    def _put(self, item: tuple[Any, ...]) -> None:
        self._items.append(item)
        self._wakeup.set()

    def offer(self, first: int, bodies: list[str]) -> None:
        last = first + len(bodies) - 1
        if last <= self.queued_seq and self.cursor is not None:
            return
        if self._batches >= self.max_queued_batches:
            if not self._overflow:  # a slow socket: stop queueing, catch up from the stream when it drains
                self._overflow = True
                self._put(("sync",))
            return
        self.queued_seq = max(self.queued_seq, last)
        self._batches += 1
        self._put(("batch", first, bodies))

    def offer_ephemeral(self, body: str) -> None:
        if self.cursor is not None:
            self._put(("frame", body))

    def frame(self, event: dict[str, Any]) -> None:
        """A frame for this socket only."""
        self._put(("frame", protocol.encode(event)))

    def error(self, error: ApplicationError, **extra: Any) -> None:
        self.frame(protocol.error_frame(error, **extra))

    def resume(self, last_seq: int) -> None:
        self._put(("resume", last_seq))

    def ensure_live(self, last_seq: int) -> None:
        """Start live delivery from `last_seq` unless the client already resumed (or asked to)."""
        if self.cursor is None and not any(item[0] == "resume" for item in self._items):
            self.resume(last_seq)

    def pong(self, nonce: Any) -> None:
        self._put(("pong", nonce))

    def resync(self) -> None:
        self._put(("sync",))

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def expire(self) -> None:
        if not self._expired:
            self._expired = True
            task = asyncio.create_task(self.on_idle())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    def revoke(self, revoke: dict[str, Any]) -> None:
        if self.on_revoke is not None:
            task = asyncio.create_task(self.on_revoke(revoke))
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    def stop(self) -> None:
        self._task.cancel()

    # --- the sender ---
    async def _run(self) -> None:
        try:
            while True:
                while not self._items:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                item = self._items.popleft()
                kind = item[0]
                if kind == "batch":
                    self._batches -= 1
                    if self.cursor is not None:
                        await self._deliver(item[1], item[2])
                elif kind == "frame":
                    await self.send(item[1])
                elif kind == "resume":
                    await self._resume(item[1])
                elif kind == "sync":
                    self._overflow = False
                    if self.cursor is not None:
                        await self._catch_up()
                elif kind == "pong":
                    if self.cursor is not None:
                        try:
                            await self._catch_up_if_behind()
                        except (redis.RedisError, OSError):  # the log is unreachable: still answer the ping
                            logger.warning("chat feed %s: no catch-up, Redis is unreachable", self.id)
                    await self.send(protocol.encode(protocol.local_frame("pong", last_seq=self.cursor, nonce=item[1])))
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket is gone (or Redis is): this feed is done; the consumer's disconnect cleans up
            logger.debug("chat feed %s stopped", self.id, exc_info=True)
            # A feed that stops while its socket stays open would leave the client in silence (it could no longer
            # receive anything): close the socket so that the client reconnects and resumes.
            if self.on_broken is not None:  # its own task: closing the socket stops (cancels) this one
                task = asyncio.create_task(self.on_broken())
                _closing.add(task)
                task.add_done_callback(_closing.discard)

    async def _deliver(self, first: int, bodies: list[str]) -> None:
        assert self.cursor is not None
        if first > self.cursor + 1:
            await self._catch_up()
        for offset, body in enumerate(bodies):
            seq = first + offset
            if seq > self.cursor:
                await self.send(body)
                self.cursor = seq

    async def _catch_up(self) -> None:
        assert self.cursor is not None
        replayed = await self.log.replay(after=self.cursor)
        if replayed and replayed[0][0] > self.cursor + 1:
            await self.send(self._truncated_frame(oldest=replayed[0][0], requested=self.cursor))
        for seq, body in replayed:
            if seq > self.cursor:
                await self.send(body)
                self.cursor = seq
        self.queued_seq = max(self.queued_seq, self.cursor)

    async def _catch_up_if_behind(self) -> None:
        current, _oldest = await self.log.bounds()
        if self.cursor is not None and current > self.cursor:
            await self._catch_up()

    @staticmethod
    def _truncated_frame(*, oldest: int | None, requested: int) -> str:
        error = ApplicationError(
            "Older events are no longer kept; reload the transcript for the full history.",
            code=ErrorCode.HISTORY_TRUNCATED, details={"oldest_seq": oldest, "requested": requested},
        )
        return protocol.encode(protocol.error_frame(error))

    async def _resume(self, last_seq: int) -> None:
        current, oldest = await self.log.bounds()
        if last_seq > current:
            error = ApplicationError(
                "`last_seq` is ahead of the conversation.", code=ErrorCode.INVALID_SEQ,
                details={"last_seq": current, "requested": last_seq},
            )
            await self.send(protocol.encode(protocol.error_frame(error)))
            return
        replayed = await self.log.replay(after=last_seq) if last_seq < current else []
        first_kept = replayed[0][0] if replayed else current + 1
        if first_kept > last_seq + 1:
            await self.send(self._truncated_frame(oldest=oldest or None, requested=last_seq))
        self.cursor = last_seq
        count = 0
        for seq, body in replayed:
            if seq > self.cursor:
                await self.send(body)
                self.cursor = seq
                count += 1
        self.queued_seq = max(self.queued_seq, self.cursor)
        await self.send(protocol.encode(protocol.local_frame("resumed", last_seq=self.cursor, replayed=count)))


class LoopSink:
    """Carries the events a worker thread produces (chat.services.conversation_answer_stream) to the event loop,
    which appends them in batches and hands them to local sockets first.

    Tokens that queue up while the previous batch is being appended are merged into one `token` event (one seq):
    a fast answerer costs a handful of appends per answer instead of one per token, and a slow one (an LLM at
    30 tokens/s) still gets one event per token.
    """

    def __init__(self, log: ConversationLog, *, reply: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any, Future[int] | None]] = asyncio.Queue()
        self.reply_to_asker = reply
        self.done = asyncio.Event()
        # Set once the message is stored or refused (its first reply): the asker's next message may go then.
        self.submitted = asyncio.Event()
        self.release_lock: str | None = None  # the answer lock to release with the next append (the final event)

    # --- called from the worker thread ---
    def emit(self, event: dict[str, Any], *, release_lock: str | None = None) -> Future[int]:
        """Log `event` (its seq comes back through the future); with `release_lock`, the answer lock of that token
        is released in the same Redis step that logs it."""
        future: Future[int] = Future()
        if release_lock:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ("event_release", (event, release_lock), future))
        else:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ("event", event, future))
        return future

    def reply(self, frame: dict[str, Any], *, seq_future: Future[int] | None = None) -> None:
        """A frame for the asker's socket only, sent after the events emitted before it (with the seq of
        `seq_future`'s event as `message_seq`, e.g. the ack of a message)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("reply", frame, seq_future))

    def typing(self, role: str, state: bool) -> None:
        """`typing {role, state}` to every socket of the conversation, after the events emitted before it."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("typing", (role, state), None))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("close", None, None))

    # --- on the event loop ---
    async def pump(self) -> None:
        """Until the producer closes: drain what is queued, append it as one batch, dispatch it. A reply to the
        asker goes out after the events emitted before it (an ack after its message), so it cuts the batch."""
        closed = False
        while not closed:
            items = [await self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            events: list[dict[str, Any]] = []
            futures: list[list[Future[int]]] = []
            for kind, payload, future in items:
                if kind == "event_release":  # logged together with what is queued before it, then the lock goes
                    payload, self.release_lock = payload
                    kind = "event"
                if kind == "close":
                    closed = True
                elif kind == "reply":
                    await self._flush(events, futures)
                    events, futures = [], []
                    self._reply(payload, future)
                elif kind == "typing":
                    await self._flush(events, futures)
                    events, futures = [], []
                    role, state = payload
                    try:
                        await self.log.publish_ephemeral(protocol.local_frame("typing", role=role, state=state))
                    except Exception:  # an indicator: not worth failing an answer for
                        logger.warning("chat: typing indicator not sent", exc_info=True)
                elif (
                    payload["type"] == "token" and events and events[-1]["type"] == "token"
                    and events[-1].get("reply_to") == payload.get("reply_to")
                ):
                    events[-1] = {**events[-1], "text": events[-1]["text"] + payload["text"]}
                    futures[-1].append(future)
                else:
                    events.append(payload)
                    futures.append([future])
            await self._flush(events, futures)
        self.submitted.set()
        self.done.set()

    async def _flush(self, events: list[dict[str, Any]], futures: list[list[Future[int]]]) -> None:
        if not events:
            return
        release, self.release_lock = self.release_lock, None
        try:
            appended = await self.log.append(events, release_lock=release)
        except Exception as exc:
            logger.exception("chat: appending events failed")
            for group in futures:
                for future in group:
                    future.set_exception(exc)
            self._reply(protocol.error_frame(ApplicationError(
                "The conversation could not be updated; try again.", code=ErrorCode.SERVICE_UNAVAILABLE)), None)
            return
        hub().dispatch(self.log.channel, appended)
        if appended and appended[-1][0] > self.log.floor:
            # Should Redis lose the counter mid-answer (a restart without persistence), the next append restarts
            # above what this answer already sent, not at the floor its socket saw when it opened.
            self.log = dataclasses.replace(self.log, floor=appended[-1][0])
        for (seq, _body), group in zip(appended, futures):
            for future in group:
                future.set_result(seq)

    def _reply(self, frame: dict[str, Any], seq_future: Future[int] | None) -> None:
        self.submitted.set()
        if self.reply_to_asker is None:
            return
        if seq_future is not None and seq_future.done() and seq_future.exception() is None:
            frame = {**frame, "message_seq": seq_future.result()}  # never `seq`: that marks the conversation's events
        self.reply_to_asker(frame)


class SyncSink:
    """The same contract for synchronous callers (REST, management commands): appends directly; tokens are
    merged until `flush_every` seconds have passed, so a fast answerer is a few appends, not one per token."""

    def __init__(self, log: ConversationLog, *, flush_every: float = 0.05) -> None:
        self.log = log
        self.flush_every = flush_every
        self.pending: list[tuple[dict[str, Any], list[Future[int]]]] = []
        self.first_pending_at = 0.0
        self.replies: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any], *, release_lock: str | None = None) -> Future[int]:
        future: Future[int] = Future()
        if release_lock:
            self.pending.append((event, [future]))
            self.flush(release_lock=release_lock)
            return future
        if event["type"] == "token" and self.pending and self.pending[-1][0]["type"] == "token":
            last, group = self.pending[-1]
            self.pending[-1] = ({**last, "text": last["text"] + event["text"]}, [*group, future])
        else:
            if not self.pending:
                self.first_pending_at = time.monotonic()
            self.pending.append((event, [future]))
        if event["type"] != "token" or time.monotonic() - self.first_pending_at >= self.flush_every:
            self.flush()
        return future

    def reply(self, frame: dict[str, Any], *, seq_future: Future[int] | None = None) -> None:
        self.replies.append(frame)

    def typing(self, role: str, state: bool) -> None:
        self.flush()
        try:
            self.log.publish_ephemeral_sync(protocol.local_frame("typing", role=role, state=state))
        except Exception:
            logger.warning("chat: typing indicator not sent", exc_info=True)

    def flush(self, *, release_lock: str | None = None) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        try:
            appended = self.log.append_sync([event for event, _ in pending], release_lock=release_lock)
        except Exception as exc:
            for _event, group in pending:
                for future in group:
                    future.set_exception(exc)
            raise
        for (seq, _body), (_event, group) in zip(appended, pending):
            for future in group:
                future.set_result(seq)

    def close(self) -> None:
        self.flush()
