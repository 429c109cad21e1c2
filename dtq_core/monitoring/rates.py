"""Rolling per-second event counts: rates over the last seconds and sparkline series."""

from __future__ import annotations

import math
from typing import Final

from dtq_core.errors import ConfigError

#: The rate windows the console shows, in seconds.
RATE_WINDOWS: Final = (1, 10, 60)

#: Seconds of history kept by default: enough for the longest of :data:`RATE_WINDOWS`.
DEFAULT_HORIZON_S: Final = 60


class RollingCounter:
    """Events counted per whole second in a ring, for rates and sparklines.

    Second ``s`` covers epoch times ``[s, s + 1)``. The ring keeps ``horizon_s`` complete
    seconds plus the current one, so :meth:`add` is O(1) and a query reads at most
    ``horizon_s + 1`` cells. Rates and series use *complete* seconds by default: the
    current second is still filling and would make the right edge of a sparkline dip.

    Time is passed in and should not go backwards by more than the horizon: an event
    older than every second the ring holds counts in :attr:`total` only. Not thread-safe:
    call under the caller's lock or from one thread.

    Args:
        horizon_s: Whole seconds of history to keep, at least 1.

    Raises:
        ConfigError: If ``horizon_s < 1``.
    """

    __slots__ = ("_counts", "_seconds", "_size", "_total", "horizon_s")

    def __init__(self, horizon_s: int = DEFAULT_HORIZON_S) -> None:
        if horizon_s < 1:
            raise ConfigError(f"horizon_s must be >= 1, got {horizon_s!r}")
        self.horizon_s = horizon_s
        self._size = horizon_s + 1
        self._counts = [0] * self._size
        # The second each cell holds; None until first used.
        self._seconds: list[int | None] = [None] * self._size
        self._total = 0

    def __repr__(self) -> str:
        return f"RollingCounter(horizon_s={self.horizon_s}, total={self._total})"

    @property
    def total(self) -> int:
        """Every event ever added, including ones too old for the ring."""
        return self._total

    def add(self, n: int, now: float) -> None:
        """Count ``n`` events at epoch time ``now``.

        Args:
            n: How many events; zero is allowed.
            now: The epoch time of the events.

        Raises:
            ValueError: If ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"cannot add a negative count {n!r}")
        self._total += n
        second = math.floor(now)
        i = second % self._size
        held = self._seconds[i]
        if held == second:
            self._counts[i] += n
        elif held is None or held < second:
            self._seconds[i] = second
            self._counts[i] = n
        # else: older than the ring's span; only the total keeps it.

    def _count_at(self, second: int) -> int:
        """The events counted in ``second``, or 0 if the ring no longer (or never) held it."""
        i = second % self._size
        return self._counts[i] if self._seconds[i] == second else 0

    def series(
        self, now: float, seconds: int | None = None, *, include_current: bool = False
    ) -> list[int]:
        """Counts per second, oldest first, for a sparkline.

        Args:
            now: The epoch time the series ends at.
            seconds: How many seconds, 1 to :attr:`horizon_s` (the default).
            include_current: End with the second holding ``now`` (still filling) instead
                of the last complete one.

        Returns:
            ``seconds`` counts; seconds with no events are 0.

        Raises:
            ValueError: If ``seconds`` is out of range.
        """
        if seconds is None:
            seconds = self.horizon_s
        if not 1 <= seconds <= self.horizon_s:
            raise ValueError(f"seconds must be in 1..{self.horizon_s}, got {seconds!r}")
        end = math.floor(now) + (1 if include_current else 0)
        return [self._count_at(s) for s in range(end - seconds, end)]

    def rate(self, window_s: int, now: float) -> float:
        """Events per second over the ``window_s`` complete seconds before ``now``.

        Args:
            window_s: Whole seconds, 1 to :attr:`horizon_s` (see :data:`RATE_WINDOWS`).
            now: The epoch time; its own second, still filling, is left out.

        Raises:
            ValueError: If ``window_s`` is out of range.
        """
        if not 1 <= window_s <= self.horizon_s:
            raise ValueError(f"window_s must be in 1..{self.horizon_s}, got {window_s!r}")
        return sum(self.series(now, window_s)) / window_s
