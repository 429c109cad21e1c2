"""Thread, process and asyncio pools: running, time limits, crashes, queues and stopping.

Tasks live in :mod:`tests.workers.pool_tasks` (a process pool's child imports them);
tests of one pool only may define theirs inline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dtq_core import TaskFailed, TaskState, task
from dtq_core.registry import Registry
from tests.conftest import BrokerFactory, EventLog
from tests.workers import pool_tasks as pt
from tests.workers.pool_tasks import FileEvent

POOLS = ["thread", "process", "async"]
PENDING, RUNNING, SUCCESS, DEAD = (
    TaskState.PENDING,
    TaskState.RUNNING,
    TaskState.SUCCESS,
    TaskState.DEAD,
)
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pool_broker(make_broker: BrokerFactory) -> BrokerFactory:
    """``make_broker`` on the registry of :mod:`tests.workers.pool_tasks`."""
    return partial(make_broker, registry=pt.registry)


@pytest.fixture
def file_event(tmp_path: Path) -> Callable[[], FileEvent]:
    """Make events shared by the test and any pool's workers (a fresh file each)."""
    made = iter(range(1_000_000))
    return lambda: FileEvent(tmp_path / f"event-{next(made)}")


def wait_all(results: list[Any], timeout: float = 15) -> list[Any]:
    return [r.get(timeout=timeout) for r in results]


# -- running ---------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
def test_pool_runs_sync_and_async_tasks(pool_broker: BrokerFactory, pool: str) -> None:
    broker = pool_broker(num_workers=2, pool=pool).start()
    results = [pt.add.apply_async((i, 1), broker=broker) for i in range(5)]
    results += [pt.aadd.apply_async((i, 2), broker=broker) for i in range(5)]
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
def test_task_errors_are_recorded_with_their_type(pool_broker: BrokerFactory, pool: str) -> None:
    broker = pool_broker(num_workers=1, pool=pool).start()
    res = pt.bad.apply_async((3,), broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert info.value.exc_type == "tests.workers.pool_tasks.Flaky"
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
    pool_broker: BrokerFactory,
) -> None:
    broker = pool_broker(num_workers=1, pool="process").start()
    before = pt.pid.apply_async(broker=broker).get(timeout=10)
    assert_time_limit(pt.stuck.apply_async(broker=broker))
    after = pt.pid.apply_async(broker=broker).get(timeout=10)
    assert after != before
    assert broker.pool.replaced == 1  # type: ignore[union-attr]
    assert pt.pid.apply_async(broker=broker).get(timeout=10) == after


@pytest.mark.parametrize("pool", POOLS)
def test_an_awaiting_async_task_is_stopped_at_its_time_limit(
    pool_broker: BrokerFactory, file_event: Callable[[], FileEvent], pool: str
) -> None:
    cancelled = file_event()
    broker = pool_broker(num_workers=1, pool=pool).start()
    assert_time_limit(pt.naps.apply_async((cancelled.path,), broker=broker))
    if pool != "process":  # a child is killed, not cancelled
        assert cancelled.wait(5)
    assert pt.ok.apply_async(broker=broker).get(timeout=10) == "fine"


def test_per_call_time_limit_applies(make_broker: BrokerFactory, registry: Registry) -> None:
    @task(name="spin2", registry=registry, max_retries=0)
    def spin2() -> None:
        while True:
            pass

    broker = make_broker(num_workers=1, pool="thread").start()
    assert_time_limit(spin2.apply_async(time_limit=0.3, broker=broker))


# -- crashes and remote errors in process mode -----------------------------------------


