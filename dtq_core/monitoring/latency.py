"""Latency histograms: queue wait and run time per queue and per task name, system-wide.

Every attempt is recorded once per (queue, task name) pair into this process's pending
histograms: two ``Histogram.record`` calls and one dict lookup per task, done in bulk
(a worker thread only appends the attempt to a queue, without a lock). Every
:data:`PUBLISH_S` (and before a snapshot, and at stop) the pending histograms are added
to the store (:mod:`.published`), so a snapshot taken in any process, by the console
or ``dtq stats``, merges what every worker process measured. Per-queue and per-task
views are merged from the pairs when a snapshot is taken (the histograms are
mergeable), so the hot path pays for neither.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from dtq_core.errors import BackendError
from dtq_core.hooks import Hook, RunContext
from dtq_core.monitoring import published
from dtq_core.monitoring.histogram import Histogram
from dtq_core.snapshot import LatencySnapshot

if TYPE_CHECKING:
    from dtq_core.backends.base import Transition
    from dtq_core.broker import Broker

log = logging.getLogger("dtq.latency")

#: Windows (seconds) the snapshot offers; the console switches between them.
WINDOWS = tuple(published.WINDOWS)
#: Attempts appended before a worker thread records them (a flush records the rest).
RECORD_AT = 256
#: Seconds of one pending slot (the finest tier's slot width).
SLOT_S = 10
#: Seconds between two publishes of a worker process's histograms.
PUBLISH_S = 1.0
#: Seconds a computed window is reused: short windows, then the hour and the day.
CACHE_S = {60: 1.0, 600: 1.0, 3600: 10.0, 86_400: 30.0}


class LatencyHook(Hook):
    """Records every attempt's queue wait and run time (O(1) each) and publishes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Attempts not recorded yet, (queue, task, started_at, wait, run): appended
        # without the lock (an atomic append) by every worker thread, recorded into
        # ``_pending`` under it by the next flush, or by the thread that brings them to
        # RECORD_AT (a lock per task was one more lock every thread takes per task).
        self._todo: deque[tuple[str, str, float, float, float]] = deque()
        # (queue, task, 10 s slot of the attempt) -> (wait, run): published into the
        # slots of the time the attempts ran, however late the publish.
        self._pending: dict[tuple[str, str, int], tuple[Histogram, Histogram]] = {}
        self._next_publish = 0.0
        self._cache: dict[int, tuple[float, tuple[LatencySnapshot, ...]]] = {}
        #: Publishes that failed (the histograms are kept and sent with the next one).
        self.publish_errors = 0

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        """Record the attempt."""
        d = ctx.delivery
        todo = self._todo
        todo.append((d.queue, d.name, d.started_at, d.started_at - d.enqueued_at, ctx.runtime))
        # One thread records; the others go on (as Metrics.on_batch folds).
        if len(todo) >= RECORD_AT and self._lock.acquire(False):
            try:
                self._record()
            finally:
                self._lock.release()

    def _record(self) -> None:
        """Record the attempts appended since the last time (lock held)."""
        todo, pending = self._todo, self._pending
        while todo:
            queue, task, started_at, wait, run = todo.popleft()
            key = (queue, task, int(started_at // SLOT_S))
            pair = pending.get(key)
            if pair is None:
                pair = pending[key] = (Histogram(), Histogram())
            pair[0].record(wait)
            pair[1].record(run)

    def flush(self, broker: Broker, now: float) -> bool:
        """Publish what was recorded since the last publish; whether anything was."""
        with self._lock:
            self._record()
            pending, self._pending = self._pending, {}
        if not pending:
            return False
        slots: dict[int, dict[tuple[str, str], tuple[Histogram, Histogram]]] = {}
        for (queue, task, slot), pair in pending.items():
            slots.setdefault(slot, {})[(queue, task)] = pair
        try:
            for slot, part in sorted(slots.items()):
                published.publish(broker.backend, part, slot * SLOT_S)
                for key in [k for k in pending if k[2] == slot]:
                    del pending[key]
        except BackendError as exc:
            # Kept for the next try: a store outage delays the figures, never loses them.
            self._restore(pending, exc)
        self._cache.clear()
        return True

    def _restore(
        self, pending: dict[tuple[str, str, int], tuple[Histogram, Histogram]], exc: Exception
    ) -> None:
        """Put unpublished histograms back in front of what was recorded meanwhile."""
        self.publish_errors += 1
        log.warning("latency histograms not published (kept for the next try): %s", exc)
        with self._lock:
            for pair, (wait, run) in pending.items():
                have = self._pending.get(pair)
                if have is None:
                    self._pending[pair] = (wait, run)
                else:
                    have[0].merge(wait)
                    have[1].merge(run)

    def tick(self, broker: Broker, now: float) -> float | None:
        """Publish at most every :data:`PUBLISH_S`."""
        if now >= self._next_publish:
            self.flush(broker, now)
            self._next_publish = now + PUBLISH_S
        return self._next_publish

    def detach(self, broker: Broker) -> None:
        """Publish the last figures before the broker closes its store."""
        self.flush(broker, broker.clock.now())

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``latency``: one entry per scope, key, kind and window, from every process.

        A window is recomputed at most every :data:`CACHE_S` of its own: merging the
        slots is most of a snapshot's cost, and a console asks several times a second.
        """
        now = broker.clock.now()
        self.flush(broker, now)
        out: list[LatencySnapshot] = []
        for window in WINDOWS:
            cached = self._cache.get(window)
            if cached is not None and 0.0 <= now - cached[0] < CACHE_S[window]:
                out.extend(cached[1])
                continue
            part = _window(broker, now, window)
            self._cache[window] = (now, part)
            out.extend(part)
        return {"latency": tuple(out)}


def _window(broker: Broker, now: float, window: int) -> tuple[LatencySnapshot, ...]:
    merged = published.read_window(broker.backend, now, window)
    out = []
    for (scope, key, kind), h in sorted(published.by_scope(merged).items()):
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
    return tuple(out)
