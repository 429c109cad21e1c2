"""The backend contract: one suite, run against every backend in conftest.py.

Time is a :class:`FakeClock` whose ``now`` is passed in explicitly; nothing sleeps.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from dtq_core.backends.base import (
    Backend,
    Capabilities,
    Delivery,
    NewTask,
    Outcome,
    QueueStats,
    Transition,
)
from dtq_core.clock import FakeClock
from dtq_core.codec import decode_message, encode_message
from dtq_core.errors import DTQError, TaskNotFound
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.task import TRANSITIONS, ErrorInfo, TaskState

S = TaskState
ALL = TaskFilter()
BOOM = ErrorInfo("builtins.ValueError", "boom", "Traceback ...")
LEASE = 30.0

_ids = itertools.count(1)


def new_task(
    queue: str = "default",
    priority: int = 0,
    *,
    name: str = "app.work",
    eta: float | None = None,
    args: list[Any] | None = None,
    max_retries: int = 0,
    time_limit: float | None = None,
    task_id: str | None = None,
) -> NewTask:
    tid = task_id or f"task-{next(_ids):06d}"
    payload = encode_message(tid, name, args if args is not None else [tid], {})
    return NewTask(
        tid,
        name,
        queue,
        priority,
        payload,
        eta=eta,
        max_retries=max_retries,
        time_limit=time_limit,
    )


def put(backend: Backend, now: float, *args: Any, **kwargs: Any) -> str:
    task = new_task(*args, **kwargs)
    backend.enqueue(task, now)
    return task.id


def claim_one(
    backend: Backend, now: float, worker: str = "w1", queues: list[str] | None = None
) -> Delivery:
    got = backend.claim(queues, worker, LEASE, 1, now)
    assert len(got) == 1, got
    return got[0]


def state(backend: Backend, task_id: str) -> TaskState | None:
    rec = backend.get(task_id)
    assert backend.get_state(task_id) == (None if rec is None else rec.state)
    return None if rec is None else rec.state


def moves(transitions: list[Transition]) -> list[tuple[TaskState | None, TaskState]]:
    return [(t.old, t.new) for t in transitions]


def claimed_ids(backend: Backend, now: float, queues: list[str] | None = None) -> list[str]:
    return [d.task_id for d in backend.claim(queues, "w", LEASE, 1000, now)]


def make_dead(backend: Backend, now: float, reason: str = "max_retries", **kw: Any) -> str:
    tid = put(backend, now, **kw)
    d = claim_one(backend, now, queues=[kw.get("queue", "default")])
    assert d.task_id == tid
    backend.fail(tid, d.token, BOOM, now, dead_reason=reason)
    return tid


# -- basics --------------------------------------------------------------------------


def test_capabilities(backend: Backend) -> None:
    assert isinstance(backend.capabilities, Capabilities)
    assert backend.ping() >= 0.0


def test_enqueue_stores_a_pending_record(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    task = new_task("q1", 3, name="app.add", args=[1, 2], max_retries=4, time_limit=9.0)
    trs = backend.enqueue(task, now)
    assert trs == [Transition(task.id, "app.add", "q1", None, S.PENDING, None)]
    rec = backend.get(task.id)
    assert rec is not None
    assert rec.state is S.PENDING
    assert (rec.name, rec.queue, rec.priority) == ("app.add", "q1", 3)
    assert rec.payload == task.payload
    assert rec.args == [1, 2]
    assert (rec.max_retries, rec.time_limit) == (4, 9.0)
    assert rec.created_at == now
    assert rec.enqueued_at == now
    assert (rec.attempt, rec.deliveries) == (0, 0)
    assert rec.attempts() == []
    assert state(backend, task.id) is S.PENDING


def test_unknown_task(backend: Backend, clock: FakeClock) -> None:
    assert backend.get("nope") is None
    assert backend.get_state("nope") is None
    assert backend.ack("nope", 1, None, clock.now()) == []
    assert backend.cancel("nope", clock.now()) == []


def test_duplicate_id_is_refused_and_leaves_the_first(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    first = new_task(args=["first"])
    backend.enqueue(first, now)
    dup = new_task(task_id=first.id, args=["second"])
    with pytest.raises(DTQError):
        backend.enqueue(dup, now)
    rec = backend.get(first.id)
    assert rec is not None
    assert rec.args == ["first"]
    assert backend.count_by_state()[S.PENDING] == 1


def test_find_ids_by_prefix(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    for tid in ("ab12-one", "ab12-two", "ab34-three", "zz*[x]"):
        put(backend, now, task_id=tid)
    assert backend.find_ids("ab12-t") == ["ab12-two"]
    assert backend.find_ids("ab12") == ["ab12-one", "ab12-two"]
    assert backend.find_ids("ab") == ["ab12-one", "ab12-two", "ab34-three"]
    assert backend.find_ids("ab", limit=2) == ["ab12-one", "ab12-two"]
    assert backend.find_ids("ab34-three") == ["ab34-three"]  # an exact id alone
    assert backend.find_ids("zz*[") == ["zz*[x]"]  # glob characters are literal
    assert backend.find_ids("z*") == []
    assert backend.find_ids("nope") == []


def test_get_returns_a_copy(backend: Backend, clock: FakeClock) -> None:
    tid = put(backend, clock.now())
    rec = backend.get(tid)
    assert rec is not None
    rec.state = S.DEAD
    rec.priority = 99
    again = backend.get(tid)
    assert again is not None
    assert (again.state, again.priority) == (S.PENDING, 0)


def test_enqueue_many(backend: Backend, clock: FakeClock) -> None:
    tasks = [new_task(priority=p) for p in (2, 1, 0)]
    trs = backend.enqueue_many(tasks, clock.now())
    assert [t.task_id for t in trs] == [t.id for t in tasks]
    assert all(t.new is S.PENDING for t in trs)
    assert claimed_ids(backend, clock.now()) == [t.id for t in reversed(tasks)]


# -- claim order ---------------------------------------------------------------------


def test_claim_by_priority_then_fifo(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    plan = [("a", 5), ("b", 1), ("c", 5), ("d", 0), ("e", 1), ("f", 0), ("g", -1)]
    ids = {label: put(backend, now, priority=p) for label, p in plan}
    got = claimed_ids(backend, now, ["default"])
    assert got == [ids[x] for x in "gdfbeac"]


def test_claim_respects_limit_and_empty(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.claim(None, "w", LEASE, 5, now) == []
    assert backend.claim(["default"], "w", LEASE, 5, now) == []
    ids = [put(backend, now) for _ in range(5)]
    first = backend.claim(["default"], "w", LEASE, 2, now)
    assert [d.task_id for d in first] == ids[:2]
    rest = backend.claim(["default"], "w", LEASE, 10, now)
    assert [d.task_id for d in rest] == ids[2:]
    assert backend.claim(["default"], "w", LEASE, 10, now) == []


def test_strict_queue_order(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    low = put(backend, now, "a", 9)
    high = put(backend, now, "b", 0)
    # The listed order wins over priority: all of "a" before any of "b".
    assert claimed_ids(backend, now, ["missing", "a", "b"]) == [low, high]


def test_strict_order_falls_through_to_later_queues(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    b1 = put(backend, now, "b", 0)
    assert claim_one(backend, now, queues=["a", "b"]).task_id == b1


def test_one_batch_takes_queues_in_order_and_competing_heads_by_priority(
    backend: Backend, clock: FakeClock
) -> None:
    now = clock.now()
    a = [put(backend, now, "a", p) for p in (5, 1, 3)]
    b = [put(backend, now, "b", p) for p in (0, 2)]
    # Strict order: all of "a" (by priority) then "b", in one batch.
    got = backend.claim(["a", "b"], "w", LEASE, 10, now)
    assert [d.task_id for d in got] == [a[1], a[2], a[0], b[0], b[1]]
    a = [put(backend, now, "a", p) for p in (5, 1)]
    b = [put(backend, now, "b", p) for p in (0, 4)]
    # Every queue: heads compete at each step, then the one left is drained.
    got = backend.claim(None, "w", LEASE, 3, now)
    assert [d.task_id for d in got] == [b[0], a[1], b[1]]
    assert [d.task_id for d in backend.claim(None, "w", LEASE, 10, now)] == [a[0]]


def test_unlisted_queue_is_not_claimed(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    put(backend, now, "other")
    assert backend.claim(["a", "b"], "w", LEASE, 10, now) == []


def test_all_queues_best_priority_first(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    a = put(backend, now, "a", 9)
    b = put(backend, now, "b", 0)
    c = put(backend, now, "c", 4)
    b2 = put(backend, now, "b", 5)
    assert claimed_ids(backend, now, None) == [b, c, b2, a]


def test_all_queues_claims_everything_of_equal_priority(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    ids = {put(backend, now, q) for q in "abcabc"}
    got = claimed_ids(backend, now, None)
    assert set(got) == ids
    assert len(got) == 6


def test_paused_queue_is_skipped_and_resumes(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    a = put(backend, now, "a", 0)
    b = put(backend, now, "b", 5)
    backend.set_paused("a", True)
    assert backend.claim(["a"], "w", LEASE, 10, now) == []
    assert claimed_ids(backend, now, None) == [b]
    assert state(backend, a) is S.PENDING
    stats = {s.name: s for s in backend.queue_stats()}
    assert stats["a"].paused
    assert stats["a"].ready == 1
    assert not stats["b"].paused
    backend.set_paused("a", False)
    assert not {s.name: s for s in backend.queue_stats()}["a"].paused
    assert claimed_ids(backend, now, ["a"]) == [a]


def test_pausing_an_unknown_queue_is_harmless(backend: Backend, clock: FakeClock) -> None:
    backend.set_paused("later", True)
    now = clock.now()
    t = put(backend, now, "later")
    assert backend.claim(None, "w", LEASE, 1, now) == []
    backend.set_paused("later", False)
    assert claimed_ids(backend, now) == [t]


# -- delayed tasks -------------------------------------------------------------------


def test_delayed_task_waits_for_promote_due(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    later = put(backend, now, eta=now + 10)
    sooner = put(backend, now, eta=now + 5)
    assert state(backend, later) is S.PENDING
    assert backend.claim(None, "w", LEASE, 10, now) == []
    assert backend.next_due() == pytest.approx(now + 5)
    stats = {s.name: s for s in backend.queue_stats()}["default"]
    assert (stats.ready, stats.delayed) == (0, 2)

    assert backend.promote_due(now + 4.9) == []
    assert backend.claim(None, "w", LEASE, 10, now + 4.9) == []

    # A delayed PENDING task changes no state when it becomes ready.
    assert backend.promote_due(now + 5) == []
    assert claimed_ids(backend, now + 5) == [sooner]
    assert backend.next_due() == pytest.approx(now + 10)

    backend.promote_due(now + 20)
    assert backend.next_due() is None
    assert claimed_ids(backend, now + 20) == [later]


def test_eta_in_the_past_is_ready_at_once(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    t = put(backend, now, eta=now - 1)
    assert backend.next_due() is None
    assert claimed_ids(backend, now) == [t]


def test_promote_due_respects_limit(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    ids = [put(backend, now, eta=now + 1 + i) for i in range(5)]
    backend.promote_due(now + 100, limit=2)
    assert claimed_ids(backend, now + 100) == ids[:2]
    backend.promote_due(now + 100)
    assert claimed_ids(backend, now + 100) == ids[2:]


# -- claim, ack ----------------------------------------------------------------------


def test_claim_starts_the_task(backend: Backend, clock: FakeClock) -> None:
    t0 = clock.now()
    task = new_task("q", 2, name="app.add", args=[1, 2], max_retries=3, time_limit=7.5)
    backend.enqueue(task, t0)
    now = clock.advance(3)
    (d,) = backend.claim(["q"], "worker-1", 20.0, 5, now)
    assert d.task_id == task.id
    assert d.name == "app.add"
    assert d.queue == "q"
    assert d.payload == task.payload
    assert decode_message(d.payload)["args"] == [1, 2]
    assert (d.attempt, d.deliveries) == (1, 1)
    assert d.enqueued_at == t0
    assert d.started_at == now
    assert d.time_limit == 7.5
    assert d.max_retries == 3
    rec = backend.get(task.id)
    assert rec is not None
    assert rec.state is S.RUNNING
    assert rec.worker == "worker-1"
    assert rec.started_at == now
    assert rec.lease_deadline == pytest.approx(now + 20.0)
    assert (rec.attempt, rec.deliveries) == (1, 1)
    stats = {s.name: s for s in backend.queue_stats()}["q"]
    assert (stats.ready, stats.running) == (0, 1)


def test_tokens_differ_between_deliveries(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    for _ in range(3):
        put(backend, now)
    tokens = [d.token for d in backend.claim(None, "w", LEASE, 3, now)]
    assert len(set(tokens)) == 3


def test_ack_with_the_right_token(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.ok", queue="q")
    d = claim_one(backend, now)
    done = clock.advance(2)
    trs = backend.ack(tid, d.token, {"sum": 3}, done)
    assert trs == [Transition(tid, "app.ok", "q", S.RUNNING, S.SUCCESS, None)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.SUCCESS
    assert rec.result == {"sum": 3}
    assert rec.finished_at == done
    assert rec.error is None
    assert [a.outcome for a in rec.attempts()] == ["SUCCESS"]
    stats = {s.name: s for s in backend.queue_stats()}["q"]
    assert stats.running == 0
    # Acking twice is refused: the task is no longer running.
    assert backend.ack(tid, d.token, "again", done) == []
    rec = backend.get(tid)
    assert rec is not None
    assert rec.result == {"sum": 3}


def test_outcome_reads_state_then_result_or_error(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.outcome("no-such-task") is None
    ok = put(backend, now, name="app.ok")
    bad = put(backend, now, name="app.bad")
    assert backend.outcome(ok) == Outcome(S.PENDING)
    d1 = claim_one(backend, now)
    d2 = claim_one(backend, now)
    assert backend.outcome(ok) == Outcome(S.RUNNING)
    by_id = {d1.task_id: d1, d2.task_id: d2}
    backend.ack(ok, by_id[ok].token, {"sum": 3}, now)
    backend.fail(bad, by_id[bad].token, BOOM, now, dead_reason="gave up")
    assert backend.outcome(ok) == Outcome(S.SUCCESS, {"sum": 3})
    assert backend.outcome(bad) == Outcome(S.DEAD, None, BOOM, "gave up")


def test_ack_with_a_wrong_token_changes_nothing(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    before = backend.get(tid)
    assert backend.ack(tid, d.token + 1000, "x", now) == []
    assert backend.fail(tid, d.token + 1000, BOOM, now, dead_reason="r") == []
    assert backend.bury(tid, d.token + 1000, BOOM, "r", now) == []
    assert backend.release(tid, d.token + 1000, now) == []
    assert backend.get(tid) == before
    assert backend.ack(tid, d.token, "ok", now) != []


# -- fail, retry, dead ---------------------------------------------------------------


def test_fail_with_retry_then_promote(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.flaky", queue="q", max_retries=3)
    d1 = claim_one(backend, now, worker="w1")
    t1 = clock.advance(1)
    trs = backend.fail(tid, d1.token, BOOM, t1, retry_at=t1 + 10)
    assert moves(trs) == [(S.RUNNING, S.FAILED), (S.FAILED, S.RETRY)]
    assert all(t.task_id == tid and t.name == "app.flaky" and t.queue == "q" for t in trs)
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.RETRY
    assert rec.error == BOOM
    assert len(rec.history) == 1
    assert rec.history[0].number == 1
    assert rec.history[0].outcome == "FAILED"
    assert rec.history[0].error == BOOM
    assert rec.history[0].worker == "w1"
    assert backend.next_due() == pytest.approx(t1 + 10)
    assert backend.claim(None, "w", LEASE, 1, t1 + 9) == []
    assert backend.promote_due(t1 + 9) == []

    trs = backend.promote_due(t1 + 10)
    assert trs == [Transition(tid, "app.flaky", "q", S.RETRY, S.PENDING, None)]
    assert state(backend, tid) is S.PENDING
    t2 = clock.advance(10)
    d2 = claim_one(backend, t2, worker="w2")
    assert (d2.attempt, d2.deliveries) == (2, 2)
    trs = backend.fail(tid, d2.token, ErrorInfo("KeyError", "k"), t2, retry_at=t2 + 1)
    assert moves(trs) == [(S.RUNNING, S.FAILED), (S.FAILED, S.RETRY)]
    rec = backend.get(tid)
    assert rec is not None
    assert [a.number for a in rec.history] == [1, 2]
    assert rec.history[1].error == ErrorInfo("KeyError", "k")

    backend.promote_due(t2 + 1)
    d3 = claim_one(backend, t2 + 1, worker="w3")
    assert d3.attempt == 3
    backend.ack(tid, d3.token, 42, t2 + 2)
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.SUCCESS
    assert [(a.number, a.outcome) for a in rec.attempts()] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "SUCCESS"),
    ]


@pytest.mark.parametrize("offset", [0.0, -5.0], ids=["now", "past"])
def test_fail_with_retry_due_now_becomes_claimable(
    backend: Backend, clock: FakeClock, offset: float
) -> None:
    # A backend may requeue at once (RETRY -> PENDING inside fail) or on the next
    # promote_due; either way the chain is legal and the task is claimed, never lost.
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    trs = backend.fail(tid, d.token, BOOM, now, retry_at=now + offset)
    assert moves(trs)[:2] == [(S.RUNNING, S.FAILED), (S.FAILED, S.RETRY)]
    trs += backend.promote_due(now)
    assert moves(trs)[2:] == [(S.RETRY, S.PENDING)]
    assert state(backend, tid) is S.PENDING
    again = claim_one(backend, now)
    assert again.task_id == tid
    assert again.attempt == 2
    rec = backend.get(tid)
    assert rec is not None
    assert [a.outcome for a in rec.attempts()] == ["FAILED", "RUNNING"]


def test_claim_never_hands_out_a_retry_task(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    backend.fail(tid, d.token, BOOM, now, retry_at=now + 1)
    assert backend.claim(None, "w", LEASE, 10, now) == []
    assert backend.claim(None, "w", LEASE, 10, now + 1) == []  # due, but not yet promoted
    assert state(backend, tid) is S.RETRY


def test_fail_without_retry_or_dead_ends_failed(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    trs = backend.fail(tid, d.token, BOOM, now + 1)
    assert moves(trs) == [(S.RUNNING, S.FAILED)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.FAILED
    assert rec.finished_at == now + 1
    assert rec.error == BOOM
    assert backend.count_dead() == 0
    assert [a.outcome for a in rec.attempts()] == ["FAILED"]


def test_fail_with_dead_reason(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.bad", queue="q")
    d = claim_one(backend, now)
    trs = backend.fail(tid, d.token, BOOM, now, dead_reason="max_retries")
    assert moves(trs) == [(S.RUNNING, S.FAILED), (S.FAILED, S.DEAD)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.DEAD
    assert rec.dead_reason == "max_retries"
    assert rec.error == BOOM
    assert [r.id for r in backend.list_dead(ALL, now)] == [tid]
    assert backend.count_dead() == 1
    assert backend.count_dead(ALL, now) == 1


def test_list_and_count_dead_with_filters_and_paging(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    a = make_dead(backend, now, "max_retries", name="app.a", queue="q1")
    b = make_dead(backend, now + 1, "worker_lost", name="app.b", queue="q2")
    c = make_dead(backend, now + 2, "max_retries", name="app.a", queue="q2")
    put(backend, now, name="app.a", queue="q1")  # alive: never listed as dead
    later = now + 3
    assert [r.id for r in backend.list_dead(ALL, later)] == [c, b, a]  # newest first
    assert [r.id for r in backend.list_dead(ALL, later, offset=1, limit=1)] == [b]
    assert [r.id for r in backend.list_dead(ALL, later, offset=3)] == []
    by_task = parse_filter("task:app.a")
    assert [r.id for r in backend.list_dead(by_task, later)] == [c, a]
    assert backend.count_dead(by_task, later) == 2
    by_reason = parse_filter("reason:lost")
    assert [r.id for r in backend.list_dead(by_reason, later)] == [b]
    assert backend.count_dead(by_reason, later) == 1
    assert backend.count_dead(parse_filter("queue:q2 exc:ValueError"), later) == 2
    assert backend.count_dead(parse_filter("exc:KeyError"), later) == 0
    assert backend.count_dead(parse_filter("state:pending"), later) == 0
    assert backend.count_dead() == 3


def test_bury(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.gone")
    d = claim_one(backend, now)
    err = ErrorInfo("TaskNotRegistered", "app.gone")
    trs = backend.bury(tid, d.token, err, "unregistered", now + 1)
    assert moves(trs) == [(S.RUNNING, S.DEAD)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.DEAD
    assert rec.dead_reason == "unregistered"
    assert rec.error == err
    assert [r.id for r in backend.list_dead(parse_filter("reason:unregistered"), now)] == [tid]
    assert backend.bury(tid, d.token, err, "again", now) == []


# -- release -------------------------------------------------------------------------


def test_release_does_not_count_an_attempt(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, queue="q")
    d = claim_one(backend, now)
    trs = backend.release(tid, d.token, now, note="shutting down")
    assert moves(trs) == [(S.RUNNING, S.PENDING)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.PENDING
    assert (rec.attempt, rec.deliveries) == (0, 0)
    stats = {s.name: s for s in backend.queue_stats()}["q"]
    assert (stats.ready, stats.running) == (1, 0)
    d2 = claim_one(backend, now)
    assert d2.task_id == tid
    assert (d2.attempt, d2.deliveries) == (1, 1)
    assert d2.token != d.token
    assert backend.ack(tid, d.token, None, now) == []  # the released lease is dead


def test_release_leaves_no_phantom_attempt(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    backend.release(tid, d.token, now)
    rec = backend.get(tid)
    assert rec is not None
    assert rec.attempts() == []


def test_release_with_eta_delays(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    backend.release(tid, d.token, now, eta=now + 30, note="rate limited")
    assert state(backend, tid) is S.PENDING
    assert backend.claim(None, "w", LEASE, 1, now + 29) == []
    assert backend.next_due() == pytest.approx(now + 30)
    backend.promote_due(now + 30)
    assert claimed_ids(backend, now + 30) == [tid]


# -- leases --------------------------------------------------------------------------


def test_extend_leases_keeps_a_task_from_reclaim(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    other = put(backend, now)
    d = backend.claim(None, "w1", 10.0, 2, now)
    assert [x.task_id for x in d] == [tid, other]
    backend.extend_leases([(tid, d[0].token), (other, d[1].token + 999)], 10.0, now + 8)
    rec = backend.get(tid)
    assert rec is not None
    assert rec.lease_deadline == pytest.approx(now + 18)
    trs = backend.reclaim_expired(now + 12, max_deliveries=5)
    assert [t.task_id for t in trs] == [other]  # the wrong token renewed nothing
    assert state(backend, tid) is S.RUNNING
    assert backend.reclaim_expired(now + 17, max_deliveries=5) == []
    assert moves(backend.reclaim_expired(now + 18.5, max_deliveries=5)) == [(S.RUNNING, S.PENDING)]


def test_a_renewal_never_shortens_a_lease(backend: Backend, clock: FakeClock) -> None:
    # A heartbeat that took its time before a stall of the store reaches it after a
    # fresher renewal (the worker's check before starting the task): applied as it
    # came, it would end the lease in the past, and a peer would reclaim a task its
    # worker is starting.
    now = clock.now()
    tid = put(backend, now)
    d = backend.claim(None, "w1", 10.0, 1, now)[0]
    assert backend.renew_lease(tid, d.token, 10.0, now + 5)
    backend.extend_leases([(tid, d.token)], 10.0, now - 3)  # the stale heartbeat
    rec = backend.get(tid)
    assert rec is not None and rec.lease_deadline == pytest.approx(now + 15)
    assert backend.renew_lease(tid, d.token, 10.0, now + 1)  # held, past that time
    assert backend.reclaim_expired(now + 14, max_deliveries=5) == []
    assert state(backend, tid) is S.RUNNING
    assert moves(backend.reclaim_expired(now + 15.5, max_deliveries=5)) == [(S.RUNNING, S.PENDING)]


def test_reclaim_requeues_then_buries_worker_lost(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.heavy", queue="q")
    d1 = backend.claim(None, "w1", 10.0, 1, now)[0]
    assert backend.reclaim_expired(now + 9, max_deliveries=2) == []
    assert state(backend, tid) is S.RUNNING

    trs = backend.reclaim_expired(now + 11, max_deliveries=2)
    assert moves(trs) == [(S.RUNNING, S.PENDING)]
    assert trs[0].task_id == tid
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.PENDING
    assert rec.deliveries == 1
    assert [a.outcome for a in rec.history] == ["LOST"]
    assert rec.history[0].worker == "w1"
    stats = {s.name: s for s in backend.queue_stats()}["q"]
    assert (stats.ready, stats.running) == (1, 0)

    d2 = backend.claim(None, "w2", 10.0, 1, now + 11)[0]
    assert d2.task_id == tid
    assert d2.deliveries == 2
    assert d2.token != d1.token
    trs = backend.reclaim_expired(now + 22, max_deliveries=2)
    assert moves(trs) == [(S.RUNNING, S.DEAD)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.DEAD
    assert rec.dead_reason == "worker_lost"
    assert [r.id for r in backend.list_dead(parse_filter("reason:worker_lost"), now)] == [tid]
    assert backend.claim(None, "w3", 10.0, 1, now + 22) == []


def test_stale_worker_cannot_settle_a_reclaimed_task(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    old = backend.claim(None, "slow", 10.0, 1, now)[0]
    backend.reclaim_expired(now + 11, max_deliveries=5)
    new = backend.claim(None, "fresh", 10.0, 1, now + 11)[0]
    assert new.task_id == tid

    assert backend.ack(tid, old.token, "stale", now + 12) == []
    assert backend.fail(tid, old.token, BOOM, now + 12, retry_at=now + 20) == []
    assert backend.bury(tid, old.token, BOOM, "x", now + 12) == []
    assert backend.release(tid, old.token, now + 12) == []
    backend.extend_leases([(tid, old.token)], 1000.0, now + 12)
    rec = backend.get(tid)
    assert rec is not None
    assert rec.state is S.RUNNING
    assert rec.worker == "fresh"
    assert rec.lease_deadline == pytest.approx(now + 21)

    assert moves(backend.ack(tid, new.token, "ok", now + 13)) == [(S.RUNNING, S.SUCCESS)]
    rec = backend.get(tid)
    assert rec is not None
    assert rec.result == "ok"


# -- cancel --------------------------------------------------------------------------


def test_cancel_pending(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, name="app.c", queue="q")
    keep = put(backend, now, queue="q")
    trs = backend.cancel(tid, now + 1)
    assert len(trs) == 1
    assert (trs[0].task_id, trs[0].old, trs[0].new) == (tid, S.PENDING, S.CANCELLED)
    assert state(backend, tid) is S.CANCELLED
    assert claimed_ids(backend, now + 1) == [keep]
    assert backend.cancel(tid, now + 1) == []


def test_cancel_delayed_pending(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now, eta=now + 10)
    assert moves(backend.cancel(tid, now)) == [(S.PENDING, S.CANCELLED)]
    backend.promote_due(now + 20)
    assert backend.claim(None, "w", LEASE, 1, now + 20) == []
    assert state(backend, tid) is S.CANCELLED


def test_cancel_retry(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    tid = put(backend, now)
    d = claim_one(backend, now)
    backend.fail(tid, d.token, BOOM, now, retry_at=now + 10)
    assert moves(backend.cancel(tid, now + 1)) == [(S.RETRY, S.CANCELLED)]
    assert backend.promote_due(now + 20) == []
    assert backend.claim(None, "w", LEASE, 1, now + 20) == []
    assert state(backend, tid) is S.CANCELLED


def test_cancel_refuses_running_and_finished(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    running = put(backend, now)
    d = claim_one(backend, now)
    assert backend.cancel(running, now) == []
    assert state(backend, running) is S.RUNNING
    backend.ack(running, d.token, None, now)
    assert backend.cancel(running, now) == []
    assert state(backend, running) is S.SUCCESS
    dead = make_dead(backend, now)
    assert backend.cancel(dead, now) == []
    assert state(backend, dead) is S.DEAD


# -- records: listing, counts, retention -----------------------------------------------


def test_list_tasks_newest_first_with_filter_and_paging(backend: Backend, clock: FakeClock) -> None:
    start = clock.now()
    ids = [put(backend, start + i, queue="q1" if i % 2 else "q2") for i in range(6)]
    now = clock.advance(10)
    assert [r.id for r in backend.list_tasks(ALL, now)] == ids[::-1]
    assert [r.id for r in backend.list_tasks(ALL, now, offset=2, limit=2)] == ids[::-1][2:4]
    q1 = [r.id for r in backend.list_tasks(parse_filter("queue:q1"), now)]
    assert q1 == [ids[5], ids[3], ids[1]]
    d = claim_one(backend, now, queues=["q2"])
    running = backend.list_tasks(parse_filter("state:running"), now)
    assert [r.id for r in running] == [d.task_id]


def test_count_by_state_follows_the_lifecycle(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    for _ in range(6):
        put(backend, now)
    ds = backend.claim(None, "w", LEASE, 5, now)
    backend.ack(ds[0].task_id, ds[0].token, None, now)
    backend.fail(ds[1].task_id, ds[1].token, BOOM, now, retry_at=now + 5)
    backend.fail(ds[2].task_id, ds[2].token, BOOM, now, dead_reason="r")
    backend.fail(ds[3].task_id, ds[3].token, BOOM, now)
    counts = backend.count_by_state()
    assert {k: v for k, v in counts.items() if v} == {
        S.PENDING: 1,
        S.RUNNING: 1,
        S.SUCCESS: 1,
        S.RETRY: 1,
        S.DEAD: 1,
        S.FAILED: 1,
    }


def test_expire_drops_finished_records_after_result_ttl(backend: Backend, clock: FakeClock) -> None:
    backend.result_ttl = 100.0
    now = clock.now()
    dead = make_dead(backend, now)
    done, failed, running, retry = (put(backend, now) for _ in range(4))
    ds = {d.task_id: d for d in backend.claim(None, "w", 1000.0, 4, now)}
    assert set(ds) == {done, failed, running, retry}
    cancelled = put(backend, now)
    pending = put(backend, now)
    backend.ack(done, ds[done].token, "r", now)
    backend.fail(failed, ds[failed].token, BOOM, now)
    backend.fail(retry, ds[retry].token, BOOM, now, retry_at=now + 10_000)
    backend.cancel(cancelled, now)

    assert backend.expire(now + 50) == 0
    assert backend.get(done) is not None
    assert backend.expire(now + 101) == 3
    for gone in (done, failed, cancelled):
        assert backend.get(gone) is None
        assert backend.get_state(gone) is None
    for kept, st_ in ((running, S.RUNNING), (retry, S.RETRY), (pending, S.PENDING)):
        assert state(backend, kept) is st_
    assert state(backend, dead) is S.DEAD
    counts = backend.count_by_state()
    assert counts[S.SUCCESS] == 0
    assert counts[S.FAILED] == 0
    assert counts[S.DEAD] == 1
    assert backend.expire(now + 100_000) == 0
    assert state(backend, dead) is S.DEAD
    assert state(backend, pending) is S.PENDING


def test_expire_keeps_at_most_max_results_newest(backend: Backend, clock: FakeClock) -> None:
    backend.result_ttl = 1e9
    backend.max_results = 2
    now = clock.now()
    finished = []
    for i in range(5):
        tid = put(backend, now + i)
        d = claim_one(backend, now + i)
        backend.ack(tid, d.token, i, now + i)
        finished.append(tid)
    dead = make_dead(backend, now + 6)
    pending = put(backend, now + 6)
    assert backend.expire(now + 7) == 3
    assert [backend.get(t) is not None for t in finished] == [False, False, False, True, True]
    assert state(backend, dead) is S.DEAD
    assert state(backend, pending) is S.PENDING
    assert backend.count_by_state()[S.SUCCESS] == 2


def test_expire_never_drops_dead_or_pending(backend: Backend, clock: FakeClock) -> None:
    backend.result_ttl = 0.0
    backend.max_results = 0
    now = clock.now()
    dead = [make_dead(backend, now) for _ in range(3)]
    pending = [put(backend, now) for _ in range(3)]
    backend.expire(now + 1e6)
    assert all(state(backend, t) is S.DEAD for t in dead)
    assert all(state(backend, t) is S.PENDING for t in pending)
    assert backend.count_dead() == 3


# -- replay and purge ----------------------------------------------------------------


def test_replay_creates_a_new_pending_task(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    dead = make_dead(backend, now, name="app.r", queue="q")
    later = clock.advance(5)
    fresh = new_task("q", 0, name="app.r", args=["edited"])
    edit = {"args": ["edited"], "by": "ops"}
    trs = backend.replay(dead, fresh, edit, later)
    assert trs == [Transition(fresh.id, "app.r", "q", None, S.PENDING, None)]
    rec = backend.get(fresh.id)
    assert rec is not None
    assert rec.state is S.PENDING
    assert rec.replayed_from == dead
    assert rec.args == ["edited"]
    assert (rec.attempt, rec.deliveries) == (0, 0)
    old = backend.get(dead)
    assert old is not None
    assert old.state is S.DEAD
    assert old.replayed_to == (fresh.id,)
    assert len(old.edits) == 1
    assert edit.items() <= old.edits[0].items()
    assert claimed_ids(backend, later) == [fresh.id]

    again = new_task("q", 0, name="app.r")
    backend.replay(dead, again, None, later)
    old = backend.get(dead)
    assert old is not None
    assert old.replayed_to == (fresh.id, again.id)
    assert len(old.edits) == 1  # no edit, nothing appended
    assert backend.count_dead() == 1


def test_a_replay_once_is_refused_after_another_replay(backend: Backend, clock: FakeClock) -> None:
    # Two operators replay the same dead task at once: each read "never replayed", and
    # the store's check with the write lets one through.
    now = clock.now()
    dead = make_dead(backend, now, name="app.r", queue="q")
    first, second = new_task("q", 0, name="app.r"), new_task("q", 0, name="app.r")
    assert backend.replay(dead, first, None, now, after=0) != []
    assert backend.replay(dead, second, None, now, after=0) == []
    assert backend.get(second.id) is None  # nothing written
    old = backend.get(dead)
    assert old is not None and old.replayed_to == (first.id,)
    # Its id is free again (no owner key or index entry is left behind).
    assert backend.enqueue(second, now) != []
    # A count that matches lets the next replay through.
    third = new_task("q", 0, name="app.r")
    assert backend.replay(dead, third, None, now, after=1) != []


def test_replay_with_eta(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    dead = make_dead(backend, now)
    fresh = new_task(eta=now + 60)
    backend.replay(dead, fresh, None, now)
    assert backend.claim(None, "w", LEASE, 1, now) == []
    backend.promote_due(now + 60)
    assert claimed_ids(backend, now + 60) == [fresh.id]


def test_replay_refuses_a_task_that_is_not_dead(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    alive = put(backend, now)
    with pytest.raises(TaskNotFound):
        backend.replay(alive, new_task(), None, now)
    with pytest.raises(TaskNotFound):
        backend.replay("unknown", new_task(), None, now)
    assert backend.count_by_state()[S.PENDING] == 1


def test_purge_deletes_only_dead(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    d1 = make_dead(backend, now)
    d2 = make_dead(backend, now)
    alive = put(backend, now)
    assert backend.purge([d1, alive, "unknown"]) == 1
    assert backend.get(d1) is None
    assert state(backend, alive) is S.PENDING
    assert [r.id for r in backend.list_dead(ALL, now)] == [d2]
    assert backend.count_dead() == 1
    assert backend.count_by_state()[S.DEAD] == 1
    assert backend.purge([d1]) == 0
    assert backend.purge([d2]) == 1
    assert backend.count_dead() == 0


# -- keys and counters ---------------------------------------------------------------


def test_set_if_absent_with_ttl(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.set_if_absent("dedup:1", "task-a", 10.0, now) is None
    assert backend.set_if_absent("dedup:1", "task-b", 10.0, now + 5) == "task-a"
    assert backend.get_key("dedup:1", now + 9.9) == "task-a"
    assert backend.get_key("dedup:1", now + 10.1) is None
    assert backend.set_if_absent("dedup:1", "task-c", 10.0, now + 10.1) is None
    assert backend.get_key("dedup:1", now + 11) == "task-c"


def test_set_get_delete_key(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.get_key("k", now) is None
    backend.set_key("k", "v1", None, now)
    assert backend.get_key("k", now + 1e9) == "v1"  # no TTL: never expires
    backend.set_key("k", "v2", 5.0, now)
    assert backend.get_key("k", now + 4) == "v2"
    assert backend.get_key("k", now + 6) is None
    backend.set_key("k", "v3", None, now)
    backend.delete_key("k")
    assert backend.get_key("k", now) is None
    backend.delete_key("never-set")  # harmless


def test_compare_and_set(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.compare_and_set("b", "closed", "open", None, now) is False
    assert backend.get_key("b", now) is None
    assert backend.compare_and_set("b", None, "closed", None, now) is True
    assert backend.compare_and_set("b", None, "open", None, now) is False
    assert backend.compare_and_set("b", "closed", "open", 30.0, now) is True
    assert backend.get_key("b", now) == "open"
    assert backend.compare_and_set("b", "closed", "half", None, now) is False
    # Once the TTL has passed the key is absent: only expected=None matches.
    assert backend.compare_and_set("b", "open", "half", None, now + 31) is False
    assert backend.compare_and_set("b", None, "half", None, now + 31) is True
    assert backend.get_key("b", now + 31) == "half"


def test_reserve_burst_then_one_per_interval(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    rate, burst = 4.0, 3  # one token per 0.25 s
    waits = [backend.reserve("rl:x", rate, burst, now) for _ in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 0.75])
    # Another key is an independent bucket.
    assert backend.reserve("rl:y", rate, burst, now) == 0.0


def test_reserve_refills_at_the_rate(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    rate, burst = 2.0, 2  # one token per 0.5 s
    assert [backend.reserve("k", rate, burst, now) for _ in range(2)] == [0.0, 0.0]
    assert backend.reserve("k", rate, burst, now + 0.5) == 0.0  # one token came back
    assert backend.reserve("k", rate, burst, now + 0.5) == pytest.approx(0.5)
    # After a long idle time the whole burst is available again, never more.
    later = now + 100
    assert [backend.reserve("k", rate, burst, later) for _ in range(3)] == pytest.approx(
        [0.0, 0.0, 0.5]
    )


def test_reserve_callers_that_wait_get_exactly_the_rate(backend: Backend, clock: FakeClock) -> None:
    # Each caller waits what reserve() says, then goes: starts follow the GCRA schedule.
    start = clock.now()
    rate, burst = 10.0, 5
    starts = []
    for _ in range(25):
        now = clock.now()
        wait = backend.reserve("gcra", rate, burst, now)
        starts.append(now + wait)
    expected = [start] * burst + [start + (i + 1) / rate for i in range(20)]
    assert starts == pytest.approx(expected)


def test_reserve_with_burst_one(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    waits = [backend.reserve("one", 1.0, 1, now) for _ in range(3)]
    assert waits == pytest.approx([0.0, 1.0, 2.0])
    assert backend.reserve("one", 1.0, 1, now + 3) == 0.0


# -- workers and names ---------------------------------------------------------------


def test_heartbeat_workers_and_ttl(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    backend.heartbeat("w1", {"id": "w1", "busy": 1}, now, 10.0)
    backend.heartbeat("w2", {"id": "w2", "busy": 0}, now, 30.0)
    assert sorted(w["id"] for w in backend.workers(now)) == ["w1", "w2"]
    backend.heartbeat("w1", {"id": "w1", "busy": 2}, now + 5, 10.0)
    live = {w["id"]: w for w in backend.workers(now + 14)}
    assert live["w1"]["busy"] == 2
    assert sorted(live) == ["w1", "w2"]
    assert [w["id"] for w in backend.workers(now + 16)] == ["w2"]
    backend.forget_worker("w2")
    assert backend.workers(now + 16) == []
    backend.forget_worker("never-seen")


def test_register_and_known_names(backend: Backend) -> None:
    assert backend.known_names() == set()
    backend.register_names(["app.a", "app.b"])
    backend.register_names({"app.b", "app.c"})
    names = backend.known_names()
    assert names == {"app.a", "app.b", "app.c"}
    names.add("mutated")
    assert "mutated" not in backend.known_names()


# -- queue stats and peek ------------------------------------------------------------


def test_queue_stats(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    assert backend.queue_stats() == []
    for _ in range(3):
        put(backend, now, "b")
    put(backend, now, "a")
    put(backend, now, "a", eta=now + 100)
    claim_one(backend, now, queues=["b"])
    backend.set_paused("c", True)
    stats = backend.queue_stats()
    assert [s.name for s in stats] == ["a", "b", "c"]
    assert stats[0] == QueueStats("a", ready=1, delayed=1, running=0, paused=False)
    assert stats[1] == QueueStats("b", ready=2, delayed=0, running=1, paused=False)
    assert stats[2] == QueueStats("c", ready=0, delayed=0, running=0, paused=True)


def test_peek_shows_claim_order_without_claiming(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    ids = [put(backend, now, "q", p) for p in (3, 1, 2, 1)]
    put(backend, now, "other", 0)
    peeked = backend.peek("q", 3)
    assert [r.id for r in peeked] == [ids[1], ids[3], ids[2]]
    assert all(r.state is S.PENDING for r in peeked)
    assert [r.id for r in backend.peek("q", 10)] == [ids[1], ids[3], ids[2], ids[0]]
    assert backend.peek("missing", 5) == []
    assert backend.peek("q", 0) == []
    assert claimed_ids(backend, now, ["q"]) == [ids[1], ids[3], ids[2], ids[0]]
    assert backend.peek("q", 5) == []


# -- random operations keep counts, states and transitions consistent ------------------

OPS = st.sampled_from(
    [
        "enqueue",
        "enqueue",
        "enqueue",
        "enqueue_delayed",
        "claim",
        "claim",
        "claim",
        "ack",
        "ack_stale",
        "fail_retry",
        "fail_retry_now",
        "fail_dead",
        "fail_final",
        "bury",
        "release",
        "extend",
        "cancel",
        "advance",
        "promote",
        "reclaim",
        "expire",
        "replay",
        "purge",
        "pause",
    ]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), ops=st.lists(OPS, min_size=10, max_size=80))
def test_random_operations_keep_counts_consistent(
    backend_factory: Callable[[], Backend], clock: FakeClock, data: st.DataObject, ops: list[str]
) -> None:
    backend = backend_factory()
    backend.result_ttl = 20.0
    backend.max_results = 5
    now = clock.now()
    model: dict[str, TaskState] = {}  # the state each task reached, per the transitions
    leases: dict[str, int] = {}

    def apply(trs: list[Transition]) -> None:
        for tr in trs:
            assert model.get(tr.task_id) == tr.old, tr
            if tr.old is not None:
                assert tr.new in TRANSITIONS[tr.old], tr
            model[tr.task_id] = tr.new
            if tr.new is not S.RUNNING:
                leases.pop(tr.task_id, None)

    def check() -> None:
        # Records removed by expire/purge leave the model; nothing else may vanish.
        for tid in list(model):
            if backend.get_state(tid) is None:
                assert model[tid] in (S.SUCCESS, S.FAILED, S.CANCELLED, S.DEAD), model[tid]
                del model[tid]
        records = backend.list_tasks(ALL, now, limit=1_000_000)
        actual = {r.id: r.state for r in records}
        assert actual == model
        counts = {k: v for k, v in backend.count_by_state().items() if v}
        assert counts == dict(Counter(actual.values()))
        # The sorted listing's totals per state (the index's counters) follow too.
        for st_, n in counts.items():
            page = backend.task_page(TaskFilter(states=frozenset({st_})), now, "state", limit=n)
            assert (page.total, len(page.records), page.next_after) == (n, n, None), st_
        assert backend.count_dead() == sum(1 for s in actual.values() if s is S.DEAD)
        stats = backend.queue_stats()
        assert sum(s.running for s in stats) == sum(1 for s in actual.values() if s is S.RUNNING)

    def pick(ids: list[str]) -> str | None:
        return data.draw(st.sampled_from(sorted(ids))) if ids else None

    def in_state(*states: TaskState) -> list[str]:
        return [t for t, s in model.items() if s in states]

    for op in ops:
        queue = data.draw(st.sampled_from(["a", "b"]))
        if op in ("enqueue", "enqueue_delayed"):
            eta = now + data.draw(st.integers(1, 30)) if op == "enqueue_delayed" else None
            apply(backend.enqueue(new_task(queue, data.draw(st.integers(0, 2)), eta=eta), now))
        elif op == "claim":
            limit = data.draw(st.integers(1, 3))
            queues = data.draw(st.sampled_from([None, [queue], ["b", "a"]]))
            for d in backend.claim(queues, "w", 10.0, limit, now):
                apply([Transition(d.task_id, d.name, d.queue, S.PENDING, S.RUNNING)])
                leases[d.task_id] = d.token
        elif op in (
            "ack",
            "fail_retry",
            "fail_retry_now",
            "fail_dead",
            "fail_final",
            "bury",
            "release",
        ):
            tid = pick(list(leases))
            if tid is None:
                continue
            token = leases[tid]
            if op == "ack":
                trs = backend.ack(tid, token, None, now)
            elif op == "fail_retry":
                trs = backend.fail(tid, token, BOOM, now, retry_at=now + 5)
            elif op == "fail_retry_now":
                trs = backend.fail(tid, token, BOOM, now, retry_at=now)
            elif op == "fail_dead":
                trs = backend.fail(tid, token, BOOM, now, dead_reason="max_retries")
            elif op == "fail_final":
                trs = backend.fail(tid, token, BOOM, now)
            elif op == "bury":
                trs = backend.bury(tid, token, BOOM, "unregistered", now)
            else:
                trs = backend.release(tid, token, now)
            assert trs, op
            apply(trs)
        elif op == "ack_stale":
            tid = pick(list(leases))
            if tid is not None:
                assert backend.ack(tid, leases[tid] + 10_000, None, now) == []
        elif op == "extend":
            backend.extend_leases(list(leases.items()), 10.0, now)
        elif op == "cancel":
            tid = pick(list(model))
            if tid is not None:
                trs = backend.cancel(tid, now)
                assert bool(trs) == (model[tid] in (S.PENDING, S.RETRY))
                apply(trs)
        elif op == "advance":
            now = clock.advance(data.draw(st.sampled_from([1.0, 6.0, 11.0, 25.0])))
        elif op == "promote":
            apply(backend.promote_due(now))
        elif op == "reclaim":
            apply(backend.reclaim_expired(now, max_deliveries=2))
        elif op == "expire":
            backend.expire(now)
        elif op == "replay":
            tid = pick(in_state(S.DEAD))
            if tid is not None:
                apply(backend.replay(tid, new_task(queue), None, now))
        elif op == "purge":
            tid = pick(in_state(S.DEAD))
            if tid is not None:
                assert backend.purge([tid]) == 1
        elif op == "pause":
            backend.set_paused(queue, data.draw(st.booleans()))

        check()

    # Finally every task still owed a run must be claimable: nothing lost or wedged.
    now = clock.advance(1000)
    apply(backend.reclaim_expired(now, max_deliveries=1_000_000))
    for queue in ("a", "b"):
        backend.set_paused(queue, False)
    apply(backend.promote_due(now))
    for d in backend.claim(None, "drain", 10.0, 1_000_000, now):
        apply([Transition(d.task_id, d.name, d.queue, S.PENDING, S.RUNNING)])
    check()
    assert not in_state(S.PENDING, S.RETRY)
    assert backend.next_due() is None
    assert all(s.ready == s.delayed == 0 for s in backend.queue_stats())


# -- tasks waiting for a time ----------------------------------------------------------


def test_waiting_lists_delayed_and_retry_tasks_soonest_first_behind_ready_ones(
    backend: Backend, clock: FakeClock
) -> None:
    # Scheduled and Retry in the console: the tasks due next, even behind hundreds of
    # newer ready tasks (a listing of the newest records would show none of them).
    now = clock.now()

    def retry(queue: str, at: float) -> str:
        tid = put(backend, now, queue=queue)
        d = claim_one(backend, now, queues=[queue])
        backend.fail(tid, d.token, BOOM, now, retry_at=at)
        return tid

    # Queue "a" holds many RETRY tasks before its first delayed one: a reader that
    # takes a few due times per queue must not answer from "b" alone.
    retries = [retry("a", now + 10 + i) for i in range(6)]
    later_a = put(backend, now, queue="a", eta=now + 40)
    sooner_b = put(backend, now, queue="b", eta=now + 30)
    latest_b = put(backend, now, queue="b", eta=now + 50)
    for _ in range(300):
        put(backend, now + 1, queue="b")  # ready, and newer than every waiting task
    pending = [r.id for r in backend.waiting(S.PENDING, now + 1, 2)]
    assert pending == [sooner_b, later_a]
    assert [r.id for r in backend.waiting(S.PENDING, now + 1, 10)] == [sooner_b, later_a, latest_b]
    assert [r.id for r in backend.waiting(S.RETRY, now + 1, 4)] == retries[:4]
    # Due by now: not waiting any more (ready, though it keeps its eta).
    assert [r.id for r in backend.waiting(S.PENDING, now + 45, 10)] == [latest_b]
    assert backend.waiting(S.PENDING, now + 1, 0) == []
