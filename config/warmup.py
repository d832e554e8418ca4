"""Warm what the first answer needs when a process starts (docs/operations.md, "Warm-up"), off the request path.

    warm_up_start(process="web")     # config/asgi.py, once the application is built
    warm_up_start(process="worker")  # config/celery.py, in each worker process (worker_process_init)

One daemon thread per process runs chat.warmup.answer_path_warm_up; requests are served meanwhile (a request that
needs the model before the thread is done waits on the same locks, no longer than it would have anyway). /readyz
answers 503 (`warm_up` in `failed`) while the warm-up runs, so a load balancer sends the first customer to a warm
process, but never for longer than WARM_UP_READY_MAX_SECONDS after the start: a slow or stuck warm-up does not keep
a process out of service (a failed one doesn't at all). WARM_UP_ON_START turns it off (the test settings do, so
that short-lived test processes don't load a model they never use).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

_state: dict[str, Any] = {"state": "off"}
_lock = threading.Lock()


def warm_up_state() -> dict[str, Any]:
    """off | running | done | failed, with the milliseconds each part took, for this process."""
    with _lock:
        return {key: value for key, value in _state.items() if key != "started"}


def warm_up_holds_readiness() -> bool:
    """Is this process still warming up, within the time readiness may wait for it?"""
    with _lock:
        if _state.get("state") != "running" or _state.get("pid") != os.getpid():
            return False
        return time.monotonic() - _state["started"] < settings.WARM_UP_READY_MAX_SECONDS


def _run(process: str) -> None:
    from django.db import connections

    started = time.perf_counter()
    try:
        from chat.warmup import answer_path_warm_up

        timings = answer_path_warm_up()
    except Exception as exc:  # a failed warm-up only means the first answer loads what it needs itself
        logger.warning("warm-up failed", exc_info=True, extra={"warm_up_process": process})
        with _lock:
            _state.update(state="failed", error=type(exc).__name__)
        return
    finally:
        connections.close_all()  # this thread's, if anything opened one
    total = round((time.perf_counter() - started) * 1000, 1)
    with _lock:
        _state.update(state="done", ms=total, parts=timings)
    logger.info("warm-up done in %s ms", total, extra={"warm_up_process": process, "warm_up_parts": timings})


def warm_up_start(*, process: str, force: bool = False) -> threading.Thread | None:
    """Start the warm-up thread of this process once (a second call does nothing); None when turned off."""
    if not (force or settings.WARM_UP_ON_START):
        return None
    with _lock:
        if _state.get("pid") == os.getpid() and _state["state"] in ("running", "done"):
            return None
        _state.clear()
        _state.update(state="running", process=process, pid=os.getpid(), started=time.monotonic())
    thread = threading.Thread(target=_run, args=(process,), name=f"warm-up-{process}", daemon=True)
    thread.start()
    return thread
