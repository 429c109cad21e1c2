"""Sorted task pages on Redis: a sorted set per queue, merged by the client.

Every queue keeps ``{prefix:queue}:all``, its task ids scored by ``enqueued_at``: the
script that creates a record adds it, the scripts that delete one remove it, so it
never leaves the queue's slot. Redis orders equal scores by member, so the set is
already in ``(enqueued_at, id)`` order, the default listing's: a page reads each chosen
queue's set from the cursor on, a batch at a time, fetches the records in one pipeline,
checks the filter in the client and merges the queues (fan-out: no script spans two).

The reads are bounded (:data:`SCAN_BUDGET` records per call); a filter that matches few
of them returns a short page with a cursor to go on from and a total that is a lower
bound. Totals of filters on queue and state alone come from the per-queue state counts.
Sorting by another key (id, name, queue, state) reads every record of the chosen queues
and is refused past :data:`SORT_SCAN_LIMIT` records, with the way out named.

Queues written by versions without the set are indexed on first read (a scan of their
record keys); an id whose record has gone is dropped from the set when read.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator
from typing import Any

from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.records import _record, _s
from dtq_core.errors import ConfigError
from dtq_core.filters import TaskFilter
from dtq_core.paging import (
    DEFAULT_SORT,
    Cursor,
    TaskPage,
    check_cursor,
    cursor_of,
    page_of,
)
from dtq_core.task import TaskRecord, TaskState

#: Records one page call may fetch to check a filter (round trips of :data:`BATCH`).
SCAN_BUDGET = 10_000
#: Ids read from a queue's set per round trip.
BATCH = 250
#: Most records a sort other than ``enqueued`` may read (it reads them all).
SORT_SCAN_LIMIT = 50_000


class _Walk:
    __slots__ = ("budgeted", "frontiers", "spent")

    def __init__(self, budgeted: bool) -> None:
        self.budgeted = budgeted
        self.spent = 0
        self.frontiers: list[Cursor] = []


def _after(key: tuple[float, str], after: Cursor | None, descending: bool) -> bool:
    if after is None:
        return True
    cur = (float(after[0]), after[1])
    return key < cur if descending else key > cur


class PageMixin(RedisClient):
    """``task_page`` for :class:`~dtq_core.backends.redis.backend.RedisBackend`."""

    _listed: set[str]

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
        """A page of the records matching ``flt``, ordered by ``(sort value, id)``."""
        after = check_cursor(sort, after)
        limit = max(0, limit)
        queues = [flt.queue] if flt.queue else self._known_queues(fresh=True)
        self._index_queues(queues)
        if sort != DEFAULT_SORT:
            return self._sorted_by_scan(queues, flt, now, sort, descending, after, offset, limit)
        exact_total = self._counted_total(queues, flt)
        walk = _Walk(budgeted=True)
        streams = [self._stream(q, flt, now, descending, after, walk) for q in queues]
        need = offset + limit + 1
        out: list[TaskRecord] = []
        for rec in heapq.merge(*streams, key=lambda r: (r.enqueued_at, r.id), reverse=descending):
            out.append(rec)
            if len(out) >= need:
                break
        nxt: Cursor | None = None
        if walk.frontiers:
            reached = max(walk.frontiers) if descending else min(walk.frontiers)
            out = [r for r in out if not _after((r.enqueued_at, r.id), reached, descending)]
            if len(out) <= offset + limit:
                nxt = reached
        rows = out[offset : offset + limit]
        if nxt is None and rows and len(out) > offset + limit:
            nxt = cursor_of(rows[-1], sort)
        if exact_total is not None:
            total, exact = exact_total, True
        elif walk.frontiers:
            total, exact = len(out), False
        else:
            total, exact = self._scanned_total(queues, flt, now, SCAN_BUDGET - walk.spent)
            total = max(total, len(out))  # a bound never below what the page shows
        return TaskPage(rows, total, exact, nxt, sort, descending)

    # -- the per-queue sets ------------------------------------------------------------

    def _index_queues(self, queues: list[str]) -> None:
        """Index queues whose set misses records (written before the set existed)."""
        todo = [q for q in queues if q not in self._listed]
        if not todo:
            return

        def sizes() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in todo:
                k = self.keys.queue(q)
                pipe.zcard(k["all"])
                pipe.hvals(k["counts"])
            return pipe.execute()

        got = self._call(sizes)
        for i, q in enumerate(todo):
            held, counts = got[2 * i], got[2 * i + 1]
            if held < sum(int(_s(c)) for c in counts):
                self._backfill(q)
            self._listed.add(q)

    def _backfill(self, queue: str) -> None:
        k = self.keys.queue(queue)
        ids = self._record_ids(queue)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]

            def run(part: list[str] = part) -> Any:
                pipe = self.r.pipeline(transaction=False)
                for tid in part:
                    pipe.hget(self.keys.record(queue, tid), "enqueued_at")
                # A key that is not a hash (written by hand) is passed over, not fatal.
                return pipe.execute(raise_on_error=False)

            got = zip(part, self._call(run), strict=True)
            pairs: dict[str, float] = {}
            for tid, at in got:
                try:
                    pairs[tid] = float(_s(at))
                except (TypeError, ValueError):
                    continue  # not a hash, or no time: the sweep deals with it
            if pairs:
                self._call(functools.partial(self.r.zadd, k["all"], pairs, nx=True))

    def _stream(
        self,
        queue: str,
        flt: TaskFilter,
        now: float,
        descending: bool,
        after: Cursor | None,
        walk: _Walk,
    ) -> Iterator[TaskRecord]:
        """Matching records of one queue in ``(enqueued_at, id)`` order after ``after``."""
        key = self.keys.queue(queue)["all"]
        edge = "+inf" if descending else "-inf"
        bound: str = edge if after is None else repr(float(after[0]))
        skip = 0  # entries at the bound's score already read
        last: Cursor | None = None
        while True:
            if last is not None and walk.budgeted and walk.spent >= SCAN_BUDGET:
                walk.frontiers.append(last)
                return

            def read(bound: str = bound, skip: int = skip) -> Any:
                if descending:
                    return self.r.zrevrangebyscore(
                        key, bound, "-inf", start=skip, num=BATCH, withscores=True
                    )
                return self.r.zrangebyscore(
                    key, bound, "+inf", start=skip, num=BATCH, withscores=True
                )

            rows = [(float(sc), _s(m)) for m, sc in self._call(read)]
            if not rows:
                return
            tail = rows[-1][0]
            if bound != edge and tail == float(bound):
                skip += len(rows)  # all at the bound's score: read further along it
            else:
                bound, skip = repr(tail), sum(1 for sc, _ in rows if sc == tail)
            fresh = [(sc, i) for sc, i in rows if _after((sc, i), after, descending)]
            walk.spent += len(fresh)
            if fresh:  # a frontier past the cursor: a cut page still moves on
                last = fresh[-1]
            for rec in self._fetch(queue, [i for _, i in fresh]):
                if flt.matches(rec, now):
                    yield rec
            if len(rows) < BATCH:
                return

    def _fetch(self, queue: str, ids: list[str]) -> list[TaskRecord]:
        """Records by id, in order; ids whose record is gone leave the set."""
        if not ids:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.record(queue, i))
            return pipe.execute()

        hashes = self._call(run)
        gone = [i for i, h in zip(ids, hashes, strict=True) if not h]
        if gone:
            self._call(lambda: self.r.zrem(self.keys.queue(queue)["all"], *gone))
        return [_record(h, i, queue) for i, h in zip(ids, hashes, strict=True) if h]

    # -- totals ------------------------------------------------------------------------

    def _counted_total(self, queues: list[str], flt: TaskFilter) -> int | None:
        """The total from the per-queue state counts, when the filter has only those."""
        if flt != TaskFilter(queue=flt.queue, states=flt.states):
            return None
        states = [s.value for s in (flt.states or TaskState)]

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in queues:
                pipe.hmget(self.keys.queue(q)["counts"], states)
            return pipe.execute()

        return sum(int(_s(v) or 0) for row in self._call(run) for v in row) if queues else 0

    def _scanned_total(
        self, queues: list[str], flt: TaskFilter, now: float, budget: int
    ) -> tuple[int, bool]:
        n = seen = 0
        for q in queues:
            key = self.keys.queue(q)["all"]
            start = 0
            while True:
                if seen >= budget:
                    return n, False
                stop = start + BATCH * 4 - 1
                got = self._call(functools.partial(self.r.zrange, key, start, stop))
                ids = [_s(i) for i in got]
                if not ids:
                    break
                seen += len(ids)
                n += sum(1 for r in self._fetch(q, ids) if flt.matches(r, now))
                start += len(ids)
        return n, True

    # -- other sort keys ---------------------------------------------------------------

    def _sorted_by_scan(
        self,
        queues: list[str],
        flt: TaskFilter,
        now: float,
        sort: str,
        descending: bool,
        after: Cursor | None,
        offset: int,
        limit: int,
    ) -> TaskPage:
        def sizes() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in queues:
                pipe.zcard(self.keys.queue(q)["all"])
            return pipe.execute()

        held = sum(self._call(sizes)) if queues else 0
        if held > SORT_SCAN_LIMIT:
            raise ConfigError(
                f"sorting {held:,} tasks by {sort} on Redis would read every one of them: "
                "sort by enqueued, or narrow the list with queue:NAME"
            )
        matches: list[TaskRecord] = []
        for q in queues:
            key = self.keys.queue(q)["all"]
            ids = [_s(i) for i in self._call(functools.partial(self.r.zrange, key, 0, -1))]
            for i in range(0, len(ids), 500):
                matches += [r for r in self._fetch(q, ids[i : i + 500]) if flt.matches(r, now)]
        return page_of(matches, sort, descending, after, offset, limit)
