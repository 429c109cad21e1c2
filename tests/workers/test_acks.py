"""AckBuffer: successes stored together by delay or by size, in order, kept on errors.

Most tests drive the buffer with a fake backend that records every ``ack_many`` call
(the buffer calls nothing else on it) and a fake context carrying only the delivery (the
buffer reads nothing else from it). The last tests run the real memory backend and the
real :class:`Runner`, with the backend's ``batch_acks`` capability switched on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from dtq_core import task
from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.backends.memory import MemoryBackend
from dtq_core.errors import BackendError
from dtq_core.hooks import Hook, RunContext
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from dtq_core.workers.acks import AckBuffer
from dtq_core.workers.base import Pool, WorkerInfo
from dtq_core.workers.runner import Runner
from tests.conftest import BrokerFactory, EventLog

pytestmark = pytest.mark.timeout(30)

S = TaskState
#: A delay no test waits out before it looks: what it checks happens well before.
LONG = 0.5


@dataclass
class Ctx:
    """The part of a RunContext the buffer reads."""

    delivery: Delivery


def ctx(i: int) -> Any:
    return Ctx(Delivery(f"t{i}", 100 + i, "job", "q", b"", 1, 1, 0.0, 0.0, None, 0))


def item(i: int) -> tuple[str, int, Any]:
    return (f"t{i}", 100 + i, {"v": i})


class FakeBackend:
    """Records each ``ack_many``; fails the next ``fail`` calls with BackendError."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int, Any]]] = []
        self.failed: list[list[tuple[str, int, Any]]] = []
        self.nows: list[float] = []
        self.times: list[float] = []  # monotonic time of each call
        self.options: list[dict[str, Any]] = []  # keyword options of each call
        self.fail = 0
        self.stale: set[str] = set()
        self.during: Any = None  # called inside ack_many, before it answers
        self.cond = threading.Condition()

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, **options: Any
    ) -> list[list[Transition]]:
        batch = list(acks)
        if self.during is not None:
            self.during(batch)
        with self.cond:
            self.nows.append(now)
            self.times.append(time.monotonic())
            self.options.append(options)
            if self.fail:
                self.fail -= 1
                self.failed.append(batch)
                self.cond.notify_all()
                raise BackendError("redis at fake unreachable")
            self.calls.append(batch)
            self.cond.notify_all()
        return [
            [] if tid in self.stale else [Transition(tid, "job", "q", S.RUNNING, S.SUCCESS)]
            for tid, _, _ in batch
        ]

    def wait(self, what: Any, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(what, timeout), "the fake backend was not called in time"

    def stored(self) -> list[tuple[str, int, Any]]:
        return [a for batch in self.calls for a in batch]


class Finished:
    """The ``finish`` callback: records ``(task_id, new states, thread name)``."""

    def __init__(self, raise_for: str | None = None) -> None:
        self.done: list[tuple[str, list[S], str]] = []
        self.raise_for = raise_for
        self.cond = threading.Condition()

    def __call__(self, c: Any, trs: list[Transition]) -> None:
        with self.cond:
            self.done.append(
                (c.delivery.task_id, [t.new for t in trs], threading.current_thread().name)
            )
            self.cond.notify_all()
        if c.delivery.task_id == self.raise_for:
            raise RuntimeError("a subscriber broke")

    def ids(self) -> list[str]:
        return [tid for tid, _, _ in self.done]

    def wait(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.done) >= n, timeout), self.done


@pytest.fixture
def made() -> Any:
    """Buffers to close at teardown (their threads must not outlive the test)."""
    bufs: list[AckBuffer] = []
    yield bufs
    for b in bufs:
        b.close(timeout=0.0)


def buffer(made: list[AckBuffer], backend: Any, finish: Any, **kw: Any) -> AckBuffer:
    b = AckBuffer(backend, lambda: 1234.5, finish, **kw)
    made.append(b)
    return b


# -- batching -----------------------------------------------------------------------------


def test_successes_wait_the_delay_then_are_stored_in_one_call(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=0.3)
    t0 = time.monotonic()
    for i in range(3):
        buf.add(ctx(i), {"v": i})
    assert fake.calls == []  # waiting, not stored one by one
    assert len(buf) == 3

    fin.wait(3)
    assert time.monotonic() - t0 >= 0.3  # the oldest waited its delay
    assert fake.calls == [[item(0), item(1), item(2)]]
    assert fake.nows == [1234.5]  # the store is stamped by the injected clock
    assert fin.done == [(f"t{i}", [S.SUCCESS], "dtq-acks") for i in range(3)]
    assert len(buf) == 0


