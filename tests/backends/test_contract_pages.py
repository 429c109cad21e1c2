"""The sorted task listing (``Backend.task_page``) on every backend of conftest.py.

Order by every sort key with ties broken by id, totals under filters, and keyset pages
that neither skip nor repeat a task while new tasks arrive between two fetches.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from dtq_core.backends.base import Backend
from dtq_core.clock import FakeClock
from dtq_core.errors import ConfigError
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.paging import SORT_KEYS, TaskPage
from dtq_core.task import TaskRecord
from tests.backends.test_contract import BOOM, LEASE, put

ALL = TaskFilter()
_run = itertools.count(1)


def order(recs: list[TaskRecord], sort: str, descending: bool) -> list[str]:
    value = SORT_KEYS[sort]
    return [r.id for r in sorted(recs, key=lambda r: (value(r), r.id), reverse=descending)]


def every_page(
    backend: Backend, flt: TaskFilter, now: float, sort: str, descending: bool, limit: int
) -> tuple[list[str], list[TaskPage]]:
    ids: list[str] = []
    pages: list[TaskPage] = []
    after = None
    while True:
        page = backend.task_page(flt, now, sort, descending, after, 0, limit)
        pages.append(page)
        ids += [r.id for r in page.records]
        after = page.next_after
        if after is None:
            return ids, pages
        assert len(pages) < 100, "pages never end"


@pytest.fixture
def mixed(backend: Backend, clock: FakeClock) -> tuple[float, list[str]]:
    """24 tasks on 3 queues and 3 names, four per enqueue time, ids not in time order.

    Three run and succeed, two die, one is running: every sort key has ties.
    """
    run = next(_run)
    start = clock.now()
    ids = []
    for i in range(24):
        tid = f"p{run}-{(i * 7) % 24:02d}"
        queue = ("q1", "q2", "q3")[i % 3]
        name = ("app.a", "app.b", "app.c")[(i // 3) % 3]
        ids.append(put(backend, start + i // 4, queue, name=name, task_id=tid))
    now = clock.advance(10)
    for d in backend.claim(["q1"], "w1", LEASE, 3, now):
        backend.ack(d.task_id, d.token, None, now)
    for d in backend.claim(["q2"], "w1", LEASE, 2, now):
        backend.fail(d.task_id, d.token, BOOM, now, dead_reason="no retries left")
    backend.claim(["q3"], "w1", LEASE, 1, now)
    return now, ids


def test_pages_follow_the_sort_with_ties_broken_by_id(
    backend: Backend, mixed: tuple[float, list[str]]
) -> None:
    now, ids = mixed
    recs = backend.list_tasks(ALL, now, 0, 1000)
    assert sorted(r.id for r in recs) == sorted(ids)
    for sort, descending in itertools.product(SORT_KEYS, (False, True)):
        got, pages = every_page(backend, ALL, now, sort, descending, 5)
        assert got == order(recs, sort, descending), (sort, descending)
        assert [len(p.records) for p in pages] == [5, 5, 5, 5, 4]
        assert all(p.total == 24 and p.total_exact for p in pages)
        assert all((p.sort, p.descending) == (sort, descending) for p in pages)


#: Filters on indexed fields, on the rest, and on both.
FILTERS = [
    "state:pending",
    "state:dead,running",
    "queue:q2",
    "task:app.b queue:q1",
    "state:success task:app.a",
    "id:p",
    "exc:ValueError",
    "text:app.c state:pending",
    "queue:nowhere",
]


def test_filters_narrow_the_pages_and_the_total(
    backend: Backend, mixed: tuple[float, list[str]]
) -> None:
    now, _ = mixed
    for spec, sort in itertools.product(FILTERS, ("enqueued", "name", "state")):
        flt = parse_filter(spec)
        want = [r for r in backend.list_tasks(ALL, now, 0, 1000) if flt.matches(r, now)]
        got, pages = every_page(backend, flt, now, sort, False, 4)
        assert got == order(want, sort, False), (spec, sort)
        assert {(p.total, p.total_exact) for p in pages} == {(len(want), True)}, (spec, sort)


def test_offset_skips_rows_after_the_cursor(
    backend: Backend, mixed: tuple[float, list[str]]
) -> None:
    now, _ = mixed
    full = [r.id for r in backend.task_page(ALL, now, "id", False, None, 0, 100).records]
    first = backend.task_page(ALL, now, "id", False, None, 0, 3)
    page = backend.task_page(ALL, now, "id", False, first.next_after, 2, 3)
    assert [r.id for r in page.records] == full[5:8]
    assert page.next_after == (full[7], full[7])
    none = backend.task_page(ALL, now, "id", False, None, 0, 0)
    assert (none.records, none.total) == ([], 24)
    last = backend.task_page(ALL, now, "id", False, None, 20, 10)
    assert [r.id for r in last.records] == full[20:]
    assert last.next_after is None and last.total == 24


@pytest.mark.parametrize(("sort", "descending"), [("enqueued", True), ("name", False)])
def test_keyset_pages_neither_skip_nor_repeat_while_tasks_arrive(
    backend: Backend, clock: FakeClock, mixed: tuple[float, list[str]], sort: str, descending: bool
) -> None:
    now, ids = mixed
    run = next(_run)
    value = SORT_KEYS[sort]
    seen: list[TaskRecord] = []
    arrived_later: list[str] = []  # sort after the cursor when they arrive: must be seen
    after: Any = None
    for k in itertools.count():
        page = backend.task_page(ALL, now, sort, descending, after, 0, 4)
        seen += page.records
        after = page.next_after
        if after is None:
            break
        assert k < 50
        # One task that sorts before the cursor (newest, or first by name) and one that
        # sorts after it (enqueued in the past, or last by name), between two fetches.
        t = clock.advance(1)
        put(backend, t, "q1", name="app.0", task_id=f"n{run}-{k:02d}a")
        late_t = (now - 1000 - k) if sort == "enqueued" else t
        put(backend, late_t, "q1", name="app.z", task_id=f"n{run}-{k:02d}z")
        arrived_later.append(f"n{run}-{k:02d}z")
    got = [r.id for r in seen]
    assert len(got) == len(set(got)), "a task was shown twice"
    assert set(ids) <= set(got), "a task was skipped"
    assert set(arrived_later) <= set(got)
    assert not any(i.endswith("a") and i.startswith(f"n{run}-") for i in got)
    keys = [(value(r), r.id) for r in seen]
    assert keys == sorted(keys, reverse=descending)


def test_a_new_page_counts_the_new_tasks(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    for i in range(5):
        put(backend, now, "q1")
    first = backend.task_page(ALL, now, limit=2)
    assert first.total == 5
    put(backend, now + 1, "q1")
    again = backend.task_page(ALL, now + 1, after=first.next_after, limit=2)
    assert again.total == 6
    assert {r.id for r in first.records}.isdisjoint(r.id for r in again.records)


def test_bad_sort_or_cursor_is_an_error_naming_it(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    put(backend, now, "q1")
    with pytest.raises(ConfigError, match="cannot sort by 'runtime': use one of enqueued"):
        backend.task_page(ALL, now, "runtime")
    with pytest.raises(ConfigError, match="a sort by enqueued needs a time"):
        backend.task_page(ALL, now, "enqueued", True, ("yesterday", "x"))
    with pytest.raises(ConfigError, match="a sort by name needs text"):
        backend.task_page(ALL, now, "name", True, (3.5, "x"))
    # (an attached store refuses the shape on the wire, with its own words)
    with pytest.raises(ConfigError, match=r"next_after of the last page|arguments for task_page"):
        backend.task_page(ALL, now, "name", True, ("a",))  # type: ignore[arg-type]
