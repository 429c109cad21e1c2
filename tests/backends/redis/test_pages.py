"""Sorted pages on Redis: the per-queue listing sets, their bounds and their upkeep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dtq_core.backends.redis import pages
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.errors import ConfigError
from dtq_core.filters import TaskFilter, parse_filter
from tests.backends.test_contract import new_task

pytestmark = pytest.mark.redis
ALL = TaskFilter()


def fill(be: RedisBackend, n: int, per_time: int = 3) -> list[str]:
    ids = []
    for i in range(n):
        t = new_task(("q1", "q2")[i % 2], name="app.x", args=["needle" if i % 40 == 3 else "hay"])
        be.enqueue(t, 1000.0 + i // per_time)
        ids.append(t.id)
    return ids


def pages_of(be: RedisBackend, flt: TaskFilter, limit: int) -> tuple[list[str], list[Any]]:
    ids: list[str] = []
    seen = []
    after = None
    while True:
        page = be.task_page(flt, 2000.0, "enqueued", True, after, 0, limit)
        seen.append(page)
        ids += [r.id for r in page.records]
        after = page.next_after
        if after is None:
            return ids, seen


def test_ties_across_batches_and_a_budgeted_search(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "BATCH", 4)  # ties at one time span several reads
    ids = fill(be, 90, per_time=7)
    by_key = sorted(ids, key=lambda i: (1000.0 + ids.index(i) // 7, i), reverse=True)
    got, seen = pages_of(be, ALL, 8)
    assert got == by_key
    assert {(p.total, p.total_exact) for p in seen} == {(90, True)}
    monkeypatch.setattr(pages, "SCAN_BUDGET", 12)
    got, seen = pages_of(be, parse_filter("text:needle"), 8)
    assert got == [i for i in by_key if ids.index(i) % 40 == 3]
    assert not seen[0].total_exact  # the first call stopped at its budget
    assert any(not p.records for p in seen)  # and pages on from where it stopped


def test_queues_from_before_the_sets_are_indexed_on_first_read(
    be: RedisBackend, plain: Any, make_be: Callable[..., RedisBackend]
) -> None:
    ids = fill(be, 10)
    for q in ("q1", "q2"):
        plain.delete(be.keys.queue(q)["all"])  # as an older version left them
    fresh = make_be()
    page = fresh.task_page(ALL, 2000.0, limit=100)
    assert sorted(r.id for r in page.records) == sorted(ids)
    assert plain.zcard(be.keys.queue("q1")["all"]) == 5


def test_deleted_records_leave_the_set(be: RedisBackend, plain: Any) -> None:
    ids = fill(be, 6)
    be.claim(["q1"], "w", 30.0, 3, 1500.0)
    (d,) = be.claim(["q2"], "w", 30.0, 1, 1500.0)
    be.result_ttl = 1.0
    be.ack(d.task_id, d.token, None, 1500.0)
    assert be.expire(1600.0) == 1
    assert d.task_id not in [r.id for r in be.task_page(ALL, 2000.0, limit=100).records]
    assert plain.zscore(be.keys.queue("q2")["all"], d.task_id) is None
    plain.delete(be.keys.record("q2", ids[1]))  # gone behind the backend's back
    assert ids[1] not in [r.id for r in be.task_page(ALL, 2000.0, limit=100).records]
    assert plain.zscore(be.keys.queue("q2")["all"], ids[1]) is None


def test_other_sorts_read_everything_up_to_a_limit(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = fill(be, 12)
    page = be.task_page(parse_filter("queue:q1"), 2000.0, "id", True, None, 0, 3)
    assert [r.id for r in page.records] == sorted(ids[0::2], reverse=True)[:3]
    assert page.total == 6
    monkeypatch.setattr(pages, "SORT_SCAN_LIMIT", 10)
    with pytest.raises(ConfigError, match="sorting 12 tasks by name on Redis would read"):
        be.task_page(ALL, 2000.0, "name")
    assert be.task_page(parse_filter("queue:q2"), 2000.0, "name").total == 6