def test_a_full_batch_is_stored_at_once_by_the_thread_that_filled_it(
    made: list[AckBuffer],
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG, max_batch=3)
    buf.add(ctx(0), {"v": 0})
    buf.add(ctx(1), {"v": 1})
    assert fake.calls == []
    buf.add(ctx(2), {"v": 2})
    # Stored (and finished) before add() returned, in the adding thread.
    assert fake.calls == [[item(0), item(1), item(2)]]
    me = threading.current_thread().name
    assert fin.done == [(f"t{i}", [S.SUCCESS], me) for i in range(3)]

    buf.add(ctx(3), {"v": 3})
    assert len(fake.calls) == 1  # one waiting: not full
    fin.wait(4)
    assert fake.calls[1] == [item(3)]  # then stored by the delay


def test_order_is_kept_within_and_across_batches(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG, max_batch=2)
    for i in range(6):
        buf.add(ctx(i), {"v": i})
    assert fake.calls == [[item(0), item(1)], [item(2), item(3)], [item(4), item(5)]]
    assert fin.ids() == [f"t{i}" for i in range(6)]


def test_concurrent_adders_each_stored_once_and_in_their_own_order(
    made: list[AckBuffer],
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=0.005, max_batch=16)
    threads, per = 4, 50

    def adder(k: int) -> None:
        for j in range(per):
            i = k * 1000 + j
            buf.add(ctx(i), {"v": i})

    ts = [threading.Thread(target=adder, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    buf.close()
    stored = [tid for tid, _, _ in fake.stored()]
    assert sorted(stored) == sorted(f"t{k * 1000 + j}" for k in range(threads) for j in range(per))
    assert len(stored) == len(set(stored))
    for k in range(threads):
        mine = [int(t[1:]) for t in stored if int(t[1:]) // 1000 == k]
        assert mine == sorted(mine)
    assert len(fake.calls) < threads * per  # they shared round trips
    assert sorted(fin.ids()) == sorted(stored)


# -- close --------------------------------------------------------------------------------


def test_close_stores_what_is_waiting_without_waiting_the_delay(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG)
    for i in range(3):
        buf.add(ctx(i), {"v": i})
    buf.close()
    assert fake.calls == [[item(0), item(1), item(2)]]
    assert fin.ids() == ["t0", "t1", "t2"]
    assert len(buf) == 0 and buf.leases() == []


def test_a_success_added_after_close_is_stored_at_once(made: list[AckBuffer]) -> None:
    """A task settled after its pool closed the buffer (a hard stop) is not left RUNNING."""
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=0.01)
    buf.add(ctx(0), {"v": 0})
    buf.close()
    buf.add(ctx(1), {"v": 1})
    assert fake.calls == [[item(0)], [item(1)]]  # no thread left to wait for: stored in add()
    assert fin.ids() == ["t0", "t1"]


def test_close_of_an_unused_buffer_does_nothing(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    buffer(made, fake, fin, delay=LONG).close()
    assert fake.calls == [] and fake.failed == [] and fin.done == []


def test_close_retries_a_failing_backend_then_gives_up_keeping_the_acks(
    made: list[AckBuffer], caplog: pytest.LogCaptureFixture
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=0.8)  # its own thread stays asleep meanwhile
    for i in range(2):
        buf.add(ctx(i), {"v": i})
    fake.fail = 1000
    with caplog.at_level(logging.ERROR, logger="dtq.worker"):
        buf.close(timeout=0.1)
    assert len(fake.failed) >= 2  # tried again before giving up
    assert fake.calls == [] and fin.done == []
    assert "2 acknowledgements not stored" in caplog.text
    # Not dropped: the leases are still listed, and a later flush stores them.
    assert buf.leases() == [("t0", 100), ("t1", 101)]
    fake.fail = 0
    buf.flush()
    assert fake.calls == [[item(0), item(1)]]
    assert fin.ids() == ["t0", "t1"]


# -- backend errors -------------------------------------------------------------------------


def test_flush_error_keeps_the_acks_waiting_in_order(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG)
    for i in range(3):
        buf.add(ctx(i), {"v": i})
    fake.fail = 1
    # An ack added while the failing store is in flight goes after the kept ones.
    fake.during = lambda batch: buf.add(ctx(3), {"v": 3}) if fake.fail else None
    with pytest.raises(BackendError):
        buf.flush()
    assert fake.failed == [[item(0), item(1), item(2)]]
    assert fin.done == []  # nothing finished: nothing was stored
    assert len(buf) == 4
    assert buf.leases() == [("t0", 100), ("t1", 101), ("t2", 102), ("t3", 103)]
    buf.flush()
    assert fake.calls == [[item(0), item(1), item(2), item(3)]]
    # The failed call may have stored some before its reply was lost: said so next time.
    assert fake.options == [{}, {"retry": True}]
    assert fin.ids() == ["t0", "t1", "t2", "t3"]


def test_the_thread_retries_after_a_backend_error_with_backoff(
    made: list[AckBuffer], caplog: pytest.LogCaptureFixture
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=0.01)
    fake.fail = 1
    with caplog.at_level(logging.WARNING, logger="dtq.worker"):
        for i in range(3):
            buf.add(ctx(i), {"v": i})
        fin.wait(3)
    assert fake.times[1] - fake.times[0] >= 0.099  # backed off (0.1 s) before trying again
    assert fake.failed == [[item(0), item(1), item(2)]]
    assert fake.calls == [[item(0), item(1), item(2)]]
    assert fake.options == [{}, {"retry": True}]
    assert fin.ids() == ["t0", "t1", "t2"]  # each finished once, after the store
    assert "storing acknowledgements failed, retrying" in caplog.text

    buf.add(ctx(9), {"v": 9})  # the thread lives on
    fin.wait(4)
    assert fake.calls[-1] == [item(9)]


def test_a_failing_full_batch_raises_in_the_adder_and_keeps_the_acks(
    made: list[AckBuffer],
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG, max_batch=2)
    buf.add(ctx(0), {"v": 0})
    fake.fail = 1
    with pytest.raises(BackendError):
        buf.add(ctx(1), {"v": 1})
    assert buf.leases() == [("t0", 100), ("t1", 101)]
    buf.close()
    assert fake.calls == [[item(0), item(1)]]
    assert fin.ids() == ["t0", "t1"]


def test_an_unexpected_error_from_the_backend_keeps_the_acks_too(made: list[AckBuffer]) -> None:
    """Not only BackendError: a driver bug must not drop acks unstored (50b7d58 did)."""
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG)
    for i in range(2):
        buf.add(ctx(i), {"v": i})

    def boom(batch: object) -> None:
        fake.during = None
        raise RuntimeError("driver bug")

    fake.during = boom
    with pytest.raises(RuntimeError):
        buf.flush()
    assert buf.leases() == [("t0", 100), ("t1", 101)]
    buf.flush()
    assert fake.calls == [[item(0), item(1)]]
    assert fin.ids() == ["t0", "t1"]


# -- finish ---------------------------------------------------------------------------------


def test_a_failing_finish_is_logged_and_the_others_still_finish(
    made: list[AckBuffer], caplog: pytest.LogCaptureFixture
) -> None:
    fake, fin = FakeBackend(), Finished(raise_for="t1")
    buf = buffer(made, fake, fin, delay=0.01)
    with caplog.at_level(logging.ERROR, logger="dtq.worker"):
        for i in range(3):
            buf.add(ctx(i), {"v": i})
        fin.wait(3)
        buf.add(ctx(3), {"v": 3})  # the thread survived it
        fin.wait(4)
    assert fin.ids() == ["t0", "t1", "t2", "t3"]
    assert fake.stored() == [item(0), item(1), item(2), item(3)]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["after the ack of task t1"]
    assert errors[0].exc_info is not None


def test_a_stale_ack_is_finished_with_no_transitions(made: list[AckBuffer]) -> None:
    fake, fin = FakeBackend(), Finished()
    fake.stale = {"t1"}
    buf = buffer(made, fake, fin, delay=LONG)
    for i in range(3):
        buf.add(ctx(i), {"v": i})
    buf.flush()
    assert [(tid, new) for tid, new, _ in fin.done] == [
        ("t0", [S.SUCCESS]),
        ("t1", []),
        ("t2", [S.SUCCESS]),
    ]


# -- leases ---------------------------------------------------------------------------------


class BarePool(Pool):
    def start(self) -> None:
        pass

    def stop(self, drain_timeout: float) -> None:
        pass


def test_leases_list_the_waiting_acks_and_the_pool_renews_them(
    made: list[AckBuffer], make_broker: BrokerFactory
) -> None:
    fake, fin = FakeBackend(), Finished()
    buf = buffer(made, fake, fin, delay=LONG)
    assert buf.leases() == []
    buf.add(ctx(0), {"v": 0})
    buf.add(ctx(1), {"v": 1})
    assert buf.leases() == [("t0", 100), ("t1", 101)]

    pool = BarePool(make_broker(), 1)
    running = ctx(7).delivery
    pool.workers.append(WorkerInfo("w", "thread", current=running))
    pool.acks = buf
    assert sorted(pool.in_flight()) == [("t0", 100), ("t1", 101), ("t7", 107)]

    buf.flush()
    assert buf.leases() == []
    assert pool.in_flight() == [("t7", 107)]


# -- with the memory backend and the runner ------------------------------------------------------


def put(backend: MemoryBackend, n: int) -> list[Delivery]:
    now = time.time()
    for i in range(n):
        backend.enqueue(NewTask(f"m{i}", "job", "q", 0, b"{}"), now)
    got = backend.claim(["q"], "w", 30.0, n, now)
    assert [d.task_id for d in got] == [f"m{i}" for i in range(n)]
    return got


def test_memory_backend_stores_the_batch_and_refuses_a_stale_token(
    made: list[AckBuffer],
) -> None:
    backend = MemoryBackend()
    fin = Finished()
    buf = AckBuffer(backend, time.time, fin, delay=LONG)
    made.append(buf)
    ds = put(backend, 3)
    stale = ds[1]._replace(token=ds[1].token + 1000)
    for i, d in enumerate([ds[0], stale, ds[2]]):
        buf.add(Ctx(d), {"v": i})
    buf.flush()
    assert [(tid, new) for tid, new, _ in fin.done] == [
        ("m0", [S.SUCCESS]),
        ("m1", []),
        ("m2", [S.SUCCESS]),
    ]
    assert [backend.get_state(f"m{i}") for i in range(3)] == [S.SUCCESS, S.RUNNING, S.SUCCESS]
    rec = backend.get("m2")
    assert rec is not None and rec.result == {"v": 2}


def batching(make_broker: BrokerFactory, **overrides: Any) -> Any:
    """A memory broker whose backend claims the ``batch_acks`` capability."""
    broker = make_broker(**overrides)
    broker.backend.capabilities = broker.backend.capabilities._replace(batch_acks=True)
    broker.open()
    return broker


def test_runner_batches_on_local_stores_and_when_the_backend_asks_if_a_delay_is_set(
    make_broker: BrokerFactory,
) -> None:
    local = Runner(make_broker())
    local.batch_acks()
    assert local.acks is not None  # memory: one lock and one event batch per batch
    local.close()

    # A store in another process that does not ask for batches: each ack on its own.
    shared = make_broker()
    shared.backend.capabilities = shared.backend.capabilities._replace(cross_process=True)
    plain = Runner(shared)
    plain.batch_acks()
    assert plain.acks is None

    local_no_delay = Runner(make_broker(ack_delay_s=0.0))
    local_no_delay.batch_acks()
    assert local_no_delay.acks is None

    no_delay = Runner(batching(make_broker, ack_delay_s=0.0))
    no_delay.batch_acks()
    assert no_delay.acks is None

    r = Runner(batching(make_broker, ack_delay_s=0.25))
    r.batch_acks()
    assert r.acks is not None and r.acks.delay == 0.25
    first = r.acks
    r.batch_acks()
    assert r.acks is first
    r.close()


class AfterRun(Hook):
    """Records, for each settled attempt, the transitions and the stored state then."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, list[S], S | None]] = []

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        tid = ctx.delivery.task_id
        state = ctx.broker.backend.get_state(tid)
        self.seen.append((tid, exc is None, [t.new for t in transitions], state))


def test_runner_success_waits_and_its_events_and_hooks_follow_the_store(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    hook = AfterRun()
    broker = batching(make_broker, ack_delay_s=1.0, hooks=[hook], max_retries=0)

    @task(name="double", registry=registry)
    def double(x: int) -> int:
        return 2 * x

    ids = [broker.send("double", [i]).id for i in range(2)]
    bad = broker.send("double", [None]).id
    log = EventLog(broker)
    runner = Runner(broker)
    runner.batch_acks()
    assert runner.acks is not None
    info = WorkerInfo("w", "thread")
    for d in broker.backend.claim(None, "w", 30.0, 3, broker.clock.now()):
        c = runner.prepare(d, info)
        assert c is not None
        try:
            result, exc = double.fn(*c.args), None
        except TypeError as e:
            result, exc = None, e
        runner.settle(c, result, exc)

    # The successes wait: still RUNNING, no SUCCESS event, no after_run yet.
    assert [broker.backend.get_state(t) for t in ids] == [S.RUNNING, S.RUNNING]
    assert all(("RUNNING", "SUCCESS") not in log.transitions(t) for t in ids)
    assert runner.acks.leases() == [(t, broker.backend.get(t).lease_token) for t in ids]  # type: ignore[union-attr]
    # A failure does not wait behind them.
    assert [s[0] for s in hook.seen] == [bad]
    assert broker.backend.get_state(bad) not in (S.RUNNING, S.PENDING)

    runner.close()
    for i, t in enumerate(ids):
        assert broker.backend.get(t).result == 2 * i  # type: ignore[union-attr]
        assert log.transitions(t).count(("RUNNING", "SUCCESS")) == 1
    # after_run ran once per success, after the store, with its transition.
    assert hook.seen[1:] == [(t, True, [S.SUCCESS], S.SUCCESS) for t in ids]
