"""Read-only views of the in-memory tasks: queues, records, dead letters.

:class:`TaskQueries` reads a :class:`~dtq_core.backends.memory_tasks.TaskTable` under its
owner's lock and returns copies, never the live records. It holds no state of its own.
"""

from __future__ import annotations

import dataclasses
import threading

from dtq_core.backends.base import Outcome, QueueStats
from dtq_core.backends.memory_tasks import TaskTable
from dtq_core.filters import TaskFilter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage, check_cursor, waits
from dtq_core.task import TERMINAL, TaskRecord, TaskState

_SUCCESS = TaskState.SUCCESS
_make = tuple.__new__


class TaskQueries:
    """Queue depths, peeks, record lookups and listings, and dead-letter listings.

    Args:
        tasks: The tasks to read.
        lock: The lock their owner changes them under.
    """

    def __init__(self, tasks: TaskTable, lock: threading.Lock) -> None:
        self._t = tasks
        self._lock = lock

    # -- queues ------------------------------------------------------------------------

    def queue_stats(self) -> list[QueueStats]:
        """Depth figures of every known queue."""
        with self._lock:
            delayed: dict[str, int] = {}
            if len(self._t.delayed) <= 50_000:  # beyond that, count delayed lazily as 0/queue
                for task_id in self._t.delayed:
                    q = self._t.records[task_id].queue
                    delayed[q] = delayed.get(q, 0) + 1
            names = set(self._t.ready) | set(self._t.running) | self._t.paused | set(delayed)
            return [
                QueueStats(
                    name,
                    len(self._t.ready.get(name, ())),
                    delayed.get(name, 0),
                    self._t.running.get(name, 0),
                    name in self._t.paused,
                )
                for name in sorted(names)
            ]

    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ``limit`` ready tasks of ``queue``."""
        with self._lock:
            heap = self._t.ready.get(queue)
            if heap is None:
                return []
            return [self._t.records[i].copy() for i, _ in heap.smallest(limit)]

    def waiting(self, state: TaskState, now: float, limit: int) -> list[TaskRecord]:
        """Delayed PENDING or RETRY tasks, soonest first, from the due-time heap.

        RETRY and delayed PENDING tasks share the heap: it is read in order, a widening
        window at a time, until ``limit`` of ``state`` are found or it is exhausted.
        """
        n = max(limit, 1)
        while True:
            with self._lock:
                due = self._t.delayed.smallest(n)
                recs = [self._t.records[i] for i, _ in due]
                found = [r.copy() for r in recs if waits(r, state, now)]
                size = len(self._t.delayed)
            if len(found) >= limit or n >= size:
                return found[:limit]
            n *= 4

    # -- records -----------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """A copy of the record."""
        with self._lock:
            rec = self._t.records.get(task_id)
            return None if rec is None else rec.copy()

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids starting with ``prefix`` (an exact id alone), from the record index."""
        with self._lock:
            if prefix in self._t.records:
                return [prefix]
            # Copy the keys under the lock (about 1 ms per 100,000); match outside it.
            ids = list(self._t.records)
        return sorted(i for i in ids if i.startswith(prefix))[:limit]

    def get_state(self, task_id: str) -> TaskState | None:
        """Only the state (no copy)."""
        rec = self._t.records.get(task_id)
        return None if rec is None else rec.state

    def outcome(self, task_id: str) -> Outcome | None:
        """State, result and error read together (no copy of the record).

        A success is read without the lock (every result read): its result is set
        before its state, and nothing follows SUCCESS. Any other state is read under
        it: a retried failure passes through FAILED inside one change, which a reader
        must never take for the end. A named tuple from a plain one: no Python call.
        """
        rec = self._t.records.get(task_id)
        if rec is not None and rec.state is _SUCCESS:
            return _make(Outcome, (_SUCCESS, rec.result, rec.error, rec.dead_reason))
        with self._lock:
            rec = self._t.records.get(task_id)
            if rec is None:
                return None
            state = rec.state
            if state not in TERMINAL:
                return _make(Outcome, (state, None, None, None))
            return _make(Outcome, (state, rec.result, rec.error, rec.dead_reason))

    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching ``flt``, newest first."""
        return self.task_page(flt, now, offset=offset, limit=limit).records

    def task_page(
        self,
        flt: TaskFilter,
        now: float,
        sort: str = DEFAULT_SORT,
        descending: bool = True,
        after: Cursor | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """A sorted page of the records matching ``flt``, from the sort index."""
        after = check_cursor(sort, after)
        with self._lock:
            page = self._t.index.page(flt, now, sort, descending, after, offset, max(0, limit))
            return dataclasses.replace(page, records=[r.copy() for r in page.records])

    def count_by_state(self) -> dict[TaskState, int]:
        """Retained records per state."""
        return dict(self._t.counts)

    # -- dead letters ------------------------------------------------------------------

    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching ``flt``, newest first."""
        with self._lock:
            recs = [self._t.records[i] for i in reversed(self._t.dead)]
        return self._page(recs, flt, now, offset, limit)

    def _page(
        self, recs: list[TaskRecord], flt: TaskFilter, now: float, offset: int, limit: int
    ) -> list[TaskRecord]:
        # Match and copy under the lock, a chunk at a time: a record is never seen half
        # updated, and the engine is never held for a whole scan.
        out: list[TaskRecord] = []
        skip = offset
        for start in range(0, len(recs), 512):
            with self._lock:
                for r in recs[start : start + 512]:
                    if not flt.matches(r, now):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    out.append(r.copy())
                    if len(out) >= limit:
                        return out
        return out

    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match."""
        if flt is None or flt.is_empty():
            return len(self._t.dead)
        with self._lock:
            recs = [self._t.records[i] for i in self._t.dead]
        return sum(1 for r in recs if flt.matches(r, now))
