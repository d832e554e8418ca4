"""The bridge between the event loop and the synchronous world: answers run in worker threads, their events come
back to the loop (chat.events.LoopSink) and go out to the sockets.

Two bounded thread pools per process, each thread keeping its own database connection: `db` for the short ORM hops
of the sockets (open a conversation, rate an answer, ask for a person) and `answer` for answers, which hold a thread
for as long as the answer engine streams. Bounded pools mean bounded PostgreSQL connections; separate pools mean a
socket never waits behind a slow answer to open. (config.ws.run_in_workspace would reconnect to PostgreSQL on every
hop with CONN_MAX_AGE=0 and runs all hops on one thread.)
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.db import InterfaceError, connection
from django.db import OperationalError as DatabaseOperationalError

from chat import deferred, protocol, selectors, services
from chat.events import ConversationLog, LoopSink, answer_locks_release_all, hub
from config.errors import ApplicationError, ErrorCode, ServiceUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_thread_state = threading.local()
# Answers outlive the socket that asked (the others and a resuming client still want them): keep their tasks.
_running: set[asyncio.Task[Any]] = set()


def _pool(name: str) -> ThreadPoolExecutor:
    pool = _pools.get(name)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(name)
            if pool is None:
                workers = settings.CHAT_ANSWER_WORKERS if name == "answer" else max(2, settings.CHAT_ANSWER_WORKERS // 4)
                pool = _pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"chat-{name}")
    return pool


def _connection_ready() -> None:
    # CONN_HEALTH_CHECKS for a thread that keeps its connection across hops: Django checks it (SELECT 1) before the
    # hop's first query and reconnects if PostgreSQL cut it (a restart, a failover, pg_terminate_backend). Checking
    # only connections idle for over 30 s (as before) failed the first hop of every thread after a cut.
    if connection.connection is not None:
        connection.health_check_done = False
    _thread_state.last_used = time.monotonic()


def _in_workspace(workspace: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    _connection_ready()
    connection.set_tenant(workspace)
    try:
        return fn(*args, **kwargs)
    finally:
        answer_locks_release_all()
        connection.set_schema_to_public()
        # As Django does between requests (and config.ws between socket hops): after a database error, keep the
        # thread's connection only if it still works. Without this, a connection PostgreSQL terminated stayed in
        # the thread and failed every later hop for as long as the hops came less than 30 s apart.
        if connection.errors_occurred:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()


async def run_in_workspace_pool(workspace: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a `db` pool thread, in the workspace's schema."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool("db"), lambda: _in_workspace(workspace, fn, *args, **kwargs))


def _message_answer(
    *, conversation_id: int, text: str, client_id: str, author: Any, sink: LoopSink, cancelled: threading.Event
) -> None:
    from documents import curated

    conversation, existing = selectors.conversation_with_client_message(
        conversation_id=conversation_id, client_message_id=client_id, with_history=True,
        answer_lock_key=sink.log.advisory_key,  # the answer takes it next: in the same round trip as this read
        also=curated.curated_version_columns(),  # and it checks the curated answers' version: read it here too
    )
    curated.curated_version_known(count=conversation.curated_version_n, at=conversation.curated_version_at)
    # The socket's log was made when it opened; if Redis lost the seq counter since (a restart without
    # persistence), the append script restarts it from this floor: take PostgreSQL's current one, not that.
    if (conversation.last_seq or 0) > sink.log.floor:
        sink.log = dataclasses.replace(sink.log, floor=conversation.last_seq)
    submitted = services.customer_message_submit(
        conversation=conversation, text=text, client_message_id=client_id, author=author, sink=sink, existing=existing
    )
    if submitted.lock_token:
        services.conversation_answer_stream(
            conversation=conversation, question=submitted.message, lock_token=submitted.lock_token, sink=sink,
            cancelled=cancelled.is_set,
            # the turns read with the conversation come before a message stored after that read (not a retry's)
            history=conversation.recent_history if submitted.created else None,
        )


def _message_job(
    *, conversation_id: int, text: str, client_id: str, author: Any, sink: LoopSink, cancelled: threading.Event
) -> None:
    try:
        with deferred.after_answer():  # what is not needed before the first token goes after the answer
            _message_answer(conversation_id=conversation_id, text=text, client_id=client_id, author=author, sink=sink,
                            cancelled=cancelled)
    except ApplicationError as error:
        sink.reply(protocol.error_frame(error, client_id=client_id))
    except (redis.RedisError, OSError, DatabaseOperationalError, InterfaceError):
        # Redis (the answer lock, the event log) or PostgreSQL is unreachable, or our connection to it was cut:
        # the client sends the message again (same client_id: stored once, answered once).
        logger.warning("chat: message %s refused: a service is unreachable", client_id, exc_info=True)
        error = ServiceUnavailable("The conversation service is briefly unavailable; send your message again in a "
                                   "moment.", details={"retry_after": 2})
        sink.reply(protocol.error_frame(error, client_id=client_id))
    except Exception:
        logger.exception("chat: message %s could not be handled", client_id)
        error = ApplicationError("Something went wrong on our side.", code=ErrorCode.SERVER_ERROR, status_code=500)
        sink.reply(protocol.error_frame(error, client_id=client_id))
    finally:
        from documents import curated

        curated.curated_version_forget()  # read for this answer only
        sink.close()


async def conversation_message_handle(
    *, workspace: Any, conversation_id: int, log: ConversationLog, text: str, client_id: str, author: Any,
    reply: Callable[[dict[str, Any]], None], sink: LoopSink, after: LoopSink | None = None,
) -> None:
    """Store a customer's message and stream the bot's answer (if it answers) to every socket of the conversation.
    Runs as its own task: it finishes even if the asking socket goes away. `reply` reaches the asker only. With
    `after`, waits until that earlier message of the same socket is stored or refused: a socket's messages are
    taken in the order it sent them."""
    if after is not None:
        await after.submitted.wait()
    cancelled = threading.Event()
    pump = asyncio.create_task(sink.pump())
    _keep(pump)
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(
        _pool("answer"),
        lambda: _in_workspace(
            workspace, _message_job, conversation_id=conversation_id, text=text, client_id=client_id, author=author,
            sink=sink, cancelled=cancelled,
        ),
    )
    try:
        await asyncio.wait_for(asyncio.shield(pump), timeout=settings.CHAT_ANSWER_TIMEOUT)
    except TimeoutError:
        # The engine stalled beyond every provider deadline. Tell everyone; the worker stops at its next event.
        cancelled.set()
        error = ApplicationError(
            "The assistant took too long to answer. Please try again, or ask for a person.",
            code=ErrorCode.ANSWER_TIMEOUT,
        )
        try:
            await log.publish_ephemeral(protocol.local_frame("typing", role="bot", state=False))
            hub().dispatch(log.channel, await log.append([protocol.conversation_event(
                "error", code=error.code, message=error.message, details={},
            )]))
        except Exception:
            logger.exception("chat: could not report an answer timeout")
        return
    try:
        await job
    except Exception:
        logger.exception("chat: answer job failed")


def _keep(task: asyncio.Task[Any]) -> None:
    _running.add(task)
    task.add_done_callback(_running.discard)


def conversation_message_start(
    *, log: ConversationLog, reply: Callable[[dict[str, Any]], None], after: LoopSink | None = None, **kwargs: Any
) -> LoopSink:
    """Start handling a message (see conversation_message_handle); the returned sink's `submitted` event is set once
    the message is stored or refused."""
    sink = LoopSink(log, reply=reply)
    _keep(asyncio.create_task(conversation_message_handle(log=log, reply=reply, sink=sink, after=after, **kwargs)))
    return sink
