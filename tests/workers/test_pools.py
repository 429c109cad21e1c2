"""Thread, process and asyncio pools: running, time limits, crashes, queues and stopping."""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core import TaskFailed, TaskState, task
from dtq_core.registry import Registry
from tests.conftest import BrokerFactory, EventLog

POOLS = ["thread", "process", "async"]
PENDING, RUNNING, SUCCESS, DEAD = (
    TaskState.PENDING,
    TaskState.RUNNING,
    TaskState.SUCCESS,
    TaskState.DEAD,
)

pytestmark = pytest.mark.timeout(30)


class PipeEvent:
    """An event shared by threads and forked children (a killed waiter cannot jam it).

    ``set`` writes a byte that nobody reads; ``wait`` polls the pipe for it.
    """

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def set(self) -> None:
        if not self.is_set():
            os.write(self.w, b"x")

    def wait(self, timeout: float) -> bool:
        return bool(select.select([self.r], [], [], timeout)[0])

    def is_set(self) -> bool:
        return self.wait(0)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def pipe_event() -> Iterator[Callable[[], PipeEvent]]:
    made: list[PipeEvent] = []

    def make() -> PipeEvent:
        made.append(PipeEvent())
        return made[-1]

    yield make
    for ev in made:
        ev.close()


class Flaky(Exception):
    """Worth retrying."""


class FlakySub(Flaky):
    """A kind of Flaky: matched by ``retry_on=(Flaky,)`` across the process boundary."""


def first_time(marker: Path) -> bool:
    """True on the first call with this marker, in any process."""
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def wait_all(results: list[Any], timeout: float = 15) -> list[Any]:
    return [r.get(timeout=timeout) for r in results]


# -- running ---------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
def test_pool_runs_sync_and_async_tasks(
    make_broker: BrokerFactory, registry: Registry, pool: str
) -> None:
    @task(name="add", registry=registry)
    def add(a: int, b: int) -> list[int]:
        return [a + b, os.getpid()]

    @task(name="aadd", registry=registry)
    async def aadd(a: int, b: int) -> list[int]:
        await asyncio.sleep(0.01)
        return [a + b, os.getpid()]

    broker = make_broker(num_workers=2, pool=pool).start()
    results = [add.apply_async((i, 1), broker=broker) for i in range(5)]
    results += [aadd.apply_async((i, 2), broker=broker) for i in range(5)]
    out = wait_all(results)
    assert [v for v, _ in out] == [1, 2, 3, 4, 5, 2, 3, 4, 5, 6]
    pids = {pid for _, pid in out}
    if pool == "process":
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}
    assert all(r.state is SUCCESS for r in results)
    snap = broker.control.snapshot()
    assert {w.pool for w in snap.workers} == {pool}


