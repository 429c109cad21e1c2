"""The sort index of the in-memory state: sorted, filtered task pages without a full scan.

Tasks are grouped by ``(queue, name)``, the two fields a filter names most and that
never change. Each group keeps its ids in two orders, by id and by ``(enqueued_at,
id)`` (:class:`~dtq_core.ordered_ids.OrderedIds`, about a pointer per id per order),
and a count per state. While the two orders agree (one producer's ids grow with time)
they are one list read both ways, so an enqueue inserts its id once. Nothing in the
index moves when a task changes state, except two counters: claims and acks stay as
cheap as before.

A query picks the groups its ``queue:``/``task:`` terms name, then:

- sorted by ``enqueued`` or ``id``: merges the groups' lists in that order;
- sorted by ``queue``, ``name`` or ``state``: walks the values in order (states with no
  task in the chosen groups are skipped by their counters), each value's tasks by id;
- ``id:PREFIX``: reads the prefix's range of each group's id list and sorts that.

Rows are checked against the state and the terms no index answers (``exc``, ``reason``,
``since``, text) a block at a time. The total comes from the counters when the filter
has no such terms; otherwise from a scan bounded by :data:`SCAN_BUDGET` rows, past which
it is a lower bound. The walk for a page has the same bound, so a search that matches
almost nothing cannot hold the engine's lock for seconds: such a page ends early with a
cursor to go on from.

The index is part of the state, never logged: the embedded store rebuilds it from the
records when it loads a checkpoint (:meth:`TaskIndex.rebuild`), and once after log
replay (upkeep is suspended while the records replay: one sort beats a million inserts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dtq_core.backends.memory_walk import MAX_CHAR, Group, Walk, before, count_ids, walk_ids
from dtq_core.filters import TaskFilter
from dtq_core.ordered_ids import OrderedIds
from dtq_core.paging import (
    Cursor,
    TaskPage,
    check_sort,
    cursor_of,
    filter_without_index_terms,
    page_of,
)
from dtq_core.task import TaskRecord, TaskState

#: Rows a query may examine against terms no index answers (text, errors, time, an id
#: prefix shared by many), for its page and its total together: about 0.1 s.
SCAN_BUDGET = 25_000

#: Candidates few enough to sort outright rather than walk an index in order.
FEW = 20_000
_ALL_STATES = frozenset(TaskState)


def _in_order(ids: list[str], key: Callable[[str], Any] | None = None) -> bool:
    """Whether ``ids`` are sorted (by ``key``): one pass, no list of keys or copy."""
    it: Iterator[Any] = iter(ids) if key is None else map(key, ids)
    last: Any = next(it, None)
    for k in it:
        if k < last:
            return False
        last = k
    return True


class TaskIndex:
    """The sort and filter index over ``records`` (the backend's dict, by task id).

    Every method is called with the backend lock held.
    """

    __slots__ = ("_enq_key", "_groups", "_members", "_records", "_suspended")

    def __init__(
        self,
        records: dict[str, TaskRecord],
        members: Callable[[TaskState], Iterable[str]] | None = None,
    ) -> None:
        self._records = records
        #: Ids that may be in a state (a superset is fine), from the backend's own
        #: structures: lets a filter on a rare state skip the walk.
        self._members = members
        self._groups: dict[tuple[str, str], Group] = {}
        self._suspended = False

        def enq_key(task_id: str) -> tuple[float, str]:
            return (records[task_id].enqueued_at, task_id)

        self._enq_key = enq_key

    # -- upkeep ------------------------------------------------------------------------

    def suspend(self) -> None:
        """Stop upkeep for a burst of changes (log replay); :meth:`rebuild` ends it."""
        self._suspended = True

    def add(self, rec: TaskRecord) -> None:
        """A new record (already in ``records``)."""
        if self._suspended:
            return
        g = self._groups.get((rec.queue, rec.name))
        if g is None:
            g = self._groups[(rec.queue, rec.name)] = Group(
                rec.queue, rec.name, OrderedIds(self._enq_key)
            )
        g.counts[rec.state] += 1
        task_id = rec.id
        if g.shared:
            by_enq = g.by_enq
            last = by_enq.last()
            if last is None or (
                task_id > last and self._records[last].enqueued_at <= rec.enqueued_at
            ):
                # Last in both orders: one list still holds both.
                by_enq.append(task_id, (rec.enqueued_at, task_id))
                return
            g.split()
        g.by_enq.add(task_id)
        g.by_id.add(task_id)

    def discard(self, rec: TaskRecord) -> None:
        """A record about to leave ``records`` (its key is still readable)."""
        if self._suspended:
            return
        g = self._groups[(rec.queue, rec.name)]
        g.by_enq.remove(rec.id)
        if not g.shared:
            g.by_id.remove(rec.id)
        g.counts[rec.state] -= 1
        if not len(g.by_id):
            del self._groups[(rec.queue, rec.name)]

    def moved(self, rec: TaskRecord, old: TaskState) -> None:
        """``rec`` went from ``old`` to its current state."""
        if self._suspended:
            return
        counts = self._groups[(rec.queue, rec.name)].counts
        counts[old] -= 1
        counts[rec.state] += 1

    def rebuild(self) -> None:
        """Index every record from scratch (after a checkpoint was loaded).

        One pass over the records, collecting each group's ids in the order they were
        written, which is nearly always their ``(enqueued_at, id)`` order already: one
        check confirms it, and only a group that is not is sorted. No pair is built per
        record (a million short-lived tuples left their memory to the allocator). Ends
        a :meth:`suspend`.
        """
        self._suspended = False
        found: dict[tuple[str, str], tuple[list[str], dict[TaskState, int]]] = {}
        for rec in self._records.values():
            entry = found.get((rec.queue, rec.name))
            if entry is None:
                entry = found[(rec.queue, rec.name)] = ([], dict.fromkeys(TaskState, 0))
            entry[0].append(rec.id)
            entry[1][rec.state] += 1
        groups: dict[tuple[str, str], Group] = {}
        key = self._enq_key
        for (queue, name), (by_enq, counts) in found.items():
            if not _in_order(by_enq, key):
                by_enq.sort(key=key)
            by_id = None if _in_order(by_enq) else OrderedIds.from_sorted(sorted(by_enq))
            g = groups[(queue, name)] = Group(
                queue, name, OrderedIds.from_sorted(by_enq, key), by_id
            )
            g.counts = counts
        self._groups = groups

    def nbytes(self) -> int:
        """Bytes the index holds beyond the records (for the memory figures)."""
        import sys

        total = sys.getsizeof(self._groups)
        for g in self._groups.values():
            for lst in (g.by_enq,) if g.shared else (g.by_enq, g.by_id):
                total += sys.getsizeof(lst._blocks) + sys.getsizeof(lst._maxes)
                total += sum(sys.getsizeof(b) for b in lst._blocks)
                if lst._key is not None:
                    total += sum(sys.getsizeof(m) for m in lst._maxes)
            total += sys.getsizeof(g.counts) + 200
        return total

    # -- queries -----------------------------------------------------------------------

    def page(
        self,
        flt: TaskFilter,
        now: float,
        sort: str,
        descending: bool,
        after: Cursor | None,
        offset: int,
        limit: int,
    ) -> TaskPage:
        """A page of live records (the caller copies them before letting go of the lock)."""
        check_sort(sort)
        groups = [
            g
            for (q, n), g in self._groups.items()
            if (flt.queue is None or q == flt.queue) and (flt.task is None or n == flt.task)
        ]
        states = flt.states or _ALL_STATES
        groups = [g for g in groups if g.count(states)]
        rest = filter_without_index_terms(flt)
        residual = None if rest.is_empty() else rest
        prefix = flt.id_prefix
        keep = self._keeper(states, residual, prefix, now)
        recs = self._records
        few = self._candidates(groups, states, prefix)
        if few is not None:
            matches = (recs[i] for i in keep(few))
            return page_of(matches, sort, descending, after, offset, limit)
        need = offset + limit + 1
        out: list[str] = []
        walk = Walk(residual is not None or prefix is not None, SCAN_BUDGET)
        for task_id in walk_ids(
            recs, self._enq_key, groups, states, keep, sort, descending, after, walk
        ):
            out.append(task_id)
            if len(out) >= need:
                break
        nxt: Cursor | None = None
        if walk.frontiers:
            # Every stream was read up to ``reached``, no further: rows past it may be
            # out of order. Keep those before it; the next page starts after it.
            reached = max(walk.frontiers) if descending else min(walk.frontiers)
            out = [i for i in out if before(cursor_of(recs[i], sort), reached, descending)]
            if len(out) <= offset + limit:
                nxt = reached
        rows = out[offset : offset + limit]
        if nxt is None and rows and len(out) > offset + limit:
            nxt = cursor_of(recs[rows[-1]], sort)
        if residual is None and prefix is None:
            total, exact = sum(g.count(states) for g in groups), True
        elif residual is None and prefix is not None and states == _ALL_STATES:
            hi = prefix + MAX_CHAR
            total, exact = sum(g.by_id.count_between(prefix, hi) for g in groups), True
        elif walk.frontiers:  # the budget is spent: what the walk saw is all we know
            total, exact = len(out), False
        else:
            total, exact = count_ids(groups, keep, prefix, SCAN_BUDGET - walk.spent)
            total = max(total, len(out))  # a bound never below what the page shows
        return TaskPage([recs[i] for i in rows], total, exact, nxt, sort, descending)

    def _candidates(
        self,
        groups: list[Group],
        states: frozenset[TaskState],
        prefix: str | None,
    ) -> list[str] | None:
        """All ids that may match, when there are few of them; else ``None`` (walk).

        Few: an id prefix's range, or states few tasks are in (read from the backend's
        own per-state structures, e.g. its leases for RUNNING).
        """
        if prefix is not None:
            hi = prefix + MAX_CHAR
            if sum(g.by_id.count_between(prefix, hi) for g in groups) > FEW:
                return None
            return [i for g in groups for i in g.by_id.between(prefix, hi)]
        if states == _ALL_STATES or self._members is None:
            return None
        everywhere = sum(g.count(states) for g in self._groups.values())
        if everywhere > FEW:
            return None
        recs = self._records
        chosen = {(g.queue, g.name) for g in groups}
        found = {
            i
            for s in states
            for i in self._members(s)
            if (r := recs.get(i)) is not None and r.state in states and (r.queue, r.name) in chosen
        }
        if len(found) != sum(g.count(states) for g in groups):
            return None  # a structure that missed some: the walk is always right
        return list(found)

    def _keeper(
        self,
        states: frozenset[TaskState],
        residual: TaskFilter | None,
        prefix: str | None,
        now: float,
    ) -> Callable[[list[str]], list[str]]:
        recs = self._records
        p = prefix or ""
        if residual is not None:
            match = residual.matches
            return lambda ids: [
                i
                for i in ids
                if i.startswith(p) and (r := recs[i]).state in states and match(r, now)
            ]
        if prefix is not None:
            return lambda ids: [i for i in ids if i.startswith(p) and recs[i].state in states]
        if states != _ALL_STATES:
            return lambda ids: [i for i in ids if recs[i].state in states]
        return lambda ids: ids
