"""Latency histograms: queue wait and run time per queue and per task name.

Every attempt is recorded once per (queue, task name) pair, into the current time slot
of a ring of histograms: two ``Histogram.record`` calls and one slot lookup per task.
Per-queue and per-task views are merged from the pairs when a snapshot is taken (the
histograms are mergeable), so the hot path pays for neither.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from dtq_core.hooks import Hook, RunContext
from dtq_core.monitoring.histogram import Histogram
from dtq_core.snapshot import LatencySnapshot

if TYPE_CHECKING:
    from dtq_core.backends.base import Transition
    from dtq_core.broker import Broker

#: Windows (seconds) the snapshot offers; the console switches between them.
WINDOWS = (60, 600)
#: Slots in the ring: the time resolution of the windows is ``WINDOWS[-1] / SLOTS``.
SLOTS = 60
#: Seconds a computed latency snapshot is reused.
CACHE_S = 1.0


class _Ring:
    """Wait and run histograms per time slot, for one (queue, task) pair."""

    __slots__ = ("epochs", "run", "wait")

    def __init__(self) -> None:
        self.epochs: list[int] = [-1] * (SLOTS + 1)
        self.wait = [Histogram() for _ in range(SLOTS + 1)]
        self.run = [Histogram() for _ in range(SLOTS + 1)]

    def merged(self, kind: str, current: int, span: int) -> list[Histogram]:
        hists = self.wait if kind == "wait" else self.run
        return [h for h, e in zip(hists, self.epochs, strict=True) if current - span <= e]


class LatencyHook(Hook):
    """Records every attempt's queue wait and run time (O(1) each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: dict[tuple[str, str], _Ring] = {}
        self._width = WINDOWS[-1] / SLOTS
        self._cached: tuple[float, dict[str, Any]] | None = None

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        """Record the attempt."""
        d = ctx.delivery
        now = d.started_at
        n = math.floor(now / self._width)
        i = n % (SLOTS + 1)
        with self._lock:
            ring = self._rings.get((d.queue, d.name))
            if ring is None:
                ring = self._rings[(d.queue, d.name)] = _Ring()
            if ring.epochs[i] != n:
                if ring.epochs[i] > n:
                    return  # older than the ring: dropped
                ring.epochs[i] = n
                ring.wait[i].reset()
                ring.run[i].reset()
            ring.wait[i].record(now - d.enqueued_at)
            ring.run[i].record(ctx.runtime)

    def histograms(self, now: float, window_s: int) -> dict[tuple[str, str, str], Histogram]:
        """Merged histograms of the window, by ``(scope, key, kind)``."""
        current = math.floor(now / self._width)
        span = math.ceil(window_s / self._width)
        out: dict[tuple[str, str, str], Histogram] = {}
        with self._lock:
            for (queue, name), ring in self._rings.items():
                for kind in ("wait", "run"):
                    parts = ring.merged(kind, current, span)
                    for ident in (("queue", queue, kind), ("task", name, kind)):
                        h = out.get(ident)
                        if h is None:
                            h = out[ident] = Histogram()
                        for p in parts:
                            h.merge(p)
        return out

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``latency``: one entry per scope, key, kind and window.

        Recomputed at most once a second: merging the slots and binning them is most of
        a snapshot's cost, and a console asks several times a second.
        """
        now = broker.clock.now()
        cached = self._cached
        if cached is not None and 0.0 <= now - cached[0] < CACHE_S:
            return cached[1]
        out = []
        for window in WINDOWS:
            for (scope, key, kind), h in sorted(self.histograms(now, window).items()):
                if h.count == 0:
                    continue
                p50, p95, p99, p999 = h.percentiles((50, 95, 99, 99.9))
                out.append(
                    LatencySnapshot(
                        scope,
                        key,
                        kind,
                        window,
                        h.count,
                        p50,
                        p95,
                        p99,
                        p999,
                        h.max,
                        h.mean,
                        tuple(h.coarse(12)),
                    )
                )
        result = {"latency": tuple(out)}
        self._cached = (now, result)
        return result
