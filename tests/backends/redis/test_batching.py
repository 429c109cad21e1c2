"""Batched claims and acknowledgements on a real redis-server.

``ack_many`` stores a batch over several queues in one round trip, refuses stale and
repeated acks, and treats a retry after a lost reply as stored; a broker's workers
drain tasks with every success published once; ``dtq worker`` processes lose nothing to
SIGKILL and store their waiting acks on SIGTERM; the adaptive prefetch claims one task
first and more only for short tasks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from dtq_core import Broker, BrokerConfig, task
from dtq_core.backends import make_backend
from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.broker import default_hooks
from dtq_core.errors import BackendError
from dtq_core.hooks import Hook, RunContext
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from dtq_core.workers.acks import AckBuffer
from tests.backends.redis.cluster import Cluster, wait_for
from tests.backends.redis.conftest import ClusterFactory
from tests.conftest import EventLog

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

S = TaskState
NAME = "b.job"


# -- helpers ------------------------------------------------------------------------------


def put(be: RedisBackend, queue: str, n: int, tag: str = "") -> list[Delivery]:
    """Enqueue ``n`` tasks in ``queue`` and claim them all (worker ``w1``)."""
    now = time.time()
    for i in range(n):
        be.enqueue(NewTask(f"{queue}{tag}-{i}", NAME, queue, 0, b"{}"), now)
    got = be.claim([queue], "w1", 30.0, n, now)
    assert [d.task_id for d in got] == [f"{queue}{tag}-{i}" for i in range(n)]
    return got


def acks(ds: list[Delivery]) -> list[tuple[str, int, Any]]:
    return [(d.task_id, d.token, {"id": d.task_id}) for d in ds]


def ok(d: Delivery) -> list[Transition]:
    return [Transition(d.task_id, NAME, d.queue, S.RUNNING, S.SUCCESS)]


def events(be: RedisBackend, queue: str) -> list[dict[str, str]]:
    """A queue's stored events, one per task, as the backend reads them back.

    Read by a backend of its own: its queue list is not cached from before the test
    made its queues.
    """
    reader = make_backend(be.url)
    try:
        return [ev for _, ev in reader.read_events(0, 100_000) if ev["queue"] == queue]
    finally:
        reader.close()


def success_events(be: RedisBackend, queue: str) -> list[str]:
    """Task ids of a queue's RUNNING -> SUCCESS events."""
    return [
        ev["id"] for ev in events(be, queue) if (ev.get("old"), ev["new"]) == ("RUNNING", "SUCCESS")
    ]


def counts(plain: Any, be: RedisBackend, queue: str) -> dict[str, int]:
    h = plain.hgetall(be.keys.queue(queue)["counts"])
    return {k: int(v) for k, v in h.items() if int(v)}


def warm(be: RedisBackend) -> None:
    """Load the scripts (a first use answers NOSCRIPT and loads them: extra round trips)."""
    (d,) = put(be, "warm", 1)
    assert be.ack_many(acks([d]), time.time()) == [ok(d)]


