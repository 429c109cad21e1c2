"""Time limits for thread workers: a watchdog raises an async exception into the thread.

CPython checks for asynchronous exceptions between bytecodes, so this interrupts Python
code but not a thread blocked inside C (``time.sleep`` is interruptible only when it
returns, a long C call never): use the process pool when a hard limit must hold.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time

from dtq_core.errors import TimeLimitExceeded

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> bool:
    """Schedule ``exc_type`` in thread ``ident`` (``None`` clears a pending one)."""
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.py_object()
    return bool(_set_async_exc(ctypes.c_ulong(ident), obj) == 1)


class Armed:
    """One armed limit; ``fired`` tells whether the watchdog struck."""

    __slots__ = ("active", "deadline", "fired", "ident")

    def __init__(self, ident: int, deadline: float) -> None:
        self.ident = ident
        self.deadline = deadline
        self.active = True
        self.fired = False


class Watchdog:
    """One thread that fires :class:`TimeLimitExceeded` into overdue worker threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Armed]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = False

    def arm(self, seconds: float) -> Armed:
        """Start a limit of ``seconds`` for the calling thread."""
        armed = Armed(threading.get_ident(), time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (armed.deadline, next(self._seq), armed))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dtq-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return armed

    def disarm(self, armed: Armed) -> bool:
        """End the limit; return whether it fired (a pending exception is cleared)."""
        with self._cond:
            armed.active = False
            fired = armed.fired
        if fired:
            raise_in_thread(armed.ident, None)
        return fired

    def stop(self) -> None:
        """Stop the watchdog thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, armed = heapq.heappop(self._heap)
                    if armed.active and not armed.fired:
                        armed.fired = True
                        raise_in_thread(armed.ident, TimeLimitExceeded)
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)
