"""Handoff: a task enqueued while a worker waits is leased to it by the enqueue itself.

A worker about to block in ``claim(..., wait>0)`` registers as idle on each queue it
serves (member ``"<lease_s>|<worker>"`` of ``{prefix:queue}:idle``, scored by the end of
its wait) and blocks on its inbox ``{prefix:queue}:inbox:<worker>``; the enqueue script
leases a new task to the first idle worker and pushes the delivery there, so the
wake-up brings the task. The next claim ends the registration and collects what is left
in the inbox; ``leave`` does that for a worker thread that stops.

Worker and producer are separate backends (separate connection pools), like separate
processes; a plain client reads the keys behind their backs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from redis.connection import AbstractConnection

from dtq_core import Broker, BrokerConfig, task
from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from dtq_core.workers.thread import ThreadPool
from tests.backends.redis.cluster import wait_for
from tests.backends.redis.conftest import ClusterFactory

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

S = TaskState
NAME = "h.job"
LEASE = 30.0


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def prod(make_be: Any) -> RedisBackend:
    """The producer's backend (another connection pool, as another process)."""
    return make_be()  # type: ignore[no-any-return]


def new(tid: str, queue: str = "q", payload: bytes = b"{}", **kw: Any) -> NewTask:
    return NewTask(tid, kw.pop("name", NAME), queue, 0, payload, **kw)


def member(worker: str, lease_s: float = LEASE) -> str:
    return f"{lease_s!r}|{worker}"


def idle_key(be: RedisBackend, queue: str) -> str:
    return be.keys.queue(queue)["idle"]


def counts(plain: Any, be: RedisBackend, queue: str) -> dict[str, int]:
    h = plain.hgetall(be.keys.queue(queue)["counts"])
    return {k: int(v) for k, v in h.items() if int(v)}


def events(plain: Any, be: RedisBackend, queue: str, tid: str) -> list[tuple[str, str, str]]:
    """``(old, new, worker)`` of one task's entries in its queue's event stream."""
    rows = plain.xrange(be.keys.queue(queue)["events"])
    return [(f.get("old", ""), f["new"], f.get("worker", "")) for _, f in rows if f["id"] == tid]


def inbox(plain: Any, be: RedisBackend, queue: str, worker: str) -> list[str]:
    """What an inbox holds that a claim would deliver (wake-up marks ``!`` left out)."""
    return [x for x in plain.lrange(be.keys.inbox(queue, worker), 0, -1) if x != "!"]


def register_idle(
    be: RedisBackend, queue: str, worker: str, now: float, until: float, lease_s: float = LEASE
) -> int:
    """The IDLE script on its own: ``worker`` registered as idle until ``until``.

    1 when work is there already (not registered), else 0.
    """
    flag, _left = be._idle(
        keys=[be.keys.tag(queue)],
        args=[member(worker, lease_s), repr(now), repr(until), worker],
    )
    return int(flag)


class Waiter:
    """A worker thread blocked in ``claim(queues, worker, ..., wait=wait)``."""

    def __init__(
        self,
        be: RedisBackend,
        queues: list[str] | None,
        worker: str,
        wait: float = 2.5,
        limit: int = 1,
        lease_s: float = LEASE,
        watch: list[str] | None = None,
    ) -> None:
        self.be, self.queues, self.worker = be, queues, worker
        self.watch = watch if watch is not None else queues or []
        self.wait, self.limit, self.lease_s = wait, limit, lease_s
        self.result: list[Delivery] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.be.claim(
                self.queues, self.worker, self.lease_s, self.limit, time.time(), self.wait
            )
        except BaseException as exc:
            self.error = exc

    def start(self, plain: Any) -> Waiter:
        """Start, and return once the worker is registered idle on each of its queues."""
        self.thread.start()
        m = member(self.worker, self.lease_s)
        for q in self.watch:
            key = idle_key(self.be, q)

            def registered(key: str = key) -> bool:
                return plain.zscore(key, m) is not None or self.result is not None

            wait_for(registered, 5, f"{self.worker} to register idle on {q}", step=0.005)
        return self

    def join(self, timeout: float = 5.0) -> list[Delivery]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the claim did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# -- the wait receives the task -------------------------------------------------------------