class RoundTrips:
    """Counts the writes redis-py sends on any connection (a pipeline is one write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.on = False
        real = AbstractConnection.send_packed_command

        def spy(conn: Any, command: Any, check_health: bool = True) -> Any:
            if self.on:
                self.count += 1
            return real(conn, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", spy)

    def __enter__(self) -> RoundTrips:
        self.count, self.on = 0, True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False


class LoseReply:
    """The next ack pipeline runs on the server, then its reply is lost (ConnectionError).

    With ``drop_last``, the last script of that pipeline never reaches the server (the
    connection broke in the middle of the write).
    """

    def __init__(
        self, be: RedisBackend, monkeypatch: pytest.MonkeyPatch, drop_last: bool = False
    ) -> None:
        self.armed = 1
        self.lost = 0
        real = be.r.pipeline
        sha = be._ack_many.sha

        def pipeline(*a: Any, **kw: Any) -> Any:
            pipe = real(*a, **kw)
            real_execute = pipe.execute

            def execute(*ea: Any, **ekw: Any) -> Any:
                is_ack = any(sha in args for args, _ in pipe.command_stack)
                if not (self.armed and is_ack):
                    return real_execute(*ea, **ekw)
                self.armed -= 1
                if drop_last:
                    pipe.command_stack.pop()
                real_execute(*ea, **ekw)
                self.lost += 1
                raise redis.exceptions.ConnectionError("Connection reset by peer (test)")

            pipe.execute = execute
            return pipe

        monkeypatch.setattr(be.r, "pipeline", pipeline)


# -- ack_many ---------------------------------------------------------------------------------


def test_ack_many_over_two_queues_is_one_round_trip(
    be: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm(be)
    a, b = put(be, "qa", 2), put(be, "qb", 2)
    batch = [a[0], b[0], a[1], b[1]]  # interleaved: answers still come back in order
    trips = RoundTrips(monkeypatch)
    with trips:
        out = be.ack_many(acks(batch), time.time())
    assert trips.count == 1
    assert out == [ok(d) for d in batch]
    for d in batch:
        rec = be.get(d.task_id)
        assert rec is not None
        assert rec.state is S.SUCCESS and rec.result == {"id": d.task_id}
        assert rec.lease_deadline is None
    for q, ds in (("qa", a), ("qb", b)):
        assert counts(plain, be, q) == {"SUCCESS": 2}
        assert plain.zcard(be.keys.queue(q)["leases"]) == 0
        assert sorted(success_events(be, q)) == sorted(d.task_id for d in ds)
        assert int(plain.hget(be.keys.queue(q)["totals"], "succeeded")) == 2


def test_single_ack_is_one_round_trip_too(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    warm(be)
    (d,) = put(be, "qs", 1)
    trips = RoundTrips(monkeypatch)
    with trips:
        assert be.ack(d.task_id, d.token, 7, time.time()) == ok(d)
    assert trips.count == 1


def test_a_stale_token_in_the_middle_gets_nothing_and_the_others_are_stored(
    be: RedisBackend, plain: Any
) -> None:
    ds = put(be, "q", 3)
    stale = ds[1]._replace(token=ds[1].token + 1000)
    out = be.ack_many(acks([ds[0], stale, ds[2]]), time.time())
    assert out == [ok(ds[0]), [], ok(ds[2])]
    assert [be.get_state(d.task_id) for d in ds] == [
        S.RUNNING if d is ds[1] else S.SUCCESS for d in ds
    ]
    assert counts(plain, be, "q") == {"SUCCESS": 2, "RUNNING": 1}
    # The refused one still holds its lease, and its own worker can still ack it.
    assert plain.zscore(be.keys.queue("q")["leases"], ds[1].task_id) is not None
    (trs,) = be.ack_many(acks([ds[1]]), time.time())
    assert [(t.task_id, t.queue, t.old, t.new) for t in trs] == [
        (ds[1].task_id, "q", S.RUNNING, S.SUCCESS)
    ]
    assert counts(plain, be, "q") == {"SUCCESS": 3}


def test_an_ack_from_a_worker_whose_lease_expired_is_refused(be: RedisBackend, plain: Any) -> None:
    first, other = put(be, "q", 2)
    # The lease runs out: the task goes back to the queue and another worker claims it.
    reclaimed = be.reclaim_expired(time.time() + 60, max_deliveries=5)
    assert {t.task_id for t in reclaimed} == {first.task_id, other.task_id}
    again = be.claim(["q"], "w2", 30.0, 2, time.time())
    second = next(d for d in again if d.task_id == first.task_id)
    assert second.token != first.token
    assert be.ack_many(acks([first]), time.time()) == [[]]
    assert be.get_state(first.task_id) is S.RUNNING
    (trs,) = be.ack_many([(second.task_id, second.token, "w2")], time.time())
    assert [(t.task_id, t.old, t.new) for t in trs] == [(second.task_id, S.RUNNING, S.SUCCESS)]
    rec = be.get(first.task_id)
    assert rec is not None and rec.result == "w2" and rec.deliveries == 2


def test_a_refused_stale_ack_leaves_the_live_claim_of_the_same_task_alone(
    be: RedisBackend, plain: Any
) -> None:
    """The holder's ack still names the task and its worker (50b7d58 lost both)."""
    (first,) = put(be, "q", 1)
    be.reclaim_expired(time.time() + 60, max_deliveries=5)
    (second,) = be.claim(["q"], "w2", 30.0, 1, time.time())
    assert be.ack_many(acks([first]), time.time()) == [[]]
    assert be.ack_many(acks([second]), time.time()) == [ok(second)]
    done = [ev for ev in events(be, "q") if ev["new"] == "SUCCESS"]
    assert [(f["name"], f["worker"]) for f in done] == [(NAME, "w2")]


