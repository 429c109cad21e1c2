"""Sorted, keyset-paged task listings: sort keys, cursors and the page a query returns.

A listing is ordered by ``(sort value, task id)``: ties are broken by id, so the order
is total and a page can be continued from its last row. The cursor of the next page is
that row's ``(sort value, id)``; a page fetched with it starts strictly after it, so
tasks that arrive between two fetches never shift rows from one page into the next (a
new task either sorts before the cursor and is not on later pages, or after it and
appears in order).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dtq_core.errors import ConfigError
from dtq_core.filters import TaskFilter
from dtq_core.task import TaskRecord, TaskState

#: The sort value of a record per sort key. Only immutable fields, and the state: an
#: index keyed on them is never touched by a claim or an ack (see memory_index).
SORT_KEYS: dict[str, Callable[[TaskRecord], float | str]] = {
    "enqueued": lambda r: r.enqueued_at,
    "id": lambda r: r.id,
    "name": lambda r: r.name,
    "queue": lambda r: r.queue,
    "state": lambda r: r.state.value,
}
#: The order of a listing that names none: newest first.
DEFAULT_SORT = "enqueued"

#: A keyset cursor: the ``(sort value, id)`` of the last row already shown.
Cursor = tuple[float | str, str]


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a sorted task listing.

    Attributes:
        records: The rows, in order.
        total: How many tasks match the filter in all (a lower bound when
            ``total_exact`` is false: a filter on text, errors or time was counted by a
            scan that stopped at its budget).
        total_exact: Whether ``total`` is the exact count.
        next_after: The cursor of the next page, or ``None`` when this is the last.
        sort: The sort key used.
        descending: The direction used.
    """

    records: list[TaskRecord] = field(default_factory=list)
    total: int = 0
    total_exact: bool = True
    next_after: Cursor | None = None
    sort: str = DEFAULT_SORT
    descending: bool = True


def check_sort(sort: str) -> str:
    """``sort`` if it names a sort key.

    Raises:
        ConfigError: Naming the key and the keys there are.
    """
    if sort not in SORT_KEYS:
        raise ConfigError(f"cannot sort by {sort!r}: use one of {', '.join(SORT_KEYS)}")
    return sort


def check_cursor(sort: str, after: Cursor | list[object] | None) -> Cursor | None:
    """A cursor of the right shape for ``sort`` (one from the wire arrives as a list).

    Raises:
        ConfigError: A cursor that is not ``(value, id)`` with a value of the sort's type.
    """
    check_sort(sort)
    if after is None:
        return None
    if len(after) != 2 or not isinstance(after[1], str):
        raise ConfigError(f"bad page cursor {after!r}: pass the next_after of the last page")
    value = after[0]
    if sort == "enqueued":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"bad page cursor {after!r}: a sort by enqueued needs a time")
        return (float(value), after[1])
    if not isinstance(value, str):
        raise ConfigError(f"bad page cursor {after!r}: a sort by {sort} needs text")
    return (value, after[1])


def parse_sort(spec: str) -> tuple[str, bool]:
    """``FIELD[:asc|desc]`` -> ``(field, descending)``.

    Without a direction, ``enqueued`` sorts newest first and the others A to Z.

    Raises:
        ConfigError: An unknown field or direction, named.
    """
    key, sep, way = spec.strip().partition(":")
    key = check_sort(key.strip().lower())
    way = way.strip().lower()
    if not sep:
        return key, key == DEFAULT_SORT
    if way not in ("asc", "desc"):
        raise ConfigError(f"bad sort direction {way!r} in {spec!r}: write {key}:asc or {key}:desc")
    return key, way == "desc"


def sort_key(sort: str) -> Callable[[TaskRecord], tuple[float | str, str]]:
    """The total order of a listing: ``(sort value, id)`` of a record."""
    value = SORT_KEYS[check_sort(sort)]
    return lambda r: (value(r), r.id)


def after_cursor(key: tuple[float | str, str], after: Cursor | None, descending: bool) -> bool:
    """Whether a row with ``key`` comes after the cursor in this direction."""
    if after is None:
        return True
    cur = (after[0], after[1])
    return key < cur if descending else key > cur


def page_of(
    matches: Iterable[TaskRecord],
    sort: str = DEFAULT_SORT,
    descending: bool = True,
    after: Cursor | None = None,
    offset: int = 0,
    limit: int = 50,
    total_exact: bool = True,
) -> TaskPage:
    """A page of records that all match the filter (for backends that scan).

    Args:
        matches: Every matching record, in any order.
        sort: Sort key.
        descending: Direction.
        after: Start strictly after this cursor.
        offset: Rows to skip after the cursor.
        limit: Rows on the page.
        total_exact: Whether ``matches`` is complete (else the total is a lower bound).
    """
    key = sort_key(sort)
    recs = list(matches)
    keyed = [(key(r), r) for r in recs]
    if after is not None:
        keyed = [kr for kr in keyed if after_cursor(kr[0], after, descending)]
    pick = heapq.nlargest if descending else heapq.nsmallest
    top = pick(offset + limit + 1, keyed, key=lambda kr: kr[0])[offset:]
    rows = [r for _, r in top[:limit]]
    more = len(top) > limit
    nxt = top[limit - 1][0] if more and limit > 0 else None
    return TaskPage(rows, len(recs), total_exact, nxt, sort, descending)


def cursor_of(rec: TaskRecord, sort: str) -> Cursor:
    """The cursor just after ``rec`` in a listing sorted by ``sort``."""
    return (SORT_KEYS[check_sort(sort)](rec), rec.id)


def describe_total(page: TaskPage) -> str:
    """``1,204,311`` or ``12,000+`` (a lower bound)."""
    return f"{page.total:,}" + ("" if page.total_exact else "+")


def filter_without_index_terms(flt: TaskFilter) -> TaskFilter:
    """The part of ``flt`` an index on queue, name, state and id cannot answer."""
    return TaskFilter(exc=flt.exc, since_s=flt.since_s, text=flt.text, reason=flt.reason)


def waits(rec: TaskRecord, state: TaskState, now: float) -> bool:
    """Whether ``rec`` waits for a time in ``state``: RETRY, or PENDING with a later eta.

    A pending task whose time has come is ready (it keeps its eta): not waiting.
    """
    if rec.state is not state or rec.eta is None:
        return False
    return state is TaskState.RETRY or (state is TaskState.PENDING and rec.eta > now)


def soonest(
    records: Iterable[TaskRecord], state: TaskState, now: float, limit: int
) -> list[TaskRecord]:
    """The records waiting for a time in ``state`` (:func:`waits`), soonest first.

    What the Scheduled and Retry views list: the tasks due next, whatever else the store
    holds (a listing of the newest records would miss them behind ready tasks).
    """
    out = [r for r in records if waits(r, state, now)]
    out.sort(key=lambda r: (r.eta or 0.0, r.id))
    return out[:limit]