@pytest.mark.parametrize("pool", POOLS)
def test_task_errors_are_recorded_with_their_type(
    make_broker: BrokerFactory, registry: Registry, pool: str
) -> None:
    @task(name="bad", registry=registry, max_retries=0)
    def bad(n: int) -> None:
        raise Flaky(f"flaked {n}")

    broker = make_broker(num_workers=1, pool=pool).start()
    res = bad.apply_async((3,), broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert info.value.exc_type == f"{__name__}.Flaky"
    assert info.value.message == "flaked 3"
    assert "raise Flaky" in info.value.traceback
    assert [r.id for r in broker.dlq.list("exc:Flaky")] == [res.id]


# -- time limits -----------------------------------------------------------------------


def assert_time_limit(res: Any) -> None:
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert info.value.exc_type.endswith("TimeLimitExceeded")
    assert "time limit" in info.value.message


def test_thread_pool_interrupts_a_busy_python_loop(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="spin", registry=registry, max_retries=0, time_limit=0.3)
    def spin() -> int:
        n = 0
        while True:
            n += 1

    @task(name="after", registry=registry)
    def after() -> str:
        return "still working"

    broker = make_broker(num_workers=1, pool="thread").start()
    assert_time_limit(spin.apply_async(broker=broker))
    assert after.apply_async(broker=broker).get(timeout=10) == "still working"


def test_process_pool_kills_a_child_stuck_in_sleep_and_replaces_it(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="stuck", registry=registry, max_retries=0, time_limit=0.5)
    def stuck() -> None:
        time.sleep(60)

    @task(name="pid", registry=registry)
    def pid() -> int:
        return os.getpid()

    broker = make_broker(num_workers=1, pool="process").start()
    before = pid.apply_async(broker=broker).get(timeout=10)
    assert_time_limit(stuck.apply_async(broker=broker))
    after = pid.apply_async(broker=broker).get(timeout=10)
    assert after != before
    assert broker.pool.replaced == 1  # type: ignore[union-attr]
    assert pid.apply_async(broker=broker).get(timeout=10) == after


@pytest.mark.parametrize("pool", POOLS)
def test_an_awaiting_async_task_is_stopped_at_its_time_limit(
    make_broker: BrokerFactory, registry: Registry, pool: str
) -> None:
    cancelled = threading.Event()

    @task(name="naps", registry=registry, max_retries=0, time_limit=0.3)
    async def naps() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @task(name="ok", registry=registry)
    async def ok() -> str:
        return "fine"

    broker = make_broker(num_workers=1, pool=pool).start()
    assert_time_limit(naps.apply_async(broker=broker))
    if pool != "process":  # a child is killed, not cancelled
        assert cancelled.wait(5)
    assert ok.apply_async(broker=broker).get(timeout=10) == "fine"


def test_per_call_time_limit_applies(make_broker: BrokerFactory, registry: Registry) -> None:
    @task(name="spin2", registry=registry, max_retries=0)
    def spin2() -> None:
        while True:
            pass

    broker = make_broker(num_workers=1, pool="thread").start()
    assert_time_limit(spin2.apply_async(time_limit=0.3, broker=broker))


# -- crashes and remote errors in process mode -----------------------------------------


def test_a_crashed_child_fails_the_task_with_worker_crashed_and_it_retries(
    make_broker: BrokerFactory, registry: Registry, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed-once"

    @task(name="crashy", registry=registry, max_retries=2, retry_backoff=0.05, retry_jitter="none")
    def crashy() -> str:
        if first_time(marker):
            os._exit(3)
        return "survived"

    broker = make_broker(num_workers=1, pool="process").start()
    res = crashy.apply_async(broker=broker)
    assert res.get(timeout=15) == "survived"
    rec = res.record()
    assert rec.attempt == 2
    [first] = rec.history
    assert first.error.type.endswith("WorkerCrashed")
    assert "worker process died (exit code 3)" in first.error.message


def test_a_child_that_always_crashes_goes_dead_per_policy(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="doomed", registry=registry, max_retries=1, retry_backoff=0.05, retry_jitter="none")
    def doomed() -> None:
        os._exit(1)

    @task(name="fine", registry=registry)
    def fine() -> str:
        return "fine"

    broker = make_broker(num_workers=1, pool="process").start()
    res = doomed.apply_async(broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert info.value.state == "DEAD" and info.value.exc_type.endswith("WorkerCrashed")
    assert [a.error.type.rsplit(".", 1)[-1] for a in res.record().attempts()] == [
        "WorkerCrashed",
        "WorkerCrashed",
    ]
    assert fine.apply_async(broker=broker).get(timeout=10) == "fine"


def test_retry_on_matches_process_errors_by_class_name(
    make_broker: BrokerFactory, registry: Registry, tmp_path: Path
) -> None:
    marker = tmp_path / "flaked"

    @task(name="sub", registry=registry, retry_on=(Flaky,), retry_backoff=0.05, retry_jitter="none")
    def sub() -> str:
        if first_time(marker):
            raise FlakySub("first call")
        return "second call"

    @task(name="other", registry=registry, retry_on=(Flaky,), max_retries=3)
    def other() -> None:
        raise ValueError("not flaky")

    @task(name="never", registry=registry, dont_retry_on=(Flaky,), max_retries=3)
    def never() -> None:
        raise FlakySub("no retry for you")

    broker = make_broker(num_workers=1, pool="process").start()
    retried = sub.apply_async(broker=broker)
    assert retried.get(timeout=15) == "second call"
    assert retried.record().history[0].error.type == f"{__name__}.FlakySub"
    for t in (other, never):
        res = t.apply_async(broker=broker)
        with pytest.raises(TaskFailed):
            res.get(timeout=15)
        rec = res.record()
        assert rec.state is DEAD and rec.attempt == 1
        assert rec.dead_reason is not None and rec.dead_reason.startswith("not retried")


def test_process_mode_dead_reason_names_the_task_exception(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="other", registry=registry, retry_on=(Flaky,), max_retries=3)
    def other() -> None:
        raise ValueError("not flaky")

    broker = make_broker(num_workers=1, pool="process").start()
    res = other.apply_async(broker=broker)
    with pytest.raises(TaskFailed):
        res.get(timeout=15)
    assert res.record().dead_reason == "not retried: ValueError"


# -- queues ----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
def test_queues_are_served_in_strict_order(
    make_broker: BrokerFactory, registry: Registry, pool: str
) -> None:
    @task(name="mark", registry=registry)
    def mark(tag: str) -> str:
        return tag

    broker = make_broker(num_workers=1, pool=pool, queues=("high", "low"))
    results = []
    for i in range(3):
        results.append(mark.apply_async((f"low{i}",), queue="low", broker=broker))
        results.append(mark.apply_async((f"high{i}",), queue="high", broker=broker))
    stray = mark.apply_async(("stray",), queue="other", broker=broker)
    log = EventLog(broker)
    broker.start()
    tags = {r.id: tag for r, tag in zip(results, wait_all(results), strict=True)}
    seen = [tags[e.task_id] for e in log.events if e.new == RUNNING]
    assert seen == ["high0", "high1", "high2", "low0", "low1", "low2"]
    assert stray.state is PENDING


@pytest.mark.parametrize("pool", POOLS)
def test_a_paused_queue_is_not_consumed_while_others_are(
    make_broker: BrokerFactory, registry: Registry, pool: str
) -> None:
    @task(name="job", registry=registry)
    def job(x: int) -> int:
        return x

    broker = make_broker(num_workers=2, pool=pool)
    broker.open()
    broker.backend.set_paused("b", True)
    held = [job.apply_async((i,), queue="b", broker=broker) for i in range(2)]
    broker.start()
    assert wait_all([job.apply_async((i,), queue="a", broker=broker) for i in range(4)])
    # Workers went round again after the first batch: the paused queue is still untouched.
    assert job.apply_async((9,), queue="a", broker=broker).get(timeout=10) == 9
    assert [r.state for r in held] == [PENDING, PENDING]
    assert {q.name: q.paused for q in broker.control.snapshot().queues}["b"] is True
    broker.control.resume_queue("b")
    assert wait_all(held) == [0, 1]


# -- stopping --------------------------------------------------------------------------


def gated_tasks(
    registry: Registry, pool: str, event: Callable[[], PipeEvent]
) -> tuple[Any, Any, list[PipeEvent], PipeEvent]:
    """A task that signals ``started[i]`` and waits for ``release``; and a plain one."""
    started = [event() for _ in range(2)]
    release = event()

    if pool == "async":

        @task(name="gated", registry=registry)
        async def gated(i: int) -> int:
            started[i].set()
            while not release.is_set():
                await asyncio.sleep(0.02)
            return i

    else:

        @task(name="gated", registry=registry)
        def gated(i: int) -> int:
            started[i].set()
            # Short waits: a thread worker can only be interrupted between bytecodes.
            while not release.wait(0.02):
                pass
            return i

    @task(name="queued", registry=registry)
    def queued(i: int) -> int:
        return i

    return gated, queued, started, release


@pytest.mark.parametrize("pool", POOLS)
def test_graceful_stop_finishes_in_flight_and_leaves_the_queue(
    make_broker: BrokerFactory, registry: Registry, pipe_event: Callable[[], PipeEvent], pool: str
) -> None:
    gated, queued, started, release = gated_tasks(registry, pool, pipe_event)
    broker = make_broker(num_workers=2, pool=pool).start()
    running = [gated.apply_async((i,), broker=broker) for i in range(2)]
    assert all(ev.wait(10) for ev in started)
    waiting = [queued.apply_async((i,), broker=broker) for i in range(3)]

    summary: list[Any] = []
    stopper = threading.Thread(target=lambda: summary.append(broker.stop(drain_timeout=20)))
    stopper.start()
    assert broker.pool is not None and broker.pool.stopping.wait(10)
    release.set()
    stopper.join(25)
    assert not stopper.is_alive()
    [s] = summary
    assert s.drained and s.left_queued == 3 and s.processed == 2 and s.failed == 0
    assert [r.get(timeout=1) for r in running] == [0, 1]
    for r in waiting:
        rec = r.record()
        assert (rec.state, rec.attempt, rec.deliveries) == (PENDING, 0, 0)


def long_task(
    registry: Registry, pool: str, event: Callable[[], PipeEvent]
) -> tuple[Any, PipeEvent, PipeEvent]:
    started, release = event(), event()
    if pool == "async":

        @task(name="long", registry=registry)
        async def long() -> str:
            started.set()
            while not release.is_set():
                await asyncio.sleep(0.02)
            return "done"

    else:

        @task(name="long", registry=registry)
        def long() -> str:
            started.set()
            while not release.wait(0.02):
                pass
            return "done"

    return long, started, release


@pytest.mark.parametrize(
    "pool",
    [
        "thread",
        "process",
        "async",
    ],
)
def test_stop_without_drain_requeues_a_long_task(
    make_broker: BrokerFactory, registry: Registry, pipe_event: Callable[[], PipeEvent], pool: str
) -> None:
    long, started, release = long_task(registry, pool, pipe_event)
    broker = make_broker(num_workers=1, pool=pool).start()
    try:
        res = long.apply_async(broker=broker)
        assert started.wait(10)
        t0 = time.monotonic()
        summary = broker.stop(drain_timeout=0)
        elapsed = time.monotonic() - t0
        rec = res.record()
        assert rec.state is PENDING
        assert (rec.attempt, rec.deliveries) == (0, 0)
        assert not summary.drained
        assert summary.left_queued == 1
        assert elapsed < 4
    finally:
        release.set()


def test_a_hard_stop_interrupts_only_the_task_not_what_follows_it(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="quick", registry=registry)
    def quick() -> str:
        return "done"

    in_subscriber, release = threading.Event(), threading.Event()
    interrupted: list[str] = []
    later: list[Any] = []

    def slow_subscriber(ev: Any) -> None:
        # Runs on the worker thread after the task returned and was acked.
        if ev.new != SUCCESS:
            return
        in_subscriber.set()
        try:
            while not release.wait(0.01):
                pass
        except BaseException as exc:
            interrupted.append(type(exc).__name__)
            raise

    broker = make_broker(num_workers=1, pool="thread")
    broker.events.subscribe(slow_subscriber)
    broker.events.subscribe(lambda ev: later.append((ev.old, ev.new)))
    broker.start()
    res = quick.apply_async(broker=broker)
    assert in_subscriber.wait(10)
    try:
        broker.stop(drain_timeout=0)
    finally:
        release.set()
    assert res.get(timeout=5) == "done"
    assert interrupted == []
    deadline = time.monotonic() + 5
    while (RUNNING, SUCCESS) not in later and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker thread finishes the event after release
    assert (RUNNING, SUCCESS) in later  # the next subscriber saw the event too
