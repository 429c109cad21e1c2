"""Metrics from the event stream: counters and rolling rates per queue and in total."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dtq_core.monitoring.rates import RollingCounter
from dtq_core.task import TaskState

if TYPE_CHECKING:
    from dtq_core.events import Event

S = TaskState

#: Counters kept per queue, named by what the event means.
COUNTERS = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "dead",
    "cancelled",
    "requeued",
)
#: Counters that also keep per-second history (rates and sparklines).
RATED = ("enqueued", "succeeded", "failed", "retried", "dead")

# new state -> old state -> counter
_MEANING: dict[str | None, dict[str | None, str]] = {
    S.PENDING: {None: "enqueued", S.RUNNING: "requeued"},
    S.RUNNING: {S.PENDING: "started"},
    S.SUCCESS: {S.RUNNING: "succeeded"},
    S.FAILED: {S.RUNNING: "failed"},
    S.RETRY: {S.FAILED: "retried"},
    S.DEAD: {S.FAILED: "dead", S.RUNNING: "dead", S.PENDING: "dead"},
    S.CANCELLED: {S.PENDING: "cancelled", S.RETRY: "cancelled"},
}


_NONE: dict[str | None, str] = {}

#: Published batches left uncounted before a publisher counts them (readers always
#: count what is left first).
FOLD_AT = 256


class _Series:
    __slots__ = ("counts", "rolling")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.rolling: dict[str, RollingCounter] = {c: RollingCounter() for c in RATED}


class Metrics:
    """Counts what the event stream says happened, per queue and in total.

    Subscribe :meth:`on_batch` to a broker's :class:`~dtq_core.events.EventBus` with
    ``subscribe_batch`` (or :meth:`on_event` with ``subscribe``: the same counts).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, _Series] = {}
        self.extra: dict[str, int] = {}
        # Batches published but not counted yet: appended without the lock (a deque's
        # append is atomic) and counted under it by the next reader, or by the
        # publisher that brings them to FOLD_AT. Every thread publishes two or three
        # single events per task; a lock each was the most contended lock of a busy
        # pool (a holder that loses the GIL holds up every other publisher).
        self._unfolded: deque[tuple[float, Sequence[Sequence[Any]]]] = deque()

    def on_event(self, ev: Event) -> None:
        """Count one event (per queue; totals are summed when read)."""
        name = _MEANING.get(ev.new, _NONE).get(ev.old)
        if name is None:
            return
        self._count(ev.queue, name, 1, ev.ts)

    def on_batch(self, ts: float, transitions: Sequence[Sequence[Any]], worker: str | None) -> None:
        """Count a batch of transitions published at ``ts`` (no lock: see the class doc).

        Subscribed with :meth:`EventBus.subscribe_batch
        <dtq_core.events.EventBus.subscribe_batch>`: no event object is made for it. Each
        transition is ``(task_id, name, queue, old, new, note)``; counts equal those of
        :meth:`on_event` for each. The batch is counted by the next read at the latest
        (the publisher must not change it).
        """
        unfolded = self._unfolded
        unfolded.append((ts, transitions))
        # One publisher folds; the others go on (what they append meanwhile is folded
        # by it, or by the next): waiting for the lock here made every publisher wait
        # for a fold that lost the GIL.
        if len(unfolded) >= FOLD_AT and self._lock.acquire(False):
            try:
                self._fold()
            finally:
                self._lock.release()

    def _fold(self) -> None:
        """Count the batches published since the last fold (lock held).

        Tallied per queue, counter and second first: one update of each counter and
        rolling series per fold, not per transition.
        """
        unfolded = self._unfolded
        meaning = _MEANING
        tally: dict[tuple[str, str, int], int] = {}
        while unfolded:
            ts, transitions = unfolded.popleft()  # only folders pop, one at a time
            second = math.floor(ts)
            for t in transitions:
                name = meaning.get(t[4], _NONE).get(t[3])
                if name is not None:
                    key = (t[2], name, second)
                    tally[key] = tally.get(key, 0) + 1
        queues = self._queues
        for (queue, name, second), n in tally.items():
            q = queues.get(queue)
            if q is None:
                q = queues[queue] = _Series()
            q.counts[name] += n
            rc = q.rolling.get(name)
            if rc is not None:
                rc.add(n, second)

    def _count(self, queue: str, name: str, n: int, ts: float) -> None:
        with self._lock:
            self._add(queue, name, n, ts)

    def _add(self, queue: str, name: str, n: int, ts: float) -> None:
        # Lock held.
        q = self._queues.get(queue)
        if q is None:
            q = self._queues[queue] = _Series()
        q.counts[name] += n
        rc = q.rolling.get(name)
        if rc is not None:
            rc.add(n, ts)

    def incr(self, name: str, n: int = 1) -> None:
        """Bump a counter that no state change expresses (throttled, deduplicated...)."""
        with self._lock:
            self.extra[name] = self.extra.get(name, 0) + n

    def extras(self) -> dict[str, int]:
        """A copy of the counters no state change expresses (taken under the lock)."""
        with self._lock:
            return dict(self.extra)

    def counters(self, queue: str | None = None) -> dict[str, int]:
        """Counter values for one queue, or in total."""
        with self._lock:
            self._fold()
            if queue is not None:
                s = self._queues.get(queue)
                return dict(s.counts) if s is not None else dict.fromkeys(COUNTERS, 0)
            out = dict.fromkeys(COUNTERS, 0)
            for s in self._queues.values():
                for k, v in s.counts.items():
                    out[k] += v
            out.update(self.extra)
            return out

    def rate(self, counter: str, window_s: int, now: float, queue: str | None = None) -> float:
        """Events per second of ``counter`` over the last ``window_s`` seconds."""
        return sum(self.series(counter, now, window_s, queue)) / window_s

    def series(
        self, counter: str, now: float, seconds: int = 60, queue: str | None = None
    ) -> list[int]:
        """Per-second counts, oldest first (sparklines)."""
        with self._lock:
            self._fold()
            picked = (
                list(self._queues.values())
                if queue is None
                else ([self._queues[queue]] if queue in self._queues else [])
            )
            out = [0] * seconds
            for s in picked:
                for i, v in enumerate(s.rolling[counter].series(now, seconds)):
                    out[i] += v
            return out

    def queues(self) -> list[str]:
        """Queues that had events."""
        with self._lock:
            self._fold()
            return sorted(self._queues)


