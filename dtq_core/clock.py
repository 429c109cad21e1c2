"""Injected clocks: the engine reads time only through a :class:`Clock`."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall time (epoch seconds) and monotonic time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clock.

    Its methods are ``time.time`` and ``time.monotonic`` themselves: a clock is read
    several times per task, and a method around them would be a Python call each time.
    """

    __slots__ = ()

    #: Seconds since the epoch.
    now = staticmethod(time.time)
    #: Seconds on a clock that never goes back.
    monotonic = staticmethod(time.monotonic)


class FakeClock:
    """A clock that moves only when told to; for tests of retries, leases, cron and limits.

    Args:
        start: The initial epoch time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current fake epoch time."""
        return self._now

    def monotonic(self) -> float:
        """The fake time again: it never goes back either."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward and return the new time."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time (not earlier than now)."""
        self.advance(when - self._now)


SYSTEM_CLOCK = SystemClock()