def test_a_crashed_child_fails_the_task_with_worker_crashed_and_it_retries(
    pool_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = pool_broker(num_workers=1, pool="process").start()
    res = pt.crashy.apply_async((str(tmp_path / "crashed-once"),), broker=broker)
    assert res.get(timeout=15) == "survived"
    rec = res.record()
    assert rec.attempt == 2
    [first] = rec.history
    assert first.error.type.endswith("WorkerCrashed")
    assert "worker process died (exit code 3)" in first.error.message


def test_a_child_that_always_crashes_goes_dead_per_policy(pool_broker: BrokerFactory) -> None:
    broker = pool_broker(num_workers=1, pool="process").start()
    res = pt.doomed.apply_async(broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert info.value.state == "DEAD" and info.value.exc_type.endswith("WorkerCrashed")
    assert [a.error.type.rsplit(".", 1)[-1] for a in res.record().attempts()] == [
        "WorkerCrashed",
        "WorkerCrashed",
    ]
    assert pt.job.apply_async((7,), broker=broker).get(timeout=10) == 7


def test_retry_on_matches_process_errors_by_class_name(
    pool_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = pool_broker(num_workers=1, pool="process").start()
    retried = pt.sub.apply_async((str(tmp_path / "flaked"),), broker=broker)
    assert retried.get(timeout=15) == "second call"
    assert retried.record().history[0].error.type == "tests.workers.pool_tasks.FlakySub"
    for t in (pt.other, pt.never):
        res = t.apply_async(broker=broker)
        with pytest.raises(TaskFailed):
            res.get(timeout=15)
        rec = res.record()
        assert rec.state is DEAD and rec.attempt == 1
        assert rec.dead_reason is not None and rec.dead_reason.startswith("not retried")


def test_process_mode_dead_reason_names_the_task_exception(pool_broker: BrokerFactory) -> None:
    broker = pool_broker(num_workers=1, pool="process").start()
    res = pt.other.apply_async(broker=broker)
    with pytest.raises(TaskFailed):
        res.get(timeout=15)
    assert res.record().dead_reason == "not retried: ValueError"


# -- finding tasks in a child process ----------------------------------------------------


def test_a_task_defined_in_a_function_is_dead_lettered_as_not_importable(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="inner", registry=registry)
    def inner() -> str:
        return "unreachable from a child"

    registry.register(pt.job)
    broker = make_broker(num_workers=1, pool="process").start()
    res = inner.apply_async(broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    rec = res.record()
    assert (rec.state, rec.dead_reason, rec.attempt) == (DEAD, "task not importable", 1)
    assert info.value.exc_type == "TaskNotImportable"
    assert info.value.message == (
        "task 'inner' cannot run in a worker process: tests.workers.test_pools."
        "test_a_task_defined_in_a_function_is_dead_lettered_as_not_importable.<locals>.inner "
        "is defined inside a function; define it at module level so that a worker process "
        "can import it"
    )
    assert pt.job.apply_async((1,), broker=broker).get(timeout=10) == 1  # the child lives on


def test_a_task_whose_module_fails_to_import_in_the_child_is_dead_lettered(
    make_broker: BrokerFactory, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.workers import parent_only_tasks

    registry.register(parent_only_tasks.here)
    with caplog.at_level("WARNING", logger="dtq.worker"):
        broker = make_broker(num_workers=1, pool="process").start()
    assert "cannot import task module 'tests.workers.parent_only_tasks'" in caplog.text
    res = parent_only_tasks.here.apply_async(broker=broker)
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=15)
    assert res.record().dead_reason == "task not importable"
    assert info.value.message == (
        "task 'parent_only.here' cannot run in a worker process: importing its module "
        "'tests.workers.parent_only_tasks' failed in the worker process: RuntimeError: "
        "imported in a child process"
    )


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the fork warning is new in 3.12")
def test_the_process_pool_never_forks_the_threaded_parent(
    pool_broker: BrokerFactory, file_event: Callable[[], FileEvent]
) -> None:
    # 3.12+ warns in the thread calling os.fork() when the process runs other threads.
    # The warnings module's filters are process-wide: this records any thread's warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        broker = pool_broker(num_workers=2, pool="process").start()
        assert threading.active_count() > 1
        assert wait_all([pt.add.apply_async((i, 1), broker=broker) for i in range(4)])
        assert_time_limit(pt.stuck.apply_async(broker=broker))  # and a replacement child
        assert pt.job.apply_async((5,), broker=broker).get(timeout=10) == 5
        broker.stop(drain_timeout=5)
    forks = [str(w.message) for w in caught if "fork()" in str(w.message)]
    assert forks == []


SCRIPT = textwrap.dedent(
    """
    import os

    from dtq_core import Broker, BrokerConfig, task


    @task(name="script.square")
    def square(x):
        return [x * x, os.getpid()]


    if __name__ == "__main__":
        broker = Broker(BrokerConfig(backend="memory://", num_workers=2, pool="process"))
        broker.start()
        try:
            out = [square.apply_async((i,), broker=broker).get(timeout=20) for i in range(4)]
        finally:
            broker.stop()
        assert os.getpid() not in {pid for _, pid in out}
        print([v for v, _ in out])
    """
)


def test_a_script_runs_its_own_tasks_in_a_process_pool(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "error::DeprecationWarning"}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "[0, 1, 4, 9]\n", "")


def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    # Each child imports the script to find its tasks: unguarded, it would start a broker.
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.replace('if __name__ == "__main__":\n', "if True:\n"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == (
        "dtq_core.errors.WorkerCrashed: worker process exited (code 1) before it was ready; "
        "its error is on stderr (a script that runs a process pool must guard its entry "
        "point with `if __name__ == '__main__':`)"
    )


# -- queues ----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
def test_queues_are_served_in_strict_order(pool_broker: BrokerFactory, pool: str) -> None:
    broker = pool_broker(num_workers=1, pool=pool, queues=("high", "low"))
    results = []
    for i in range(3):
        results.append(pt.mark.apply_async((f"low{i}",), queue="low", broker=broker))
        results.append(pt.mark.apply_async((f"high{i}",), queue="high", broker=broker))
    stray = pt.mark.apply_async(("stray",), queue="other", broker=broker)
    log = EventLog(broker)
    broker.start()
    tags = {r.id: tag for r, tag in zip(results, wait_all(results), strict=True)}
    seen = [tags[e.task_id] for e in log.events if e.new == RUNNING]
    assert seen == ["high0", "high1", "high2", "low0", "low1", "low2"]
    assert stray.state is PENDING


@pytest.mark.parametrize("pool", POOLS)
def test_a_paused_queue_is_not_consumed_while_others_are(
    pool_broker: BrokerFactory, pool: str
) -> None:
    broker = pool_broker(num_workers=2, pool=pool)
    broker.open()
    broker.backend.set_paused("b", True)
    held = [pt.job.apply_async((i,), queue="b", broker=broker) for i in range(2)]
    broker.start()
    assert wait_all([pt.job.apply_async((i,), queue="a", broker=broker) for i in range(4)])
    # Workers went round again after the first batch: the paused queue is still untouched.
    assert pt.job.apply_async((9,), queue="a", broker=broker).get(timeout=10) == 9
    assert [r.state for r in held] == [PENDING, PENDING]
    assert {q.name: q.paused for q in broker.control.snapshot().queues}["b"] is True
    broker.control.resume_queue("b")
    assert wait_all(held) == [0, 1]


# -- stopping --------------------------------------------------------------------------


def gate(pool: str, event: Callable[[], FileEvent]) -> tuple[Any, FileEvent]:
    """The gated task of ``pool``'s kind and its release event."""
    return (pt.agated if pool == "async" else pt.gated), event()


@pytest.mark.parametrize("pool", POOLS)
def test_graceful_stop_finishes_in_flight_and_leaves_the_queue(
    pool_broker: BrokerFactory, file_event: Callable[[], FileEvent], pool: str
) -> None:
    gated, release = gate(pool, file_event)
    started = [file_event() for _ in range(2)]
    broker = pool_broker(num_workers=2, pool=pool).start()
    running = [
        gated.apply_async((i, started[i].path, release.path), broker=broker) for i in range(2)
    ]
    assert all(ev.wait(10) for ev in started)
    waiting = [pt.queued.apply_async((i,), broker=broker) for i in range(3)]

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


@pytest.mark.parametrize("pool", POOLS)
def test_stop_without_drain_requeues_a_long_task(
    pool_broker: BrokerFactory, file_event: Callable[[], FileEvent], pool: str
) -> None:
    gated, release = gate(pool, file_event)
    started = file_event()
    broker = pool_broker(num_workers=1, pool=pool).start()
    try:
        res = gated.apply_async((0, started.path, release.path), broker=broker)
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