def test_a_waiting_claim_receives_a_task_enqueued_meanwhile(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    payload = b'{"args": [1]}\nsecond line\n\nthird'  # newlines survive the inbox framing
    w = Waiter(be, ["q"], "w1").start(plain)
    t_enq = time.time()
    prod.enqueue(new("t1", payload=payload, time_limit=7.5, max_retries=2), t_enq)
    (d,) = w.join()

    assert (d.task_id, d.name, d.queue, d.payload) == ("t1", NAME, "q", payload)
    assert (d.attempt, d.deliveries) == (1, 1)
    assert (d.time_limit, d.max_retries) == (7.5, 2)
    assert d.enqueued_at == pytest.approx(t_enq, abs=1e-6)
    rec = be.get("t1")
    assert rec is not None
    assert rec.state is S.RUNNING
    assert rec.worker == "w1"
    assert d.token == rec.lease_token > 0
    assert (rec.attempt, rec.deliveries) == (1, 1)
    assert rec.lease_deadline == pytest.approx(t_enq + LEASE, abs=1e-6)
    score = plain.zscore(be.keys.queue("q")["leases"], "t1")
    assert score == pytest.approx(t_enq + LEASE, abs=1e-6)
    assert counts(plain, be, "q") == {"RUNNING": 1}
    assert be.count_by_state()[S.PENDING] == 0 and be.count_by_state()[S.RUNNING] == 1
    assert events(plain, be, "q", "t1") == [("", "PENDING", ""), ("PENDING", "RUNNING", "w1")]
    # Handed over, not queued: nothing ready, nothing left in the inbox or the idle set.
    assert plain.zcard(be.keys.queue("q")["ready"]) == 0
    assert inbox(plain, be, "q", "w1") == []
    assert plain.zscore(idle_key(be, "q"), member("w1")) is None
    totals = plain.hgetall(be.keys.queue("q")["totals"])
    assert (int(totals["enqueued"]), int(totals["started"])) == (1, 1)


def test_the_wait_and_the_task_it_receives_are_one_round_trip(
    be: RedisBackend, prod: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    be.claim(["q"], "w1", LEASE, 1, time.time())  # a pooled connection, ready to use
    real_send: Any = AbstractConnection.send_packed_command
    real_pipeline = be.r.pipeline
    w = Waiter(be, ["q"], "w1")
    sent: list[bytes] = []
    pipelines = 0

    def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> Any:
        if threading.current_thread() is w.thread:
            raw = command if isinstance(command, bytes) else b"".join(map(bytes, command))
            if b"PING" not in raw and b"CLIENT" not in raw and b"HELLO" not in raw:
                sent.append(raw)
        return real_send(conn, command, check_health)

    def pipeline(*a: Any, **kw: Any) -> Any:
        nonlocal pipelines
        if threading.current_thread() is w.thread:
            pipelines += 1
        return real_pipeline(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(AbstractConnection, "send_packed_command", send_packed_command)
        m.setattr(be.r, "pipeline", pipeline)
        w.start(plain)
        prod.enqueue(new("t1"), time.time())
        (d,) = w.join()
    # Restored.
    assert AbstractConnection.send_packed_command is real_send
    assert be.r.pipeline == real_pipeline

    assert d.task_id == "t1"
    # A claim that finds nothing, then the wait: registration and BLPOP in one write;
    # the task came with the wake-up (no claim after it).
    assert len(sent) == 2, sent
    assert b"BLPOP" not in sent[0]
    assert b"BLPOP" in sent[1] and be._idle.sha.encode() in sent[1]
    assert pipelines == 1


def test_a_handed_task_is_acknowledged_like_a_claimed_one(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    w = Waiter(be, ["q"], "w1").start(plain)
    prod.enqueue(new("t1"), time.time())
    (d,) = w.join()
    assert be.ack(d.task_id, d.token, {"ok": 1}, time.time()) == [
        Transition("t1", NAME, "q", S.RUNNING, S.SUCCESS)
    ]
    rec = be.get("t1")
    assert rec is not None
    assert rec.state is S.SUCCESS and rec.result == {"ok": 1}
    assert rec.lease_deadline is None
    assert plain.zcard(be.keys.queue("q")["leases"]) == 0
    assert counts(plain, be, "q") == {"SUCCESS": 1}
    assert events(plain, be, "q", "t1")[-1] == ("RUNNING", "SUCCESS", "w1")
    # Once only.
    assert be.ack(d.task_id, d.token, {"ok": 2}, time.time()) == []


# -- what is not handed over --------------------------------------------------------------


def test_no_handoff_to_a_paused_queue(be: RedisBackend, prod: RedisBackend, plain: Any) -> None:
    prod.set_paused("q", True)
    w = Waiter(be, ["q"], "w1").start(plain)
    prod.enqueue(new("t1"), time.time())
    assert w.join() == []  # woken by the notify list, but the queue is paused
    assert be.get_state("t1") is S.PENDING
    rec = be.get("t1")
    assert rec is not None and rec.worker is None and rec.attempt == 0
    assert inbox(plain, be, "q", "w1") == []
    assert counts(plain, be, "q") == {"PENDING": 1}
    assert be.claim(["q"], "w1", LEASE, 1, time.time()) == []

    prod.set_paused("q", False)
    (d,) = be.claim(["q"], "w1", LEASE, 1, time.time())
    assert (d.task_id, d.attempt, d.deliveries) == ("t1", 1, 1)
    assert counts(plain, be, "q") == {"RUNNING": 1}


def test_an_enqueue_with_no_worker_registered_pushes_no_wake_up(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    # A blocking claim registers as idle before it blocks, so with nobody registered
    # nobody is blocked on the notify list: the enqueue leaves it alone.
    notify = be.keys.queue("q")["notify"]
    prod.enqueue(new("t1"), time.time())
    assert plain.llen(notify) == 0
    # A claim that waits afterwards is not kept waiting: the task is ready.
    t0 = time.monotonic()
    (d,) = Waiter(be, ["q"], "w1", wait=10.0).start(plain).join()
    assert d.task_id == "t1" and time.monotonic() - t0 < 5.0
    # Registered but not handed the task (its wait ended by our clock): a worker may
    # still be blocked (another host's clock), so the wake-up is pushed.
    t = 1_000_000.0
    assert register_idle(be, "q", "w2", t, t + 1.0) == 0
    prod.enqueue(new("t2"), t + 2.0)
    assert plain.llen(notify) == 1
    assert inbox(plain, be, "q", "w2") == []


def test_a_registration_whose_wait_has_ended_gets_nothing(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    t0 = 1_000_000.0
    assert register_idle(be, "q", "w1", t0, t0 + 1.0) == 0
    prod.enqueue(new("late"), t0 + 2.0)  # after the end of w1's wait
    assert be.get_state("late") is S.PENDING
    assert [r.id for r in be.peek("q", 10)] == ["late"]
    assert inbox(plain, be, "q", "w1") == []

    # A registration still waiting at the enqueue is handed the task (same script).
    assert register_idle(be, "q", "w2", t0 + 2.0, t0 + 10.0) == 1  # work is ready: no wait
    assert be.claim(["q"], "w9", LEASE, 1, t0 + 2.0)[0].task_id == "late"
    assert register_idle(be, "q", "w2", t0 + 2.0, t0 + 10.0) == 0
    prod.enqueue(new("on-time"), t0 + 3.0)
    rec = be.get("on-time")
    assert rec is not None and rec.state is S.RUNNING and rec.worker == "w2"
    assert len(inbox(plain, be, "q", "w2")) == 1


@pytest.mark.parametrize(
    ("tid", "name"), [("nl\nid", NAME), ("plain-id", "h.nl\nname")], ids=["id", "name"]
)
def test_a_task_with_a_newline_is_not_handed_over_but_still_runs(
    be: RedisBackend, prod: RedisBackend, plain: Any, tid: str, name: str
) -> None:
    w = Waiter(be, ["q"], "w1").start(plain)
    prod.enqueue(new(tid, name=name), time.time())
    (d,) = w.join()  # woken by the notify list: claimed from the ready set
    assert (d.task_id, d.name, d.attempt, d.deliveries) == (tid, name, 1, 1)
    assert inbox(plain, be, "q", "w1") == []
    rec = be.get(tid)
    assert rec is not None and rec.state is S.RUNNING and rec.worker == "w1"
    assert rec.lease_token == d.token
    assert be.ack(d.task_id, d.token, 1, time.time())
    assert be.get_state(tid) is S.SUCCESS


def test_a_delayed_task_is_not_handed_over(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    t0 = 1_000_000.0
    register_idle(be, "q", "w1", t0, t0 + 100.0)
    prod.enqueue(new("later", eta=t0 + 50.0), t0)
    assert be.get_state("later") is S.PENDING
    assert inbox(plain, be, "q", "w1") == []
    assert plain.zscore(be.keys.queue("q")["delayed"], "later") == t0 + 50.0


# -- several queues ------------------------------------------------------------------------------


def two_queues(be: RedisBackend, prod: RedisBackend, plain: Any) -> None:
    """Queues qa and qb known to everyone, empty, and no wake-up pending."""
    prod.enqueue_many([new("da", "qa"), new("db", "qb")], time.time())
    for d in be.claim(["qa", "qb"], "w0", LEASE, 2, time.time()):
        assert be.ack(d.task_id, d.token, None, time.time())
    plain.delete(be.keys.new_queues)


def check_both_once(be: RedisBackend, plain: Any, got: list[Delivery]) -> None:
    assert sorted(d.task_id for d in got) == ["ta", "tb"]
    for d in got:
        rec = be.get(d.task_id)
        assert rec is not None and rec.state is S.RUNNING and rec.worker == "w1"
        assert (rec.lease_token, rec.attempt, rec.deliveries) == (d.token, 1, 1)
        assert be.ack(d.task_id, d.token, d.task_id, time.time())
    for q in ("qa", "qb"):
        assert counts(plain, be, q) == {"SUCCESS": 2}  # with the warm-up task
        assert inbox(plain, be, q, "w1") == []


def test_one_worker_waiting_on_two_queues_gets_both_tasks_once(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    two_queues(be, prod, plain)
    w = Waiter(be, ["qa", "qb"], "w1").start(plain)
    prod.enqueue_many([new("ta", "qa"), new("tb", "qb")], time.time())
    first = w.join()
    second = be.claim(["qa", "qb"], "w1", LEASE, 1, time.time())
    assert len(first) == 1 and len(second) == 1
    assert be.claim(["qa", "qb"], "w1", LEASE, 1, time.time()) == []
    check_both_once(be, plain, first + second)


def test_one_worker_waiting_on_every_queue_gets_the_second_task_by_the_next_claim(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    two_queues(be, prod, plain)
    w = Waiter(be, None, "w1", watch=["qa", "qb"]).start(plain)
    prod.enqueue_many([new("ta", "qa"), new("tb", "qb")], time.time())
    first = w.join()
    second = be.claim(None, "w1", LEASE, 1, time.time())
    assert len(first) == 1 and len(second) == 1
    check_both_once(be, plain, first + second)


def test_a_worker_whose_wait_returned_is_not_handed_tasks_of_its_other_queues(
    be: RedisBackend, prod: RedisBackend, make_be: Any, plain: Any
) -> None:
    w = Waiter(be, ["qa", "qb"], "w1").start(plain)
    prod.enqueue(new("ta", "qa"), time.time())
    (d,) = w.join()
    assert d.task_id == "ta"
    # w1 is busy with ta now; a task of qb goes to a worker that asks for it.
    prod.enqueue(new("tb", "qb"), time.time())
    assert be.get_state("tb") is S.PENDING
    got = make_be().claim(["qb"], "w2", LEASE, 1, time.time())
    assert [x.task_id for x in got] == ["tb"]


def test_a_claim_never_returns_more_than_its_limit(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    now = time.time()
    # w1's wait just ended (its BLPOP timed out); a task is handed over before its claim.
    register_idle(be, "q", "w1", now, now + 5.0)
    prod.enqueue(new("handed"), now)
    prod.enqueue(new("ready"), now)  # nobody idle any more: queued
    got = be.claim(["q"], "w1", LEASE, 1, now)
    assert [d.task_id for d in got] == ["handed"]
    assert be.get_state("ready") is S.PENDING


# -- leaving, dying -------------------------------------------------------------------------------


def test_leave_returns_a_task_handed_after_the_wait_and_it_can_be_requeued(
    be: RedisBackend, prod: RedisBackend, make_be: Any, plain: Any
) -> None:
    now = time.time()
    # w1 registered, then stopped blocking (stopping): a task is handed over meanwhile.
    register_idle(be, "q", "w1", now, now + 60.0)
    prod.enqueue(new("t1"), now)
    assert be.get_state("t1") is S.RUNNING

    (d,) = be.leave(["q"], "w1", LEASE, time.time())
    rec = be.get("t1")
    assert rec is not None
    assert (d.task_id, d.token, d.attempt, d.deliveries) == ("t1", rec.lease_token, 1, 1)
    assert plain.exists(be.keys.inbox("q", "w1")) == 0
    assert plain.zscore(idle_key(be, "q"), member("w1")) is None
    assert be.leave(["q"], "w1", LEASE, time.time()) == []

    note = "worker stopping: requeued"
    assert be.release(d.task_id, d.token, time.time(), note=note) == [
        Transition("t1", NAME, "q", S.RUNNING, S.PENDING, note)
    ]
    rec = be.get("t1")
    assert rec is not None
    assert (rec.state, rec.attempt, rec.deliveries) == (S.PENDING, 0, 0)
    assert rec.lease_deadline is None
    assert plain.zcard(be.keys.queue("q")["leases"]) == 0
    assert counts(plain, be, "q") == {"PENDING": 1}

    # The registration is over: a new task is queued, not handed to w1.
    prod.enqueue(new("t2"), time.time())
    assert be.get_state("t2") is S.PENDING
    other = make_be().claim(["q"], "w2", LEASE, 5, time.time())
    assert sorted((x.task_id, x.attempt, x.deliveries) for x in other) == [
        ("t1", 1, 1),
        ("t2", 1, 1),
    ]
    rec = be.get("t1")
    assert rec is not None and rec.worker == "w2"


def test_leave_of_a_worker_that_was_handed_nothing_is_empty(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    now = time.time()
    prod.enqueue(new("t1"), now)  # makes the queue known
    be.claim(["q"], "w0", LEASE, 1, now)
    register_idle(be, "q", "w1", now, now + 60.0)
    assert be.leave(["q"], "w1", LEASE, now) == []
    assert be.leave(None, "w1", LEASE, now) == []
    assert plain.zscore(idle_key(be, "q"), member("w1")) is None
    prod.enqueue(new("t2"), time.time())
    assert be.get_state("t2") is S.PENDING


def test_a_stopping_thread_pool_gives_back_a_task_handed_to_it(
    url: str, registry: Registry, make_be: Any, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    @task(name=NAME, registry=registry)
    def job() -> None:
        ran.append("job")

    broker = Broker(BrokerConfig(backend=url, num_workers=1, registry=registry, queues=("q",)))
    broker.start()
    pool = broker.pool
    assert isinstance(pool, ThreadPool)
    be = broker.backend
    assert isinstance(be, RedisBackend)
    real = be.claim
    handed: list[tuple[str, S | None]] = []
    entered = threading.Event()

    def claim(
        queues: Any, worker_id: str, lease_s: float, limit: int, now: float, wait: float = 0.0
    ) -> list[Delivery]:
        entered.set()
        got = real(queues, worker_id, lease_s, limit, now, wait)
        if pool.stopping.is_set() and not handed and not got:
            # The thread has stopped blocking and is about to leave: a task is handed
            # to it in between.
            t = time.time()
            register_idle(be, "q", worker_id, t, t + 60.0, lease_s)
            be.enqueue(new("late"), t)
            handed.append((worker_id, be.get_state("late")))
        return got

    monkeypatch.setattr(be, "claim", claim)
    try:
        assert entered.wait(5)  # the worker thread waits in a claim seen by the spy
        broker.stop(drain_timeout=3.0)
    finally:
        monkeypatch.undo()
    assert len(handed) == 1 and handed[0][1] is S.RUNNING  # it was handed over
    worker_id = handed[0][0]

    rec = make_be().get("late")
    assert rec is not None
    assert (rec.state, rec.attempt, rec.deliveries) == (S.PENDING, 0, 0)
    assert rec.lease_deadline is None
    assert inbox(plain, be, "q", worker_id) == []
    assert plain.zscore(idle_key(be, "q"), member(worker_id)) is None
    rows = plain.xrange(be.keys.queue("q")["events"])
    assert [(f.get("old"), f["new"], f.get("note")) for _, f in rows if f["id"] == "late"][-1] == (
        "RUNNING",
        "PENDING",
        "worker stopping: requeued",
    )
    (d,) = make_be().claim(["q"], "w2", LEASE, 1, time.time())
    assert (d.task_id, d.attempt, d.deliveries) == ("late", 1, 1)
    assert ran == []


def test_a_task_handed_to_a_dead_worker_is_reclaimed_after_its_lease(
    be: RedisBackend, prod: RedisBackend, make_be: Any, plain: Any
) -> None:
    t0 = time.time()
    # wdead registered with a 0.2 s lease, then died without taking its inbox.
    register_idle(be, "q", "wdead", t0, t0 + 60.0, lease_s=0.2)
    prod.enqueue(new("t1"), t0)
    rec = be.get("t1")
    assert rec is not None and rec.state is S.RUNNING and rec.worker == "wdead"
    assert rec.lease_deadline == pytest.approx(t0 + 0.2, abs=1e-6)
    assert len(inbox(plain, be, "q", "wdead")) == 1

    assert prod.reclaim_expired(t0 + 0.1, max_deliveries=5) == []  # still leased
    assert prod.reclaim_expired(t0 + 0.3, max_deliveries=5) == [
        Transition("t1", NAME, "q", S.RUNNING, S.PENDING, "lease expired: requeued")
    ]
    other = make_be()
    (d,) = other.claim(["q"], "w2", LEASE, 1, t0 + 0.4)
    assert (d.task_id, d.deliveries, d.attempt) == ("t1", 2, 2)
    rec = other.get("t1")
    assert rec is not None and rec.state is S.RUNNING and rec.worker == "w2"
    lost = [a for a in rec.history if a.outcome == "LOST"]
    assert len(lost) == 1 and lost[0].worker == "wdead"
    assert other.ack(d.task_id, d.token, "w2", time.time())
    rec = other.get("t1")
    assert rec is not None and rec.state is S.SUCCESS and rec.result == "w2"


def test_a_stale_delivery_left_in_an_inbox_is_not_claimed(
    be: RedisBackend, prod: RedisBackend, make_be: Any, plain: Any
) -> None:
    t0 = time.time()
    register_idle(be, "q", "w1", t0, t0 + 60.0, lease_s=0.2)
    prod.enqueue(new("t1"), t0)
    prod.reclaim_expired(t0 + 0.3, max_deliveries=5)
    (d2,) = make_be().claim(["q"], "w2", LEASE, 1, t0 + 0.4)
    # w1 was alive after all (busy elsewhere): its next claim must not run t1 again.
    assert be.claim(["q"], "w1", LEASE, 1, time.time()) == []
    assert be.get_state("t1") is S.RUNNING
    rec = be.get("t1")
    assert rec is not None and rec.worker == "w2" and rec.lease_token == d2.token


# -- whole workers ------------------------------------------------------------------------------


def test_broker_workers_run_tasks_enqueued_at_a_steady_pace_while_idle(
    url: str, registry: Registry, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(name="h.double", registry=registry, queue="hq")
    def double(x: int) -> int:
        return 2 * x

    broker = Broker(BrokerConfig(backend=url, num_workers=2, registry=registry))
    be = broker.backend
    assert isinstance(be, RedisBackend)
    unboxed: list[str] = []
    real_unbox = be._unbox

    def unbox(q: str, raw: bytes, worker_id: str, now: float) -> Delivery:
        d = real_unbox(q, raw, worker_id, now)
        unboxed.append(d.task_id)
        return d

    monkeypatch.setattr(be, "_unbox", unbox)
    broker.start()
    try:
        double.apply_async(args=[0], broker=broker).get(timeout=5)  # the queue exists now
        results = []
        idle = idle_key(be, "hq")
        for i in range(1, 31):
            time.sleep(0.02)
            # The pace of an idle system: a worker is back waiting (slower on a loaded
            # machine, where tasks would otherwise pile up in the ready set).
            wait_for(lambda: plain.zcount(idle, time.time(), "+inf") > 0, 5, "an idle worker")
            results.append(double.apply_async(args=[i], broker=broker))
        assert [r.get(timeout=5) for r in results] == [2 * i for i in range(1, 31)]
    finally:
        broker.stop(drain_timeout=3.0)
    assert unboxed, "no task was handed over"
    for r in results:
        rec = r.record()
        assert rec is not None and rec.state is S.SUCCESS
        assert (rec.attempt, rec.deliveries) == (1, 1)
    assert be.count_by_state()[S.RUNNING] == 0
    for key in plain.scan_iter(match=f"{be.keys.tag('hq')}:inbox:*"):
        assert [x for x in plain.lrange(key, 0, -1) if x != "!"] == [], key
    assert plain.zcard(idle_key(be, "hq")) == 0  # each stopping thread left


def test_a_sigtermed_worker_process_leaves_nothing_running_or_in_an_inbox(
    make_cluster: ClusterFactory, plain: Any
) -> None:
    c = make_cluster()
    p = c.producer()
    w = c.spawn(2, queues="hq")
    c.wait_ready(w)
    ids: list[str] = []
    n = 0

    def send() -> None:
        nonlocal n
        ids.append(p.send("rt.rec", [n], task_id=f"k{n:04d}", queue="hq").id)
        n += 1

    # Steady pace while the worker is idle: tasks are handed over and run.
    for _ in range(10):
        send()
        time.sleep(0.02)
    wait_for(lambda: len(c.executions()) == 10, 20, "the worker to run the first tasks")

    # Keep sending through the signal and past the exit (a registration left behind
    # would strand those in the inbox of a dead worker).
    stop = threading.Event()

    def pace() -> None:
        while not stop.is_set():
            send()
            time.sleep(0.01)

    sender = threading.Thread(target=pace, daemon=True)
    sender.start()
    try:
        time.sleep(0.15)
        assert w.term() == 0, w.stderr()
        time.sleep(0.3)
    finally:
        stop.set()
        sender.join(5)

    be = c.backend
    assert be.count_by_state()[S.RUNNING] == 0
    tag = be.keys.tag("hq")
    for key in plain.scan_iter(match=f"{tag}:inbox:*"):
        assert [x for x in plain.lrange(key, 0, -1) if x != "!"] == [], key
    assert [m for m in plain.zrange(idle_key(be, "hq"), 0, -1) if w.owns(m.split("|", 1)[1])] == []

    rescuer = c.spawn(2, queues="hq")
    for tid in ids:
        rec = p.wait(tid, timeout=20)
        assert rec.state is S.SUCCESS, rec
    assert c.executions() == dict.fromkeys(range(n), 1)  # given back unrun, run once
    assert rescuer.alive()


# -- found in review ----------------------------------------------------------------------


def test_a_stale_delivery_left_in_an_inbox_is_not_returned_by_a_wait(
    be: RedisBackend, prod: RedisBackend, make_be: Any, plain: Any
) -> None:
    """A registration left behind (a wait's pipeline cut after IDLE), the task handed
    over, its lease run out and the task given to another worker: a later wait of the
    first worker must not run it too."""
    t0 = time.time()
    prod.enqueue_many([new("seed-a", "qa"), new("seed-b", "qb")], t0)
    other = make_be()
    other.claim(["qa", "qb"], "w2", LEASE, 5, t0)
    register_idle(be, "qb", "w1", t0, t0 + 60, lease_s=0.2)
    prod.enqueue(new("X", "qb"), t0)
    assert inbox(plain, be, "qb", "w1") != []
    prod.reclaim_expired(t0 + 0.3, max_deliveries=5)
    (d2,) = other.claim(["qb"], "w2", LEASE, 1, t0 + 0.4)
    assert d2.task_id == "X"
    got = be.claim(None, "w1", LEASE, 1, time.time(), 0.2)
    assert [d.task_id for d in got] == []
    rec = be.get("X")
    assert rec is not None and rec.worker == "w2" and rec.lease_token == d2.token


def test_a_task_left_in_an_inbox_and_still_leased_is_returned_by_the_next_wait(
    be: RedisBackend, prod: RedisBackend, plain: Any
) -> None:
    t0 = time.time()
    prod.enqueue(new("seed", "q"), t0)
    be.claim(["q"], "w0", LEASE, 1, t0)
    register_idle(be, "q", "w1", t0, t0 + 60)
    prod.enqueue(new("Y", "q"), t0)
    got = be.claim(["q"], "w1", LEASE, 1, time.time(), 0.2)
    assert [d.task_id for d in got] == ["Y"]
    assert inbox(plain, be, "q", "w1") == []


def test_ready_tasks_go_before_a_handoff(be: RedisBackend, prod: RedisBackend, plain: Any) -> None:
    """A task already ready (a retry, a promotion) is not overtaken by a new one handed
    straight to an idle worker."""
    t0 = time.time()
    prod.enqueue(new("seed", "q"), t0)
    be.claim(["q"], "w0", LEASE, 1, t0)
    register_idle(be, "q", "w1", t0, t0 + 60)
    # A task made ready behind the idle registration's back (as a promotion would).
    plain.zadd(be.keys.queue("q")["ready"], {"early": 0})
    prod.enqueue(new("late", "q"), t0)
    assert inbox(plain, be, "q", "w1") == []
    assert be.get("late") is not None and be.get("late").state is S.PENDING  # type: ignore[union-attr]