class SharedMetrics:
    """Metrics kept by a shared backend (Redis) for every process, read at one instant.

    Same reading interface as :class:`Metrics`: ``rate``, ``series``, ``counters``.

    Args:
        series: Per queue, per counter, counts for each of the last seconds (oldest first).
        totals: Per queue, per counter, all-time totals.
        extra: Counters kept by this process only (throttled, deduped).
    """

    def __init__(
        self,
        series: dict[str, dict[str, list[int]]],
        totals: dict[str, dict[str, int]],
        extra: dict[str, int],
    ) -> None:
        self._series = series
        self._totals = totals
        self.extra = extra

    def series(
        self, counter: str, now: float, seconds: int = 60, queue: str | None = None
    ) -> list[int]:
        """Per-second counts, oldest first."""
        picked = self._series.values() if queue is None else [self._series.get(queue, {})]
        out = [0] * seconds
        for per in picked:
            vals = per.get(counter, [])[-seconds:]
            for i, v in enumerate(vals, start=seconds - len(vals)):
                out[i] += v
        return out

    def rate(self, counter: str, window_s: int, now: float, queue: str | None = None) -> float:
        """Events per second over the last ``window_s`` seconds."""
        return sum(self.series(counter, now, window_s, queue)) / window_s

    def counters(self, queue: str | None = None) -> dict[str, int]:
        """Totals for one queue, or over all."""
        out = dict.fromkeys(COUNTERS, 0)
        picked = self._totals.values() if queue is None else [self._totals.get(queue, {})]
        for per in picked:
            for k, v in per.items():
                out[k] = out.get(k, 0) + v
        if queue is None:
            out.update(self.extra)
        return out
