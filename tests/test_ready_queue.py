"""ReadyQueue: unit tests and a stateful comparison with a reference model."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dtq_core.ready_queue import STALE_MIN, ReadyQueue


def _drain(q: ReadyQueue) -> list[str]:
    out = []
    while (item := q.pop()) is not None:
        out.append(item)
    return out


def test_empty_queue() -> None:
    q = ReadyQueue()
    assert len(q) == 0
    assert not q
    assert q.pop() is None
    assert q.smallest(3) == []
    assert q.entries() == []
    assert list(q) == []


def test_pops_by_priority_then_fifo() -> None:
    q = ReadyQueue()
    for item, key in [("a", 5), ("b", 1), ("c", 5), ("d", 1), ("e", 0), ("f", 5)]:
        q.push(item, key)
    assert len(q) == 6
    assert q.smallest(3) == [("e", 0), ("b", 1), ("d", 1)]
    assert _drain(q) == ["e", "b", "d", "a", "c", "f"]
    assert q.taken == 6


def test_remove_from_the_middle_is_skipped_everywhere() -> None:
    q = ReadyQueue()
    for item in "abcde":
        q.push(item, 0)
    q.remove("c", 0)  # stale, left in place
    q.remove("a", 0)  # the head: taken at once
    assert len(q) == 3
    assert list(q) == ["b", "d", "e"]
    assert q.entries() == [("b", 0), ("d", 0), ("e", 0)]
    assert _drain(q) == ["b", "d", "e"]


def test_an_id_removed_then_pushed_again_keeps_its_new_place() -> None:
    q = ReadyQueue()
    for item in "abc":
        q.push(item, 0)
    q.remove("b", 0)
    q.push("b", 0)  # e.g. the id reused by a new task
    assert list(q) == ["a", "c", "b"]
    assert _drain(q) == ["a", "c", "b"]


def test_int_and_float_priorities_share_a_level() -> None:
    q = ReadyQueue()
    q.push("a", 0)
    q.push("b", 0.0)  # as a checkpoint restores it
    assert _drain(q) == ["a", "b"]


def test_taken_counts_turns() -> None:
    q = ReadyQueue()
    q.push("a", 2)
    q.push("b", 2)
    q.push("c", 2)
    q.pop()
    q.remove("c", 2)
    assert q.taken == 2 and list(q) == ["b"]


def test_many_removals_rebuild_the_deques() -> None:
    q = ReadyQueue()
    n = 4 * STALE_MIN
    for i in range(n):
        q.push(f"t{i}", i % 3)
    for i in range(1, n, 2):  # never a head of its level
        q.remove(f"t{i}", i % 3)
    assert q._dead <= max(STALE_MIN, len(q))  # a rebuild dropped the stale places
    expected = sorted((i % 3, i) for i in range(0, n, 2))
    assert _drain(q) == [f"t{i}" for _, i in expected]


class ReadyQueueModel(RuleBasedStateMachine):
    """Every operation compared with a sorted list of ``(priority, seq, id)``."""

    def __init__(self) -> None:
        super().__init__()
        self.q = ReadyQueue()
        self.model: list[tuple[int, int, str]] = []
        self.seq = itertools.count()
        self.names = itertools.count()

    def _order(self) -> list[str]:
        return [i for _, _, i in sorted(self.model)]

    @rule(priority=st.integers(-2, 2))
    def push_new(self, priority: int) -> None:
        task_id = f"t{next(self.names)}"
        self.q.push(task_id, priority)
        self.model.append((priority, next(self.seq), task_id))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_one(self, data: st.DataObject) -> None:
        entry = data.draw(st.sampled_from(self.model))
        self.q.remove(entry[2], entry[0])
        self.model.remove(entry)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), priority=st.integers(-2, 2))
    def remove_and_reuse(self, data: st.DataObject, priority: int) -> None:
        """An id leaves (a cancel) and comes back, maybe at another priority."""
        entry = data.draw(st.sampled_from(self.model))
        self.q.remove(entry[2], entry[0])
        self.model.remove(entry)
        self.q.push(entry[2], priority)
        self.model.append((priority, next(self.seq), entry[2]))

    @rule()
    def pop(self) -> None:
        got = self.q.pop()
        if not self.model:
            assert got is None
            return
        first = min(self.model)
        assert got == first[2]
        self.model.remove(first)

    @invariant()
    def same_order(self) -> None:
        assert len(self.q) == len(self.model)
        assert list(self.q) == self._order()
        assert [i for i, _ in self.q.smallest(3)] == self._order()[:3]


ReadyQueueModel.TestCase.settings = settings(max_examples=150, stateful_step_count=60)
TestReadyQueueModel = ReadyQueueModel.TestCase