def test_acking_twice_is_refused(be: RedisBackend, plain: Any) -> None:
    ds = put(be, "q", 2)
    assert be.ack_many(acks(ds), time.time()) == [ok(d) for d in ds]
    again = [(d.task_id, d.token, "again") for d in ds]
    assert be.ack_many(again, time.time()) == [[], []]
    assert be.ack(ds[0].task_id, ds[0].token, "again", time.time()) == []
    for d in ds:
        rec = be.get(d.task_id)
        assert rec is not None and rec.result == {"id": d.task_id}
    assert counts(plain, be, "q") == {"SUCCESS": 2}
    assert sorted(success_events(be, "q")) == sorted(d.task_id for d in ds)
    assert int(plain.hget(be.keys.queue("q")["totals"], "succeeded")) == 2


@pytest.mark.parametrize("drop_last", [False, True], ids=["whole", "half-written"])
def test_a_retry_after_a_lost_reply_counts_as_stored(
    be: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch, drop_last: bool
) -> None:
    warm(be)
    a, b = put(be, "qa", 2), put(be, "qb", 2)
    stale = a[1]._replace(token=a[1].token + 1000)
    batch = [a[0], b[0], stale, b[1]]
    lose = LoseReply(be, monkeypatch, drop_last=drop_last)
    out = be.ack_many(acks(batch), time.time())
    assert lose.lost == 1  # the first attempt was stored (in part), its reply lost
    assert out == [ok(a[0]), ok(b[0]), [], ok(b[1])]
    assert be.get_state(a[1].task_id) is S.RUNNING  # a retry does not excuse a stale token
    for d in (a[0], b[0], b[1]):
        rec = be.get(d.task_id)
        assert rec is not None and rec.state is S.SUCCESS and rec.result == {"id": d.task_id}
    # Stored once: one event, one count, one tick per task.
    assert counts(plain, be, "qa") == {"SUCCESS": 1, "RUNNING": 1}
    assert counts(plain, be, "qb") == {"SUCCESS": 2}
    assert success_events(be, "qa") == [a[0].task_id]
    assert sorted(success_events(be, "qb")) == sorted(d.task_id for d in b)
    assert int(plain.hget(be.keys.queue("qb")["totals"], "succeeded")) == 2


