"""Warm what the first answer needs when a process starts (docs/operations.md, "Warm-up"), off the request path.

    warm_up_start(process="web")     # config/asgi.py, once the application is built
    warm_up_start(process="worker")  # config/celery.py, in each worker process (worker_process_init)

One daemon thread per process runs chat.warmup.answer_path_warm_up; requests are served meanwhile (a request that
needs the model before the thread is done waits on the same locks, no longer than it would have anyway). Readiness
does not wait for it: /readyz reports it to operators (`warm_up` in the details) without failing. WARM_UP_ON_START
turns it off (the test settings do, so that short-lived test processes don't load a model they never use).
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
        return dict(_state)


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
        _state.update(state="running", process=process, pid=os.getpid())
    thread = threading.Thread(target=_run, args=(process,), name=f"warm-up-{process}", daemon=True)
    thread.start()
    return thread
