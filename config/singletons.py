"""One object per process, made on first use: caches sized from settings, thread pools.

    resident_vectors = process_singleton(lambda: ResidentVectors(budget_bytes=...))
    resident_vectors().get(...)

Made lazily (settings are read when the object is first needed, not at import) and once, even when several threads
ask for it first (double-checked under a lock).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def process_singleton(make: Callable[[], T]) -> Callable[[], T]:
    """A function returning the one object `make()` built the first time it was called in this process."""
    made: list[T] = []
    lock = threading.Lock()

    def get() -> T:
        if not made:
            with lock:
                if not made:
                    made.append(make())
        return made[0]

    return get
