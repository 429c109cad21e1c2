"""The memory sort index's scan budget: a search that matches little ends its page early,
says its total is a lower bound, and paging on still finds every match once."""

from __future__ import annotations

import pytest

from dtq_core.backends import make_backend, memory_index
from dtq_core.backends.base import NewTask
from dtq_core.codec import encode_message
from dtq_core.filters import parse_filter


def test_a_search_past_the_budget_pages_on_with_a_lower_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory_index, "SCAN_BUDGET", 2500)
    b = make_backend("memory://")
    b.open()
    for i in range(10_000):
        tid = f"t{i:05d}"
        word = "needle" if i % 5000 == 7 else "hay"
        b.enqueue(NewTask(tid, "app.x", "q", 0, encode_message(tid, "app.x", [word], {})), i)
    flt = parse_filter("text:needle")
    first = b.task_page(flt, 0.0, "enqueued", True, None, 0, 50)
    # Nothing among the newest 3,000 (blocks of 1,000 until past the budget): an empty
    # page that says where it stopped, and a total that is only a lower bound.
    assert first.records == [] and not first.total_exact
    assert first.next_after == (7000.0, "t07000")
    found: list[str] = []
    after = first.next_after
    pages = 1
    while after is not None:
        page = b.task_page(flt, 0.0, "enqueued", True, after, 0, 50)
        found += [r.id for r in page.records]
        after = page.next_after
        pages += 1
    assert found == ["t05007", "t00007"]
    assert pages == 4
    # Index-only filters are never cut: exact totals from the counters.
    pending = b.task_page(parse_filter("state:pending"), 0.0, limit=3)
    assert pending.total == 10_000 and pending.total_exact


def test_one_list_serves_both_orders_until_an_id_breaks_their_agreement() -> None:
    b = make_backend("memory://")
    b.open()

    def put(tid: str, at: float) -> None:
        b.enqueue(NewTask(tid, "app.x", "q", 0, encode_message(tid, "app.x", [], {})), at)

    def ids(sort: str, flt: str = "") -> list[str]:
        page = b.task_page(parse_filter(flt), 0.0, sort, False, None, 0, 100)
        return [r.id for r in page.records]

    for i in range(5):
        put(f"b{i}", float(i))
    index = b._state.tasks.index  # type: ignore[attr-defined]
    (group,) = index._groups.values()
    assert group.shared  # ids and times grew together: one list
    assert ids("id") == ids("enqueued") == ["b0", "b1", "b2", "b3", "b4"]
    put("a9", 10.0)  # last in time, first by id: the orders part
    put("b5", 9.0)  # and one earlier in time than the last
    assert not group.shared
    assert ids("enqueued") == ["b0", "b1", "b2", "b3", "b4", "b5", "a9"]
    assert ids("id") == ["a9", "b0", "b1", "b2", "b3", "b4", "b5"]
    assert ids("id", "id:b") == ["b0", "b1", "b2", "b3", "b4", "b5"]


@pytest.mark.parametrize(
    "puts",
    [
        [("a0", 1.0), ("a1", 2.0), ("a2", 3.0)],  # ids and times agree: one list
        [("c", 1.0), ("a", 2.0), ("b", 3.0)],  # ids out of time order
        [("x1", 5.0), ("x2", 1.0), ("x3", 3.0)],  # times out of write order (a clock step)
    ],
    ids=["agree", "ids-differ", "times-differ"],
)
def test_a_rebuilt_index_sorts_as_the_live_one(puts: list[tuple[str, float]]) -> None:
    b = make_backend("memory://")
    b.open()
    for tid, at in puts:
        b.enqueue(NewTask(tid, "app.x", "q", 0, encode_message(tid, "app.x", [], {})), at)

    def ids(sort: str) -> list[str]:
        page = b.task_page(parse_filter(""), 0.0, sort, False, None, 0, 100)
        return [r.id for r in page.records]

    live = {sort: ids(sort) for sort in ("enqueued", "id")}
    index = b._state.tasks.index  # type: ignore[attr-defined]
    index.suspend()
    index.rebuild()
    assert {sort: ids(sort) for sort in ("enqueued", "id")} == live
    assert live["enqueued"] == [t for t, _ in sorted(puts, key=lambda p: (p[1], p[0]))]
    assert live["id"] == sorted(t for t, _ in puts)
