"""A ``worker_lost`` dead letter names the tasks that ran in the same worker process.

Runs on every backend (the contract fixtures of this package).
"""

from __future__ import annotations

from dtq_core.backends.base import Backend, NewTask
from dtq_core.clock import FakeClock
from dtq_core.reliability.deadletter import group_by_cause
from dtq_core.task import TaskState

S = TaskState


def _send(b: Backend, tid: str, name: str, now: float) -> None:
    b.enqueue(NewTask(tid, name, "default", 0, b'{"v":1,"args":[],"kwargs":{}}'), now)


def test_worker_lost_names_the_tasks_beside_it(backend: Backend, clock: FakeClock) -> None:
    now = clock.now()
    for tid, name in [("poison", "p.kill"), ("a", "p.rec"), ("x", "p.rec"), ("b", "p.rec")]:
        _send(backend, tid, name, now)
    # Process 1 runs the poison and "a" on two threads, then "b" (claimed a bit later);
    # process 2 runs "x". Process 1 dies: its leases run out.
    (p,) = backend.claim(None, "host:1:t0", 10.0, 1, now)
    (a,) = backend.claim(None, "host:1:t1", 10.0, 1, now)
    (x,) = backend.claim(None, "host:2:t0", 100.0, 1, now)
    clock.advance(3.0)
    (bb,) = backend.claim(None, "host:1:t2", 10.0, 1, clock.now())
    assert [d.task_id for d in (p, a, x, bb)] == ["poison", "a", "x", "b"]

    # The first two expire together, "b" a bit later: it is still named beside them.
    clock.advance(8.0)
    trs = backend.reclaim_expired(clock.now(), max_deliveries=1)
    assert {t.task_id for t in trs} == {"poison", "a"}
    clock.advance(3.0)
    (tb,) = backend.reclaim_expired(clock.now(), max_deliveries=1)
    assert tb.task_id == "b" and tb.new is S.DEAD

    def beside(tid: str) -> set[tuple[str, str]]:
        rec = backend.get(tid)
        assert rec is not None and rec.state is S.DEAD and rec.dead_reason == "worker_lost"
        assert rec.error is not None and rec.error.type == "WorkerLost"
        return set(rec.error.beside)

    assert beside("poison") == {("a", "p.rec"), ("b", "p.rec")}
    assert beside("a") == {("poison", "p.kill"), ("b", "p.rec")}
    assert beside("b") == {("poison", "p.kill"), ("a", "p.rec")}
    # "x" ran in another process: never named, and still running.
    rec_x = backend.get("x")
    assert rec_x is not None and rec_x.state is S.RUNNING

    recs = [r for r in (backend.get(t) for t in ("a", "b")) if r is not None]
    (group,) = group_by_cause(recs)
    assert group.beside[0] == ("p.kill", 2)  # the poison is beside every lost task
