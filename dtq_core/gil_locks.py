"""Acquiring a lock whose holder is running Python: hand it the GIL before parking.

A thread that finds such a lock taken used to park on it (a futex wait). The holder,
once it released the lock, made a kernel wakeup of that thread, which then held the
lock while it waited for the GIL; the threads took turns that way, two context
switches per hand-off, for thousands of tasks (a lock convoy). ``sleep(0)`` instead
lets the holder take the GIL and run to its release; a holder that takes longer (off
the CPU) is waited for as before.
"""

from __future__ import annotations

import time
from typing import Any

#: Times a thread that finds the lock taken hands the GIL on before it parks.
LOCK_YIELDS = 20


def take(lock: Any) -> None:
    """Acquire ``lock``, which another thread holds (see the module doc)."""
    for _ in range(LOCK_YIELDS):
        time.sleep(0)
        if lock.acquire(False):
            return
    lock.acquire()


class Held:
    """``with`` it: ``lock``, acquired by :func:`take` when another thread has it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(False):
            take(self._lock)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
