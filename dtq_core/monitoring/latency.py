"""Latency histograms: queue wait and run time per queue and per task name."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from dtq_core.hooks import Hook, RunContext
from dtq_core.monitoring.histogram import Histogram, WindowedHistogram
from dtq_core.snapshot import LatencySnapshot

if TYPE_CHECKING:
    from dtq_core.backends.base import Transition
    from dtq_core.broker import Broker

#: Windows (seconds) the snapshot offers; the console switches between them.
WINDOWS = (60, 600)


class LatencyHook(Hook):
    """Records every attempt's queue wait and run time (O(1) each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hists: dict[tuple[str, str, str], WindowedHistogram] = {}

    def _hist(self, scope: str, key: str, kind: str) -> WindowedHistogram:
        h = self._hists.get((scope, key, kind))
        if h is None:
            h = self._hists[(scope, key, kind)] = WindowedHistogram(WINDOWS[-1], 60)
        return h

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        """Record the attempt."""
        d = ctx.delivery
        wait = d.started_at - d.enqueued_at
        now = d.started_at
        run = ctx.runtime
        with self._lock:
            get = self._hists.get
            for ident, value in (
                (("queue", d.queue, "wait"), wait),
                (("queue", d.queue, "run"), run),
                (("task", d.name, "wait"), wait),
                (("task", d.name, "run"), run),
            ):
                h = get(ident) or self._hist(*ident)
                h.record(value, now)

    def histograms(self, now: float, window_s: int) -> dict[tuple[str, str, str], Histogram]:
        """Merged histograms of the window, by ``(scope, key, kind)``."""
        with self._lock:
            return {k: h.snapshot(now, window_s) for k, h in self._hists.items()}

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``latency``: one entry per scope, key, kind and window."""
        now = broker.clock.now()
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
        return {"latency": tuple(out)}
