"""The in-memory state machine's task changes: claims, the compact records they keep."""

from __future__ import annotations

import pytest

from dtq_core.backends import memory_leases
from dtq_core.backends.changes import Ack, Cancel, Claim, Enqueue, Release, TaskSpec
from dtq_core.backends.memory_state import StateMachine
from dtq_core.task import TaskState

S = TaskState


def spec(task_id: str, queue: str = "q", priority: int = 0) -> TaskSpec:
    return TaskSpec(task_id, "app.t", queue, priority, b"{}", None, 0, None, None, None, None)


def machine(*specs: TaskSpec) -> StateMachine:
    sm = StateMachine()
    sm.apply(Enqueue(1.0, list(specs)))
    return sm


def test_a_queued_record_keeps_no_optional_part() -> None:
    sm = machine(spec("a"))
    rec = sm.tasks.records["a"]
    assert rec.last_run is None and rec.extras is None
    assert rec.state is S.PENDING and rec.created_at == rec.enqueued_at == 1.0


def test_a_claim_takes_its_tasks_off_the_ready_queue() -> None:
    sm = machine(spec("a"), spec("b"), spec("c"))
    assert memory_leases.pick(sm.tasks, None, 2) == ["a", "b"]
    assert len(sm.tasks.ready["q"]) == 3  # picking leaves them in place
    (d,) = sm.apply(Claim(2.0, "w", 32.0, [("b", 7)]))
    assert (d.task_id, d.token, d.attempt, d.deliveries) == ("b", 7, 1, 1)
    assert list(sm.tasks.ready["q"]) == ["a", "c"]
    rec = sm.tasks.records["b"]
    assert (rec.state, rec.worker, rec.lease_token, rec.lease_deadline) == (S.RUNNING, "w", 7, 32.0)
    assert sm.tasks.next_token == 8


@pytest.mark.parametrize(
    "tasks",
    [[("a", 1), ("done", 2)], [("a", 1), ("a", 2)], [("a", 1), ("nope", 2)]],
    ids=["not-ready", "twice", "unknown"],
)
def test_a_claim_that_cannot_apply_whole_changes_nothing(tasks: list[tuple[str, int]]) -> None:
    sm = machine(spec("a"), spec("done"))
    sm.apply(Cancel(1.5, "done"))
    with pytest.raises((ValueError, KeyError)):
        sm.apply(Claim(2.0, "w", 32.0, tasks))
    assert sm.tasks.records["a"].state is S.PENDING
    assert list(sm.tasks.ready["q"]) == ["a"]
    assert sm.tasks.counts[S.RUNNING] == 0


def test_release_then_claim_again_counts_one_attempt() -> None:
    sm = machine(spec("a"))
    sm.apply(Claim(2.0, "w", 32.0, [("a", 1)]))
    sm.apply(Release(3.0, "a", 1, None, ""))
    rec = sm.tasks.records["a"]
    assert (rec.state, rec.attempt, rec.worker, rec.started_at) == (S.PENDING, 0, None, None)
    sm.apply(Claim(4.0, "w2", 34.0, [("a", 2)]))
    sm.apply(Ack(5.0, [("a", 2, {"ok": 1})]))
    assert (rec.state, rec.attempt, rec.result, rec.finished_at) == (S.SUCCESS, 1, {"ok": 1}, 5.0)


def test_queues_of_one_priority_take_turns() -> None:
    sm = machine(*(spec(f"a{i}", "qa") for i in range(3)), *(spec(f"b{i}", "qb") for i in range(2)))
    assert memory_leases.pick(sm.tasks, None, 5) == ["a0", "b0", "a1", "b1", "a2"]
    assert memory_leases.pick(sm.tasks, ["qb", "qa", "qb"], 4) == ["b0", "b1", "a0", "a1"]


def test_a_lower_priority_value_goes_first_across_queues() -> None:
    sm = machine(spec("a", "qa", 5), spec("b", "qb", 1), spec("c", "qa", 0))
    assert memory_leases.pick(sm.tasks, None, 3) == ["c", "b", "a"]
    sm.tasks.paused.add("qa")
    assert memory_leases.pick(sm.tasks, None, 3) == ["b"]
