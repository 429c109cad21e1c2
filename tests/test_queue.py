"""IndexedHeap: unit tests and a stateful comparison with a reference model."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dtq_core.queue import IndexedHeap


def _drain(heap: IndexedHeap) -> list[str]:
    out = []
    while (item := heap.pop()) is not None:
        out.append(item)
    return out


# -- unit tests ----------------------------------------------------------------------


def test_empty_heap() -> None:
    heap = IndexedHeap()
    assert len(heap) == 0
    assert not heap
    assert heap.pop() is None
    assert heap.peek() is None
    assert heap.peek_key() is None
    assert heap.head_order() is None
    assert heap.pop_until(10, 5) == []
    assert heap.smallest(3) == []
    assert heap.key_of("x") is None
    assert heap.remove("x") is False
    assert list(heap) == []


def test_pops_by_key_then_fifo() -> None:
    heap = IndexedHeap()
    for item, key in [("a", 5), ("b", 1), ("c", 5), ("d", 1), ("e", 0), ("f", 5)]:
        heap.push(item, key)
    assert len(heap) == 6
    assert heap
    assert _drain(heap) == ["e", "b", "d", "a", "c", "f"]
    assert len(heap) == 0


def test_negative_and_float_keys() -> None:
    heap = IndexedHeap()
    heap.push("a", 1.5)
    heap.push("b", -2)
    heap.push("c", 1.25)
    assert _drain(heap) == ["b", "c", "a"]


def test_peek_does_not_remove() -> None:
    heap = IndexedHeap()
    heap.push("a", 2)
    heap.push("b", 1)
    assert heap.peek() == ("b", 1)
    assert heap.peek_key() == 1
    assert len(heap) == 2
    assert heap.pop() == "b"


def test_contains_and_key_of() -> None:
    heap = IndexedHeap()
    heap.push("a", 3)
    assert "a" in heap
    assert "b" not in heap
    assert heap.key_of("a") == 3
    heap.pop()
    assert "a" not in heap
    assert heap.key_of("a") is None


def test_push_of_present_id_rekeys_and_goes_behind_equals() -> None:
    heap = IndexedHeap()
    heap.push("a", 1)
    heap.push("b", 1)
    heap.push("a", 1)  # re-push: now after b
    assert len(heap) == 2
    assert _drain(heap) == ["b", "a"]

    heap.push("x", 5)
    heap.push("y", 3)
    heap.push("x", 0)
    assert heap.key_of("x") == 0
    assert len(heap) == 2
    assert _drain(heap) == ["x", "y"]


def test_remove_never_returns_removed_ids() -> None:
    heap = IndexedHeap()
    for i in range(10):
        heap.push(f"t{i}", i % 3)
    assert heap.remove("t0") is True
    assert heap.remove("t0") is False
    assert heap.remove("t4") is True
    assert "t0" not in heap
    assert len(heap) == 8
    out = _drain(heap)
    assert "t0" not in out
    assert "t4" not in out
    assert out == ["t3", "t6", "t9", "t1", "t7", "t2", "t5", "t8"]


def test_peek_skips_a_removed_head() -> None:
    heap = IndexedHeap()
    heap.push("a", 0)
    heap.push("b", 1)
    heap.remove("a")
    assert heap.peek() == ("b", 1)
    assert heap.head_order() is not None
    assert heap.head_order()[0] == 1  # type: ignore[index]


def test_removed_then_pushed_again_is_live() -> None:
    heap = IndexedHeap()
    heap.push("a", 0)
    heap.remove("a")
    heap.push("a", 2)
    assert heap.peek() == ("a", 2)
    assert _drain(heap) == ["a"]


def test_pop_until_respects_key_and_limit() -> None:
    heap = IndexedHeap()
    for i, key in enumerate([10.0, 20.0, 5.0, 20.0, 30.0]):
        heap.push(f"t{i}", key)
    assert heap.pop_until(20.0, 2) == ["t2", "t0"]
    assert heap.pop_until(20.0, 10) == ["t1", "t3"]
    assert heap.pop_until(29.9, 10) == []
    assert heap.pop_until(30.0, 0) == []
    assert heap.pop_until(30.0, 1) == ["t4"]
    assert not heap


def test_smallest_is_ordered_and_does_not_remove() -> None:
    heap = IndexedHeap()
    for i, key in enumerate([3, 1, 2, 1, 0]):
        heap.push(f"t{i}", key)
    heap.remove("t4")
    assert heap.smallest(3) == [("t1", 1), ("t3", 1), ("t2", 2)]
    assert heap.smallest(100) == [("t1", 1), ("t3", 1), ("t2", 2), ("t0", 3)]
    assert len(heap) == 4


def test_head_order_compares_fifo_within_a_heap() -> None:
    heap = IndexedHeap()
    heap.push("a", 1)
    first = heap.head_order()
    heap.push("b", 1)
    assert heap.head_order() == first
    heap.pop()
    second = heap.head_order()
    assert first is not None
    assert second is not None
    assert second[0] == 1
    assert second > first


def test_iter_lists_live_ids() -> None:
    heap = IndexedHeap()
    for i in range(5):
        heap.push(f"t{i}", i)
    heap.remove("t2")
    assert sorted(heap) == ["t0", "t1", "t3", "t4"]


def test_iter_is_a_snapshot() -> None:
    heap = IndexedHeap()
    for i in range(5):
        heap.push(f"t{i}", i)
    for item in heap:
        heap.remove(item)  # must not raise "dict changed size during iteration"
    assert not heap


def test_clear() -> None:
    heap = IndexedHeap()
    for i in range(100):
        heap.push(f"t{i}", i)
    for i in range(80):
        heap.remove(f"t{i}")
    heap.clear()
    assert len(heap) == 0
    assert heap.pop() is None
    heap.push("z", 1)
    assert _drain(heap) == ["z"]


def test_compaction_bounds_dead_entries_and_keeps_order() -> None:
    heap = IndexedHeap()
    n = 1000
    for i in range(n):
        heap.push(f"t{i}", i % 7)
    expected = sorted(range(n), key=lambda i: (i % 7, i))
    removed = set(range(0, n, 4)) | set(range(1, n, 4)) | set(range(2, n, 4))
    for i in sorted(removed):
        assert heap.remove(f"t{i}")
    # Lazy deletion must not keep every dead entry: the heap was compacted.
    assert len(heap._heap) < n
    dead = sum(1 for e in heap._heap if e[2] is None)
    assert dead == heap._dead
    assert dead <= max(64, len(heap))
    assert len(heap) == n - len(removed)
    assert _drain(heap) == [f"t{i}" for i in expected if i not in removed]


def test_many_rekeys_do_not_grow_the_heap_without_bound() -> None:
    heap = IndexedHeap()
    for i in range(10):
        heap.push(f"t{i}", 0)
    for rnd in range(1000):
        heap.push(f"t{rnd % 10}", rnd)
    assert len(heap) == 10
    assert len(heap._heap) <= 10 + 65
    assert _drain(heap) == [f"t{i}" for i in range(10)]


# -- stateful comparison with a reference model ----------------------------------------

IDS = st.sampled_from([f"id{i}" for i in range(12)])
KEYS = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.5, -0.25]))


class HeapMachine(RuleBasedStateMachine):
    """The heap behaves like a dict of id -> (key, insertion order), popped by min."""

    def __init__(self) -> None:
        super().__init__()
        self.heap = IndexedHeap()
        self.model: dict[str, tuple[float, int]] = {}
        self.seq = itertools.count()
        self.fresh = itertools.count()

    def _model_order(self) -> list[str]:
        return sorted(self.model, key=lambda i: self.model[i])

    def _model_pop(self) -> str | None:
        order = self._model_order()
        if not order:
            return None
        del self.model[order[0]]
        return order[0]

    @rule(item=IDS, key=KEYS)
    def push(self, item: str, key: float) -> None:
        self.heap.push(item, key)
        self.model[item] = (key, next(self.seq))

    @rule(n=st.integers(1, 150), key=KEYS)
    def push_many_fresh(self, n: int, key: float) -> None:
        # Enough entries that bulk removals cross the compaction threshold.
        for _ in range(n):
            item = f"f{next(self.fresh)}"
            self.heap.push(item, key)
            self.model[item] = (key, next(self.seq))

    @rule()
    def pop(self) -> None:
        assert self.heap.pop() == self._model_pop()

    @rule(item=IDS)
    def remove(self, item: str) -> None:
        assert self.heap.remove(item) == (item in self.model)
        self.model.pop(item, None)

    @rule(data=st.data())
    def remove_many(self, data: st.DataObject) -> None:
        live = sorted(self.model)
        if not live:
            return
        victims = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=len(live)))
        for item in victims:
            assert self.heap.remove(item)
            del self.model[item]

    @rule(stride=st.integers(1, 4))
    def remove_most(self, stride: int) -> None:
        # Removes one id in ``stride``; with many entries this crosses compaction.
        for n, item in enumerate(self._model_order()):
            if n % stride == 0:
                assert self.heap.remove(item)
                del self.model[item]

    @rule()
    def peek(self) -> None:
        order = self._model_order()
        expected = None if not order else (order[0], self.model[order[0]][0])
        assert self.heap.peek() == expected
        assert self.heap.peek_key() == (None if expected is None else expected[1])
        head = self.heap.head_order()
        assert (head is None) == (expected is None)
        if head is not None and expected is not None:
            assert head[0] == expected[1]

    @rule(key=KEYS, limit=st.integers(0, 20))
    def pop_until(self, key: float, limit: int) -> None:
        expected = [i for i in self._model_order() if self.model[i][0] <= key][:limit]
        for item in expected:
            del self.model[item]
        assert self.heap.pop_until(key, limit) == expected

    @rule(n=st.integers(0, 20))
    def smallest(self, n: int) -> None:
        expected = [(i, self.model[i][0]) for i in self._model_order()[:n]]
        assert self.heap.smallest(n) == expected

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def key_of(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(sorted(self.model)))
        assert self.heap.key_of(item) == self.model[item][0]

    @rule()
    def clear(self) -> None:
        self.heap.clear()
        self.model.clear()

    @invariant()
    def same_size_and_members(self) -> None:
        assert len(self.heap) == len(self.model)
        assert bool(self.heap) == bool(self.model)
        assert set(self.heap) == set(self.model)
        for item in [f"id{i}" for i in range(12)]:
            assert (item in self.heap) == (item in self.model)

    @invariant()
    def dead_count_is_exact(self) -> None:
        assert self.heap._dead == sum(1 for e in self.heap._heap if e[2] is None)

    def teardown(self) -> None:
        # Draining at the end checks the full order, not only the head.
        assert [self.heap.pop() for _ in range(len(self.model))] == self._model_order()
        assert self.heap.pop() is None


HeapMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestHeapMachine = HeapMachine.TestCase
