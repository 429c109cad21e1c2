"""Read-only views of the Redis backend: queue depths, task records and dead letters."""

from __future__ import annotations

import functools
from typing import Any

from dtq_core.backends.base import QueueStats
from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.keys import glob_escape
from dtq_core.backends.redis.records import _record, _s
from dtq_core.errors import BackendError
from dtq_core.filters import TaskFilter
from dtq_core.paging import soonest
from dtq_core.task import TaskRecord, TaskState


class QueryMixin(RedisClient):
    """Queue depths, peeks, record lookups, listings and counts, and dead-letter listings.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`. Listings scan, so
    they are for operators, not hot paths.
    """

    # -- queues ------------------------------------------------------------------------

    def queue_stats(self) -> list[QueueStats]:
        """Depths of every known queue (one pipeline)."""
        names = self._known_queues(fresh=True)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                k = self.keys.queue(q)
                pipe.zcard(k["ready"])
                pipe.zcard(k["delayed"])
                pipe.zcard(k["leases"])
                pipe.exists(k["paused"])
            return pipe.execute()

        vals = self._call(run) if names else []
        return [
            QueueStats(q, vals[i * 4], vals[i * 4 + 1], vals[i * 4 + 2], bool(vals[i * 4 + 3]))
            for i, q in enumerate(names)
        ]

    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ``limit`` ready tasks of ``queue``."""
        if limit <= 0:
            return []
        ids = self._call(lambda: self.r.zrange(self.keys.queue(queue)["ready"], 0, limit - 1))
        return self._records(queue, [_s(i) for i in ids])

    def waiting(self, state: TaskState, now: float, limit: int = 100) -> list[TaskRecord]:
        """Delayed PENDING or RETRY tasks, soonest first, from each queue's due-time set.

        The queues' ``delayed`` sets (RETRY and delayed PENDING together, by due time)
        are read in order, a widening window at a time. What was read is complete up to
        the earliest due time a full window stopped at (later tasks of that queue were
        not read yet): the answer is taken from before it.
        """
        names = self._known_queues(fresh=True)
        window = max(limit, 1)
        while names:

            def run(n: int = window) -> Any:
                pipe = self.r.pipeline(transaction=False)
                for q in names:
                    pipe.zrange(self.keys.queue(q)["delayed"], 0, n - 1, withscores=True)
                return pipe.execute()

            heads = self._call(run)
            cut = min((ids[-1][1] for ids in heads if len(ids) >= window), default=None)
            found = [
                r
                for q, ids in zip(names, heads, strict=True)
                for r in self._records(q, [_s(i) for i, _ in ids])
            ]
            out = soonest(found, state, now, limit)
            if cut is None:
                return out
            out = [r for r in out if (r.eta or 0.0) <= cut]
            if len(out) >= limit:
                return out
            window *= 4
        return []

    # -- records -----------------------------------------------------------------------

    def _records(self, queue: str, ids: list[str]) -> list[TaskRecord]:
        if not ids:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.record(queue, i))
            # A key that is not a hash (written by hand) answers WRONGTYPE: skipped.
            return pipe.execute(raise_on_error=False)

        return [
            _record(h, i, queue)
            for i, h in zip(ids, self._call(run), strict=True)
            if h and isinstance(h, dict)
        ]

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of a task (two round trips: index, then record)."""
        q = self._q(task_id)
        if q is None:
            return None
        recs = self._records(q, [task_id])
        return recs[0] if recs else None

    #: Ids a prefix lookup reads at most, over every queue (ZSCAN pages of 1,000).
    FIND_SCAN_LIMIT = 500_000

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids starting with ``prefix`` (an exact id alone).

        An exact id is one GET of its owner key. A prefix is a ``ZSCAN`` with MATCH of
        every queue's listing set (``{prefix:queue}:all``, in the queue's slot), pages of
        1,000 fanned out over the queues in one pipeline per page; it stops once
        ``limit`` + 1 ids are found (ambiguous anyway) and refuses past
        :attr:`FIND_SCAN_LIMIT` ids rather than call a prefix unique that it did not
        check everywhere.

        Raises:
            BackendError: More than :attr:`FIND_SCAN_LIMIT` ids to look through.
        """
        if self._q(prefix) is not None:
            return [prefix]
        pattern = glob_escape(prefix) + "*"
        cursors: dict[str, int] = dict.fromkeys(self._known_queues(fresh=True), 0)
        found: set[str] = set()
        read = 0
        while cursors and len(found) <= limit:
            names = list(cursors)

            def page(names: list[str] = names) -> Any:
                pipe = self.r.pipeline(transaction=False)
                for q in names:
                    pipe.zscan(self.keys.queue(q)["all"], cursors[q], match=pattern, count=1000)
                return pipe.execute()

            for q, (cursor, rows) in zip(names, self._call(page), strict=True):
                found.update(_s(member) for member, _ in rows)
                if cursor:
                    cursors[q] = cursor
                else:
                    del cursors[q]
            read += 1000 * len(names)
            if cursors and read >= self.FIND_SCAN_LIMIT and len(found) <= limit:
                raise BackendError(
                    f"more than {self.FIND_SCAN_LIMIT:,} task ids to search for {prefix!r}: "
                    "give more of the id"
                )
        return sorted(found)[:limit]

    def get_state(self, task_id: str) -> TaskState | None:
        """Only the state."""
        q = self._q(task_id)
        if q is None:
            return None
        try:
            st = self._call(lambda: self.r.hget(self.keys.record(q, task_id), "state"))
            return TaskState(_s(st)) if st is not None else None
        except (BackendError, ValueError):
            # Not a hash, or no task state in it (written by hand): as its full read.
            rec = self.get(task_id)
            return None if rec is None else rec.state

    def _scan_records(
        self, flt: TaskFilter, now: float, offset: int, limit: int, dead_only: bool
    ) -> list[TaskRecord]:
        names = [flt.queue] if flt.queue else self._known_queues(fresh=True)
        found: list[TaskRecord] = []
        want = offset + limit
        for q in names:
            if dead_only:
                ids = [
                    _s(i)
                    for i in self._call(
                        functools.partial(self.r.zrevrange, self.keys.queue(q)["dead"], 0, -1)
                    )
                ]
            else:
                ids = self._record_ids(q)
            for i in range(0, len(ids), 500):
                for rec in self._records(q, ids[i : i + 500]):
                    if flt.matches(rec, now):
                        found.append(rec)
        found.sort(key=lambda r: r.finished_at or r.enqueued_at, reverse=True)
        return found[offset:want]

    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching ``flt``, newest first (scans; for operators, not hot paths)."""
        return self._scan_records(flt, now, offset, limit, dead_only=False)

    def count_by_state(self) -> dict[TaskState, int]:
        """Counts per state, summed over queues (one pipeline)."""
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.hgetall(self.keys.queue(q)["counts"])
            return pipe.execute()

        out = dict.fromkeys(TaskState, 0)
        for h in self._call(run) if names else []:
            for k, v in h.items():
                out[TaskState(_s(k))] += int(v)
        return out

    # -- dead letters ------------------------------------------------------------------

    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching ``flt``, newest first."""
        return self._scan_records(flt, now, offset, limit, dead_only=True)

    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match."""
        if flt is None or flt.is_empty():
            names = self._known_queues()

            def run() -> Any:
                pipe = self.r.pipeline(transaction=False)
                for q in names:
                    pipe.zcard(self.keys.queue(q)["dead"])
                return pipe.execute()

            return sum(self._call(run)) if names else 0
        return len(self._scan_records(flt, now, 0, 10**9, dead_only=True))