def test_a_reply_lost_on_the_socket_is_retried_as_stored(
    be: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the backend: redis-py itself must not resend the first attempt unmarked."""
    warm(be)
    ds = put(be, "q", 3)
    real = AbstractConnection.read_response
    armed = [True]

    def read_response(conn: Any, *a: Any, **kw: Any) -> Any:
        if armed[0]:
            armed[0] = False
            raise redis.exceptions.ConnectionError("Connection reset by peer (test)")
        return real(conn, *a, **kw)

    monkeypatch.setattr(AbstractConnection, "read_response", read_response)
    out = be.ack_many(acks(ds), time.time())
    assert not armed[0]
    assert out == [ok(d) for d in ds]
    assert counts(plain, be, "q") == {"SUCCESS": 3}
    assert sorted(success_events(be, "q")) == sorted(d.task_id for d in ds)


@dataclass
class Ctx:
    """The part of a RunContext an AckBuffer reads."""

    delivery: Delivery


def test_acks_kept_after_a_lost_reply_are_reported_stored_on_the_next_flush(
    make_be: Any, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``retry_s`` the buffer retries, not the backend: still stored, not stale.

    (In 50b7d58 the next flush answered "stale" for them: no SUCCESS event, after_run
    with no transitions.)
    """
    be = make_be(retry_s=0)  # give up at the first connection error: BackendUnavailable
    warm(be)
    ds = put(be, "q", 2)
    finished: list[tuple[str, list[S]]] = []
    buf = AckBuffer(
        be,
        time.time,
        lambda c, trs: finished.append((c.delivery.task_id, [t.new for t in trs])),
        delay=0.5,
    )
    try:
        for i, d in enumerate(ds):
            buf.add(Ctx(d), {"id": d.task_id, "i": i})  # type: ignore[arg-type]
        LoseReply(be, monkeypatch)
        with pytest.raises(BackendError):
            buf.flush()
        # The server stored them; the worker does not know yet and keeps them waiting.
        assert [be.get_state(d.task_id) for d in ds] == [S.SUCCESS, S.SUCCESS]
        assert buf.leases() == [(d.task_id, d.token) for d in ds]
        buf.flush()
        assert counts(plain, be, "q") == {"SUCCESS": 2}
        assert finished == [(d.task_id, [S.SUCCESS]) for d in ds]
    finally:
        buf.close(timeout=0)


# -- a broker's workers -------------------------------------------------------------------------


class AfterRun(Hook):
    """Records each settled attempt: task id, its transitions, the stored state then."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[S], S | None]] = []
        self.lock = threading.Lock()

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        tid = ctx.delivery.task_id
        state = ctx.broker.backend.get_state(tid)
        with self.lock:
            self.seen.append((tid, [t.new for t in transitions], state))


@pytest.fixture
def brokers() -> Iterator[list[Broker]]:
    made: list[Broker] = []
    yield made
    for b in made:
        b.stop(drain_timeout=2.0)


def test_workers_drain_every_task_with_its_result_and_one_success_event(
    url: str, registry: Registry, brokers: list[Broker]
) -> None:
    n = 300
    hook = AfterRun()

    @task(name="b.square", registry=registry)
    def square(x: int) -> int:
        return x * x

    broker = Broker(
        BrokerConfig(backend=url, num_workers=4, registry=registry, hooks=[*default_hooks(), hook])
    )
    brokers.append(broker)
    log = EventLog(broker)
    broker.start()
    assert broker.pool is not None and broker.pool.acks is not None  # batching is on
    results = square.apply_many([[i] for i in range(n)], broker=broker)
    assert [r.get(timeout=20) for r in results] == [i * i for i in range(n)]
    by_state = broker.backend.count_by_state()
    assert (by_state[S.SUCCESS], by_state[S.RUNNING]) == (n, 0)

    summary = broker.stop(drain_timeout=5.0)
    assert summary.processed == n and summary.failed == 0
    for r in results:
        assert log.transitions(r.id).count(("RUNNING", "SUCCESS")) == 1
        assert log.transitions(r.id)[-1] == ("RUNNING", "SUCCESS")
    # after_run once per task, after the store, with the SUCCESS transition.
    assert sorted(hook.seen) == sorted((r.id, [S.SUCCESS], S.SUCCESS) for r in results)


def test_waiting_acks_keep_their_leases_alive(
    url: str, registry: Registry, brokers: list[Broker]
) -> None:
    @task(name="b.one", registry=registry)
    def one() -> int:
        return 1

    # Each success waits 1 s, longer than the 0.6 s lease: only renewal keeps it.
    broker = Broker(
        BrokerConfig(
            backend=url,
            num_workers=1,
            registry=registry,
            lease_s=0.6,
            heartbeat_s=0.1,
            ack_delay_s=1.0,
        )
    )
    brokers.append(broker)
    broker.start()
    r = one.apply_async(broker=broker)
    assert r.get(timeout=10) == 1
    rec = r.record()
    assert rec is not None
    assert (rec.attempt, rec.deliveries) == (1, 1)
    assert [a.outcome for a in rec.history if a.outcome == "LOST"] == []
    assert rec.finished_at is not None and rec.started_at is not None
    assert rec.finished_at - rec.started_at >= 0.6  # it did wait past one lease


def test_zero_delay_and_fixed_prefetch_store_at_once_and_claim_that_many(
    url: str, registry: Registry, brokers: list[Broker], monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(name="b.inc", registry=registry)
    def inc(x: int) -> int:
        return x + 1

    broker = Broker(
        BrokerConfig(backend=url, num_workers=1, registry=registry, prefetch=4, ack_delay_s=0)
    )
    brokers.append(broker)
    limits = spy_claims(broker, monkeypatch)
    results = inc.apply_many([[i] for i in range(10)], broker=broker)
    broker.start()
    assert broker.pool is not None and broker.pool.acks is None
    assert [r.get(timeout=10) for r in results] == list(range(1, 11))
    assert {lim for lim, _ in limits} == {4}


# -- adaptive prefetch ----------------------------------------------------------------------------


def spy_claims(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """``(limit, claimed)`` of every claim the broker's workers make."""
    seen: list[tuple[int, int]] = []
    real = broker.backend.claim

    def claim(
        queues: Any, worker_id: str, lease_s: float, limit: int, now: float, wait: float = 0.0
    ) -> list[Delivery]:
        got = real(queues, worker_id, lease_s, limit, now, wait)
        seen.append((limit, len(got)))
        return got

    monkeypatch.setattr(broker.backend, "claim", claim)
    return seen


def test_adaptive_prefetch_claims_one_first_then_more_for_short_tasks(
    url: str, registry: Registry, brokers: list[Broker], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 150

    @task(name="b.fast", registry=registry)
    def fast(x: int) -> int:
        return x

    broker = Broker(BrokerConfig(backend=url, num_workers=1, registry=registry))
    assert broker.config.prefetch is None  # the default adapts
    brokers.append(broker)
    results = fast.apply_many([[i] for i in range(n)], broker=broker)
    limits = spy_claims(broker, monkeypatch)
    broker.start()
    assert [r.get(timeout=20) for r in results] == list(range(n))
    broker.stop(drain_timeout=5.0)

    nonempty = [(lim, got) for lim, got in limits if got]
    assert nonempty[0] == (1, 1)  # run time unknown: one task
    assert nonempty[1][0] > 1  # a short task: the next claim takes several
    assert max(lim for lim, _ in limits) <= 64
    assert sum(got for _, got in limits) == n
    assert len(nonempty) < n // 2  # round trips shared


def test_adaptive_prefetch_stays_at_one_for_long_tasks(
    url: str, registry: Registry, brokers: list[Broker], monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(name="b.slow", registry=registry)
    def slow(x: int) -> int:
        time.sleep(0.2)
        return x

    broker = Broker(BrokerConfig(backend=url, num_workers=1, registry=registry))
    brokers.append(broker)
    results = slow.apply_many([[i] for i in range(4)], broker=broker)
    limits = spy_claims(broker, monkeypatch)
    broker.start()
    assert [r.get(timeout=20) for r in results] == list(range(4))
    broker.stop(drain_timeout=5.0)
    assert [got for _, got in limits if got] == [1, 1, 1, 1]
    assert {lim for lim, _ in limits} == {1}


# -- dtq worker processes -------------------------------------------------------------------------

#: Acks wait a whole second in the worker (so a signal lands while they wait); short
#: leases so a dead worker's tasks come back quickly.
HOLD = {"ack_delay_s": 1.0, "lease_s": 1.0, "heartbeat_s": 0.25}


def send(c: Cluster, n: int, queue: str) -> list[str]:
    p = c.producer() if not c.producers else c.producers[0]
    return [p.send("rt.rec", [i], task_id=f"{queue}-{i:03d}", queue=queue).id for i in range(n)]


def ran_but_waiting(c: Cluster, ids: list[str]) -> list[str]:
    """Tasks that have run (a start record) and are still RUNNING: their acks wait."""
    started = set(c.executions())
    return [
        tid for i, tid in enumerate(ids) if i in started and c.backend.get_state(tid) is S.RUNNING
    ]


def test_sigkill_while_acks_wait_redelivers_and_loses_nothing(
    make_cluster: ClusterFactory,
) -> None:
    n = 8
    c = make_cluster(config=HOLD)
    ids = send(c, n, "kq")
    victim = c.spawn(1, queues="kq")
    wait_for(lambda: len(c.executions()) == n, 20, "the victim to run every task")
    victim.kill()
    # No worker is left to reclaim anything: the states stay as the victim left them.
    held = ran_but_waiting(c, ids)
    assert held, "no ack was waiting when the worker died"

    rescuer = c.spawn(1, queues="kq")
    p = c.producers[0]
    for i, tid in enumerate(ids):
        rec = p.wait(tid, timeout=20)
        assert rec.state is S.SUCCESS and rec.result == i
    # At least once: every task ran; those whose ack died with the worker ran again.
    runs = c.executions()
    assert set(runs) == set(range(n))
    for i, tid in enumerate(ids):
        rec = c.backend.get(tid)
        assert rec is not None
        if tid in held:
            assert runs[i] == 2 and rec.deliveries == 2, (tid, runs[i], rec.deliveries)
        else:
            assert runs[i] == 1 and rec.deliveries == 1, (tid, runs[i], rec.deliveries)
    assert rescuer.alive()


def test_sigterm_stores_the_waiting_acks(make_cluster: ClusterFactory) -> None:
    n = 8
    c = make_cluster(config=HOLD)
    w = c.spawn(2, queues="tq")
    # Its signal handlers are installed once it says so (after its pool started).
    wait_for(lambda: "SIGTERM/Ctrl-C drains" in w.stderr() or not w.alive(), 20, "start")
    assert w.alive(), w.stderr()
    ids = send(c, n, "tq")
    wait_for(lambda: len(c.executions()) == n, 20, "the worker to run every task")
    assert ran_but_waiting(c, ids), "no ack was waiting at the signal"
    assert w.term() == 0, w.stderr()

    # Stored by the stop itself: nothing RUNNING, nothing to redeliver.
    be = c.backend
    assert be.count_by_state()[S.RUNNING] == 0
    for i, tid in enumerate(ids):
        rec = be.get(tid)
        assert rec is not None
        assert rec.state is S.SUCCESS and rec.result == i
        assert (rec.attempt, rec.deliveries) == (1, 1)
    assert c.executions() == dict.fromkeys(range(n), 1)
