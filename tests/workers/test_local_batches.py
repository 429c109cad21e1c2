"""Local thread pools claim and acknowledge in batches, and lose nothing when a worker dies."""

from __future__ import annotations

import collections
import threading
from typing import Any

import pytest

from dtq_core import TaskState, task
from dtq_core.registry import Registry
from dtq_core.workers import thread as thread_pool
from tests.conftest import BrokerFactory, EventLog

pytestmark = pytest.mark.timeout(60)

S = TaskState


class Counting:
    """Wraps a backend's claim and ack calls to count them (and the tasks they carry)."""

    def __init__(self, backend: Any) -> None:
        self.claims: list[int] = []
        self.ack_batches: list[int] = []
        self.single_acks = 0
        self._claim, self._ack_many, self._ack = backend.claim, backend.ack_many, backend.ack
        backend.claim, backend.ack_many, backend.ack = self.claim, self.ack_many, self.ack

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        out = self._claim(*args, **kwargs)
        if out:
            self.claims.append(len(out))
        return out

    def ack_many(self, acks: Any, *args: Any, **kwargs: Any) -> Any:
        self.ack_batches.append(len(acks))
        return self._ack_many(acks, *args, **kwargs)

    def ack(self, *args: Any, **kwargs: Any) -> Any:
        self.single_acks += 1
        return self._ack(*args, **kwargs)


def test_a_busy_pool_claims_and_acknowledges_in_batches_and_every_figure_stays_exact(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="lb.echo", registry=registry)
    def echo(i: int) -> int:
        return i

    n = 600
    b = make_broker(num_workers=4)
    calls = Counting(b.backend)
    log = EventLog(b)
    b.open()
    results = echo.apply_many([(i,) for i in range(n)], broker=b)  # a backlog, then workers
    b.start()
    assert [r.get(timeout=30) for r in results] == list(range(n))
    summary = b.stop()

    # Batches: far fewer claims and ack calls than tasks, none acknowledged one by one.
    assert sum(calls.claims) == n and len(calls.claims) < n / 4
    assert sum(calls.ack_batches) == n and len(calls.ack_batches) < n / 4
    assert calls.single_acks == 0
    # Exact all the same: each task's events once and in order, the counters, the summary.
    for r in results:
        assert log.transitions(r.id) == [
            (None, S.PENDING),
            (S.PENDING, S.RUNNING),
            (S.RUNNING, S.SUCCESS),
        ]
    seqs = [e.seq for e in log.events]
    assert len(set(seqs)) == len(seqs) == 3 * n
    counts = b.metrics.counters()
    assert (counts["enqueued"], counts["started"], counts["succeeded"]) == (n, n, n)
    assert summary.processed == n and summary.failed == 0


