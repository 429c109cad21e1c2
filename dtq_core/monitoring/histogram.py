"""Log-linear latency histograms with bounded relative error, plain and time-windowed."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from math import floor, frexp, ldexp
from typing import Any, Final

from dtq_core.errors import ConfigError, SerializationError

#: Precision used when none is given: relative error <= 1/129 (about 0.78 %).
DEFAULT_PRECISION: Final = 2

#: Valid ``precision`` values (significant decimal digits).
PRECISION_RANGE: Final = range(1, 6)

#: Version of the :meth:`Histogram.to_dict` layout.
DICT_VERSION: Final = 1


def _sub_buckets(precision: int) -> int:
    """The power of two ``S`` with ``1 / (2S + 1) <= 10**-precision``."""
    need = (10**precision - 1) / 2
    return 1 << max(0, math.ceil(math.log2(need)))


class Histogram:
    """A mergeable histogram of positive floats (latencies in seconds).

    A positive value ``v = m * 2**e`` (``m`` in [0.5, 1), from :func:`math.frexp`) goes to
    bucket ``e * S + floor(m * 2S)``: each power of two is split into ``S`` equal linear
    sub-buckets, ``S`` being the power of two chosen from ``precision``. A bucket
    ``[lo, hi)`` has ``hi / lo <= 1 + 1/S`` and is represented by ``2 lo hi / (lo + hi)``,
    which is within ``relative_error = 1 / (2S + 1)`` of every value in it; that is at most
    ``10**-precision``. Values ``<= 0`` are counted in a single zero bucket represented by
    0.0 (no relative-error promise for them).

    :meth:`percentile` approximates the *nearest-rank* percentile: the ``ceil(p/100 * N)``-th
    smallest value. ``p = 0`` and ``p = 100`` return the exact minimum and maximum.

    Not thread-safe and lock-free on purpose: call :meth:`record` from one thread or under
    the caller's lock, and merge per-thread or per-worker histograms for a total.

    Args:
        precision: Significant decimal digits, 1 to 5; 2 means relative error under 1 %.

    Raises:
        ConfigError: If ``precision`` is out of range.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_sub", "_sub2", "_sum", "precision")

    def __init__(self, precision: int = DEFAULT_PRECISION) -> None:
        if precision not in PRECISION_RANGE:
            raise ConfigError(f"precision must be in 1..5, got {precision!r}")
        self.precision = precision
        self._sub = _sub_buckets(precision)
        self._sub2 = 2 * self._sub
        # Bucket index -> count; the key None is the zero bucket (values <= 0).
        self._counts: dict[int | None, int] = {}
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def __repr__(self) -> str:
        return f"Histogram(precision={self.precision}, count={self._count})"

    def record(self, value: float, count: int = 1) -> None:
        """Count ``value`` ``count`` times (``count >= 1``, unchecked on this hot path); O(1).

        Values ``<= 0`` go to the zero bucket; NaN raises ValueError, infinity OverflowError.
        """
        if value > 0.0:
            m, e = frexp(value)
            i: int | None = e * self._sub + floor(m * self._sub2)
        elif value != value:  # noqa: PLR0124 - the NaN test, off the hot path
            raise ValueError("cannot record NaN")
        else:
            i = None
        counts = self._counts
        counts[i] = counts.get(i, 0) + count
        self._count += count
        self._sum += value * count
        # Plain comparisons: min()/max() calls cost several times more here.
        if value < self._min:  # noqa: PLR1730
            self._min = value
        if value > self._max:  # noqa: PLR1730
            self._max = value

    @property
    def relative_error(self) -> float:
        """The bound on ``|estimate - exact| / exact`` for positive values."""
        return 1.0 / (2 * self._sub + 1)

    @property
    def count(self) -> int:
        """The number of recorded values."""
        return self._count

    @property
    def sum(self) -> float:
        """The sum of recorded values."""
        return self._sum

    @property
    def mean(self) -> float:
        """The mean of recorded values, NaN when empty."""
        return self._sum / self._count if self._count else math.nan

    @property
    def min(self) -> float:
        """The exact smallest recorded value, NaN when empty."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """The exact largest recorded value, NaN when empty."""
        return self._max if self._count else math.nan

    def _bounds(self, i: int | None) -> tuple[float, float]:
        """The ``[lower, upper)`` range of bucket ``i``."""
        if i is None:
            return (min(self._min, 0.0), 0.0)
        q, r = divmod(i, self._sub)
        shift = q - 1 - self._sub.bit_length()  # q - 2 - log2(S)
        return (ldexp(self._sub + r, shift), ldexp(self._sub + r + 1, shift))

    def _representative(self, i: int | None) -> float:
        """The value that stands for bucket ``i``, clamped into ``[min, max]``."""
        rep = 0.0 if i is None else _midpoint(*self._bounds(i))
        return min(max(rep, self._min), self._max)

    def percentile(self, p: float) -> float:
        """The nearest-rank ``p``-th percentile, within :attr:`relative_error`.

        Args:
            p: A percentage in [0, 100]; 0 and 100 give the exact min and max.

        Returns:
            The estimate, or NaN when the histogram is empty.

        Raises:
            ValueError: If ``p`` is outside [0, 100].
        """
        return self.percentiles([p])[0]

    def percentiles(self, ps: Iterable[float]) -> list[float]:
        """Like :meth:`percentile` for each of ``ps``, sharing one pass over the buckets."""
        ps = list(ps)
        for p in ps:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile must be in [0, 100], got {p!r}")
        n = self._count
        if n == 0:
            return [math.nan] * len(ps)
        keys = sorted(self._counts, key=_zero_first)
        cumulative = list(accumulate(self._counts[k] for k in keys))
        out: list[float] = []
        for p in ps:
            if p == 0.0:
                out.append(self._min)
            elif p == 100.0:
                out.append(self._max)
            else:
                rank = max(1, math.ceil(p * n / 100.0))
                out.append(self._representative(keys[bisect_left(cumulative, rank)]))
        return out

    def buckets(self) -> list[tuple[float, float, int]]:
        """The non-empty buckets as ``(lower, upper, count)``, ascending.

        The zero bucket, when present, comes first as ``(min(min, 0.0), 0.0, count)``.
        """
        return [(*self._bounds(k), self._counts[k]) for k in sorted(self._counts, key=_zero_first)]

    def coarse(self, n_bins: int) -> list[tuple[float, float, int]]:
        """Regroup the buckets into ``n_bins`` log-spaced bins, for drawing bars.

        The bins split ``[lowest bucket's lower, highest bucket's upper)`` evenly on a log
        scale; empty bins are kept so bars line up. A bucket counts in the bin holding its
        representative value. A zero bucket adds one leading bin ``(lower, 0.0, count)``.

        Args:
            n_bins: The number of positive bins, at least 1.

        Returns:
            ``(lower, upper, count)`` per bin, ascending; empty if nothing is recorded.
        """
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
        zero = self._counts.get(None, 0)
        out = [(*self._bounds(None), zero)] if zero else []
        positive = sorted(k for k in self._counts if k is not None)
        if not positive:
            return out
        lo, hi = self._bounds(positive[0])[0], self._bounds(positive[-1])[1]
        span = math.log(hi / lo)
        bins = [0] * n_bins
        for k in positive:
            at = int(n_bins * math.log(_midpoint(*self._bounds(k)) / lo) / span)
            bins[min(max(at, 0), n_bins - 1)] += self._counts[k]
        edges = [lo * math.exp(span * j / n_bins) for j in range(n_bins)] + [hi]
        out.extend((edges[j], edges[j + 1], bins[j]) for j in range(n_bins))
        return out

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s observations to this histogram, in place.

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: If ``other`` has another precision.
        """
        if other.precision != self.precision:
            raise ValueError(f"cannot merge precision {other.precision} into {self.precision}")
        counts = self._counts
        for k, c in list(other._counts.items()):
            counts[k] = counts.get(k, 0) + c
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    @classmethod
    def merged(cls, *hists: Histogram, precision: int | None = None) -> Histogram:
        """A new histogram holding the observations of all of ``hists`` (left unchanged).

        Args:
            *hists: Histograms of one precision.
            precision: The result's precision; by default that of ``hists[0]``, or
                :data:`DEFAULT_PRECISION` if there is none.

        Raises:
            ValueError: If the precisions differ.
        """
        if precision is None:
            precision = hists[0].precision if hists else DEFAULT_PRECISION
        out = cls(precision)
        for h in hists:
            out.merge(h)
        return out

    def copy(self) -> Histogram:
        """An independent copy."""
        return Histogram.merged(self)

    def reset(self) -> None:
        """Forget every observation, keeping the precision."""
        self._counts.clear()
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def to_counts(self) -> dict[str, float]:
        """This histogram as a count map, for :meth:`Backend.add_counts`.

        ``str(bucket)`` (``z`` for the zero bucket) maps to its count, with ``n`` (count),
        ``s`` (sum), ``lo`` and ``hi`` (min negated, and max): every entry merges by
        addition except ``lo``/``hi``, which merge by max.
        """
        out: dict[str, float] = {("z" if k is None else str(k)): c for k, c in self._counts.items()}
        if self._count:
            out.update(n=self._count, s=self._sum, lo=-self._min, hi=self._max)
        return out

    @classmethod
    def from_counts(cls, data: dict[str, float], precision: int = DEFAULT_PRECISION) -> Histogram:
        """Rebuild a histogram from a (merged) :meth:`to_counts` map; bad entries are skipped."""
        h = cls(precision)
        for k, c in data.items():
            if k in ("n", "s", "lo", "hi") or c < 1:
                continue
            try:
                idx: int | None = None if k == "z" else int(k)
            except ValueError:
                continue
            h._counts[idx] = h._counts.get(idx, 0) + int(c)
        h._count = sum(h._counts.values())
        if h._count:
            h._sum = float(data.get("s", 0.0))
            h._min = -float(data.get("lo", -math.inf)) if "lo" in data else 0.0
            h._max = float(data.get("hi", 0.0))
        return h

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, for shipping a worker's histogram to be merged elsewhere."""
        return {
            "version": DICT_VERSION,
            "precision": self.precision,
            "count": self._count,
            "sum": self._sum,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "zero": self._counts.get(None, 0),
            "buckets": sorted([k, c] for k, c in self._counts.items() if k is not None),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        """Rebuild a histogram from :meth:`to_dict` output.

        Raises:
            SerializationError: If the dict is malformed, of another version or
                inconsistent (bucket counts not adding up to ``count``).
        """
        try:
            if data["version"] != DICT_VERSION:
                raise SerializationError(f"unknown histogram version {data['version']!r}")
            h = cls(int(data["precision"]))
            h._count, h._sum = int(data["count"]), float(data["sum"])
            if h._count:
                h._min, h._max = float(data["min"]), float(data["max"])
            h._counts.update({int(k): int(c) for k, c in data["buckets"]})
            if zero := int(data["zero"]):
                h._counts[None] = zero
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise SerializationError(f"malformed histogram dict: {exc}") from exc
        if sum(h._counts.values()) != h._count or min(h._counts.values(), default=1) < 1:
            raise SerializationError("histogram bucket counts do not add up to its count")
        return h


def _midpoint(lo: float, hi: float) -> float:
    """The harmonic mean of ``lo`` and ``hi``: it balances the worst relative error."""
    return 2.0 * lo * hi / (lo + hi)


def _zero_first(k: int | None) -> float:
    """Sort key putting the zero bucket (``None``) before every positive bucket."""
    return -math.inf if k is None else k


class WindowedHistogram:
    """Percentiles over the last ``window_s`` seconds, as a ring of per-slot histograms.

    Time is split into slots of ``window_s / slots`` seconds aligned on the epoch; a value
    recorded at ``t`` lives in slot ``floor(t / width)``. A snapshot at ``now`` merges the
    slots that overlap ``(now - window, now]``, so it holds every value recorded in the
    last ``window`` seconds and none older than ``window`` rounded up to whole slots plus
    one slot (the current slot is only partly elapsed). A value whose slot was already
    reused for a later time is dropped. Not thread-safe, like :class:`Histogram`.

    Args:
        window_s: The longest window a snapshot can cover, in seconds.
        slots: The number of slots per window (the time resolution).
        precision: Passed to each :class:`Histogram`.

    Raises:
        ConfigError: If ``window_s <= 0`` or ``slots < 1``.
    """

    __slots__ = ("_epochs", "_hists", "_width", "precision", "slots", "window_s")

    def __init__(
        self, window_s: float = 60.0, slots: int = 12, precision: int = DEFAULT_PRECISION
    ) -> None:
        if not window_s > 0 or slots < 1:
            raise ConfigError(f"need window_s > 0 and slots >= 1, got {window_s!r}, {slots!r}")
        self.window_s = float(window_s)
        self.slots = slots
        self.precision = precision
        self._width = self.window_s / slots
        # One slot more than a window: the current slot is only partly elapsed.
        self._hists = [Histogram(precision) for _ in range(slots + 1)]
        self._epochs: list[int | None] = [None] * (slots + 1)

    def record(self, value: float, now: float, count: int = 1) -> None:
        """Record ``value`` observed at epoch time ``now``; see :meth:`Histogram.record`."""
        n = math.floor(now / self._width)
        i = n % (self.slots + 1)
        held = self._epochs[i]
        if held != n:
            if held is not None and held > n:
                return
            self._hists[i].reset()
            self._epochs[i] = n
        self._hists[i].record(value, count)

    def snapshot(self, now: float, window_s: float | None = None) -> Histogram:
        """A new histogram of the values of the last ``window_s`` seconds before ``now``.

        Args:
            now: The epoch time the window ends at.
            window_s: The window, at most (and by default) the configured one.
        """
        if window_s is None:
            window_s = self.window_s
        if not 0 < window_s <= self.window_s:
            raise ValueError(f"window_s must be in (0, {self.window_s}], got {window_s!r}")
        span = math.ceil(window_s * self.slots / self.window_s)
        current = math.floor(now / self._width)
        live = [
            h
            for h, e in zip(self._hists, self._epochs, strict=True)
            if e is not None and current - span <= e <= current
        ]
        return Histogram.merged(*live, precision=self.precision)
