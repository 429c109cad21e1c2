"""The walks of the task index: a page's ids streamed in sort order, under a budget.

Helpers of :class:`~dtq_core.backends.memory_index.TaskIndex` (see its module for the
design): the per-``(queue, name)`` :class:`Group` of ids and counts, and the functions
that merge groups' streams in ``(sort value, id)`` order or count matches, each spending
from one :class:`Walk`'s budget.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from dtq_core.ordered_ids import OrderedIds
from dtq_core.paging import Cursor, cursor_of
from dtq_core.task import TaskRecord, TaskState

MAX_CHAR = "\U0010ffff"


class Walk:
    """What a walk for one page has spent, and where the streams it cut short stopped."""

    __slots__ = ("budget", "budgeted", "frontiers", "spent")

    def __init__(self, budgeted: bool, budget: int) -> None:
        # A filter that only checks states is cheap enough (well under 0.1 s per million
        # rows) to walk to the end; the budget is for the terms no index answers.
        self.budgeted = budgeted
        #: Rows the walk may examine (``SCAN_BUDGET`` of the index module).
        self.budget = budget
        self.spent = 0
        #: ``(sort value, id)`` of the last row examined by each stream cut short.
        self.frontiers: list[Cursor] = []


class Group:
    """The tasks of one ``(queue, name)``: two orders and counts per state.

    While the two orders agree (the ids of one producer grow with their enqueue
    times), ``by_id`` is a view of ``by_enq`` (:meth:`OrderedIds.by_id`) and each id is
    kept once; the first id that would break the agreement splits them
    (:meth:`split`).

    Args:
        by_id: The id order, or ``None``: the same as ``by_enq`` (``shared``).
    """

    __slots__ = ("by_enq", "by_id", "counts", "name", "queue", "shared")

    def __init__(
        self, queue: str, name: str, by_enq: OrderedIds, by_id: OrderedIds | None = None
    ) -> None:
        self.queue = queue
        self.name = name
        self.by_enq = by_enq
        #: ``by_id`` is a view of ``by_enq`` (the orders agree); changes go to ``by_enq``.
        self.shared = by_id is None
        self.by_id = by_enq.by_id() if by_id is None else by_id
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)

    def split(self) -> None:
        """Keep the id order in a list of its own (the orders are about to differ)."""
        if self.shared:
            self.by_id = OrderedIds.from_sorted(list(self.by_enq))
            self.shared = False

    def count(self, states: frozenset[TaskState]) -> int:
        """Tasks of the group in any of ``states``."""
        return sum(self.counts[s] for s in states)


def stream(
    lst: OrderedIds,
    after: Any,
    descending: bool,
    keep: Callable[[list[str]], list[str]],
    walk: Walk,
    frontier: Callable[[str], Cursor],
) -> Iterator[str]:
    """``lst``'s ids after ``after`` through ``keep``, a chunk at a time, within budget."""
    last: str | None = None
    for chunk in lst.chunks(after, descending):
        if last is not None and walk.budgeted and walk.spent > walk.budget:
            walk.frontiers.append(frontier(last))
            return
        walk.spent += len(chunk)
        last = chunk[-1] if chunk else last
        yield from keep(chunk)


def walk_ids(
    recs: dict[str, TaskRecord],
    enq_key: Callable[[str], tuple[float, str]],
    groups: list[Group],
    states: frozenset[TaskState],
    keep: Callable[[list[str]], list[str]],
    sort: str,
    descending: bool,
    after: Cursor | None,
    walk: Walk,
) -> Iterator[str]:
    """Matching ids in ``(sort value, id)`` order, strictly after ``after``.

    Stops after the first segment in which the budget ran out (``walk.frontiers``).
    """
    if sort in ("enqueued", "id"):
        start: Any = None
        mkey: Callable[[str], Any] | None = None
        if sort == "enqueued":
            start = None if after is None else (float(after[0]), after[1])
            lists = [g.by_enq for g in groups]
            mkey = enq_key
        else:
            start = None if after is None else after[1]
            lists = [g.by_id for g in groups]

        def frontier(i: str) -> Cursor:
            return cursor_of(recs[i], sort)

        streams = [stream(lst, start, descending, keep, walk, frontier) for lst in lists]
        yield from heapq.merge(*streams, key=mkey, reverse=descending)
        return
    segments: list[tuple[str, list[Group], Callable[[list[str]], list[str]]]] = []
    if sort == "state":
        for s in sorted(states, key=lambda s: s.value, reverse=descending):
            members = [g for g in groups if g.counts[s]]
            if members:
                segments.append((s.value, members, narrow(keep, recs, s)))
    else:
        by_value: dict[str, list[Group]] = {}
        for g in groups:
            by_value.setdefault(g.queue if sort == "queue" else g.name, []).append(g)
        for v in sorted(by_value, reverse=descending):
            segments.append((v, by_value[v], keep))
    for value, members, seg_keep in segments:
        start_id: str | None = None
        if after is not None:
            cv = str(after[0])
            if (value < cv) if not descending else (value > cv):
                continue
            if value == cv:
                start_id = after[1]

        def seg_frontier(i: str, value: str = value) -> Cursor:
            return (value, i)

        streams = [
            stream(g.by_id, start_id, descending, seg_keep, walk, seg_frontier) for g in members
        ]
        yield from heapq.merge(*streams, reverse=descending)
        if walk.frontiers:
            return


def count_ids(
    groups: list[Group],
    keep: Callable[[list[str]], list[str]],
    prefix: str | None,
    budget: int,
) -> tuple[int, bool]:
    """Matches in ``groups`` (and whether the count is exact: the budget held)."""
    n = seen = 0
    for g in groups:
        if prefix is not None:
            ids = g.by_id.between(prefix, prefix + MAX_CHAR)
            parts = [ids[i : i + 1000] for i in range(0, len(ids), 1000)]
        else:
            parts = list(g.by_id.chunks())
        for chunk in parts:
            if seen >= budget:
                return n, False
            seen += len(chunk)
            n += len(keep(chunk))
    return n, True


def before(key: Cursor, reached: Cursor, descending: bool) -> bool:
    """Whether ``key`` is at or before ``reached`` in the walk's direction."""
    return key >= reached if descending else key <= reached


def narrow(
    keep: Callable[[list[str]], list[str]], recs: dict[str, TaskRecord], state: TaskState
) -> Callable[[list[str]], list[str]]:
    """``keep`` restricted to one state (the segments of a sort by state)."""
    return lambda ids: [i for i in keep(ids) if recs[i].state is state]