def test_a_worker_that_dies_holding_a_claimed_batch_loses_nothing_and_acks_nothing_twice(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    ran: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    @task(name="lb.count", registry=registry)
    def count(i: int) -> int:
        with lock:
            ran[i] += 1
        return i

    n = 60
    b = make_broker(num_workers=2, prefetch=8, lease_s=1.0, heartbeat_s=0.2)
    log = EventLog(b)
    real = b.backend.claim
    held: list[str] = []

    def claim(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if out and not held:
            # The worker's loop dies with the batch leased to it and nowhere else.
            held.extend(d.task_id for d in out)
            raise TypeError("a bug between the claim and the pool")
        return out

    b.backend.claim = claim  # type: ignore[method-assign]
    b.open()
    results = count.apply_many([(i,) for i in range(n)], broker=b)
    b.start()
    assert [r.get(timeout=30) for r in results] == list(range(n))
    b.stop()

    assert len(held) == 8
    assert b.pool is not None and sum(w.restarts for w in b.pool.workers) == 1
    # Every task ran once: the held batch after its leases ran out, the others at once.
    assert ran == collections.Counter(range(n))
    for r in results:
        trs = log.transitions(r.id)
        assert trs.count((S.RUNNING, S.SUCCESS)) == 1, (r.id, trs)
        if r.id in held:
            assert (S.RUNNING, S.PENDING) in trs  # reclaimed: the lease expired
    assert b.metrics.counters()["succeeded"] == n


def test_a_worker_that_dies_with_acks_waiting_leaves_them_to_the_pool(
    make_broker: BrokerFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(name="lb.one", registry=registry)
    def one(i: int) -> int:
        return i

    n = 40
    # A long ack delay: successes wait in the buffer when the loop dies.
    b = make_broker(num_workers=1, prefetch=4, lease_s=1.0, heartbeat_s=0.2, ack_delay_s=0.5)
    log = EventLog(b)
    real_from_ahead = thread_pool.ThreadPool._from_ahead
    dead: list[str] = []

    def from_ahead(pool: Any, d: Any) -> Any:  # a task taken from those claimed ahead
        acks = pool.acks
        if not dead and acks is not None and len(acks) >= 2:  # successes are waiting
            dead.append(d.task_id)
            raise RuntimeError("a bug before the task starts")
        return real_from_ahead(pool, d)

    monkeypatch.setattr(thread_pool.ThreadPool, "_from_ahead", from_ahead)
    b.open()
    results = one.apply_many([(i,) for i in range(n)], broker=b)
    b.start()
    assert [r.get(timeout=30) for r in results] == list(range(n))
    b.stop()

    assert dead and b.pool is not None and b.pool.workers[0].restarts == 1
    for r in results:
        trs = log.transitions(r.id)
        assert trs.count((S.RUNNING, S.SUCCESS)) == 1, (r.id, trs)
        assert ((S.RUNNING, S.PENDING) in trs) == (r.id in dead)  # only it was reclaimed
    assert b.metrics.counters()["succeeded"] == n


def test_one_thread_at_a_time_waits_in_the_store(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="lb.quick", registry=registry)
    def quick(i: int) -> int:
        return i

    b = make_broker(num_workers=4)
    real = b.backend.claim
    cond = threading.Condition()
    inside = {"now": 0, "most": 0}

    def claim(*args: Any, **kwargs: Any) -> Any:
        with cond:
            inside["now"] += 1
            inside["most"] = max(inside["most"], inside["now"])
            cond.notify_all()
        try:
            return real(*args, **kwargs)
        finally:
            with cond:
                inside["now"] -= 1
                cond.notify_all()

    b.backend.claim = claim  # type: ignore[method-assign]
    b.start()
    for i in range(200):  # one at a time: every enqueue finds the pool idle
        assert quick.apply_async((i,), broker=b).get(timeout=10) == i
    with cond:
        # Idle: one thread blocks in the store (an enqueue wakes only it), the others
        # wait in the pool for what it claims.
        assert cond.wait_for(lambda: inside["now"] == 1, timeout=10)
    assert inside["most"] == 1


def test_a_store_that_fails_claims_for_a_while_is_retried_and_nothing_is_lost(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    from dtq_core.errors import BackendError

    @task(name="lb.after_outage", registry=registry)
    def after_outage(i: int) -> int:
        return i

    b = make_broker(num_workers=4)
    real = b.backend.claim
    failures = {"left": 3}

    def claim(*args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise BackendError("store unreachable")
        return real(*args, **kwargs)

    b.backend.claim = claim  # type: ignore[method-assign]
    b.open()
    results = after_outage.apply_many([(i,) for i in range(100)], broker=b)
    b.start()
    assert [r.get(timeout=30) for r in results] == list(range(100))
    assert failures["left"] == 0
    assert b.stop().processed == 100


def test_a_success_waits_no_longer_than_the_delay_while_its_thread_runs_a_long_task(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    release = threading.Event()

    @task(name="lb.quick_one", registry=registry)
    def quick_one() -> str:
        return "done"

    @task(name="lb.long_one", registry=registry)
    def long_one() -> str:
        assert release.wait(20)
        return "late"

    # One thread claims both at once: the quick success waits in the buffer while the
    # same thread runs the long task; the buffer's thread stores it after the delay.
    b = make_broker(num_workers=1, prefetch=2, ack_delay_s=0.05)
    b.open()
    quick = quick_one.apply_async((), broker=b)
    slow = long_one.apply_async((), broker=b)
    b.start()
    try:
        assert quick.get(timeout=10) == "done"
        assert slow.state is S.RUNNING
    finally:
        release.set()
    assert slow.get(timeout=10) == "late"
