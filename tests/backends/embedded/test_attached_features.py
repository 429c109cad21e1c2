"""Every producer feature works from a broker attached to an embedded owner.

The owner and the attached broker live in this process (a second open of a directory
in the same process attaches to its socket, as another process would), so the test
can look at both sides: dedup across the two, cancel, apply_many, result waits, DAG
runs, cron ticks, and the Console API of the attached broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core import Broker, BrokerConfig, TaskState, task
from dtq_core.filters import TaskFilter
from dtq_core.registry import Registry
from dtq_core.scheduling.dag import Workflow, run_workflow, wait_workflow
from dtq_core.scheduling.periodic import PeriodicHook, periodic

S = TaskState


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Broker, Broker, Registry]]:
    reg = Registry()

    @task(name="double", registry=reg)
    def double(x: int) -> int:
        return 2 * x

    @task(name="add_up", registry=reg)
    def add_up(upstream: dict[str, int]) -> int:
        return sum(upstream.values())

    url = f"embedded://{tmp_path / 'data'}"
    owner = Broker(BrokerConfig(backend=url, num_workers=2, registry=reg)).start()
    attached = Broker(BrokerConfig(backend=url, num_workers=0, registry=reg))
    attached.open()
    assert attached.backend.info()["role"] == "attached"
    yield owner, attached, reg
    attached.stop()
    owner.stop()


def test_dedup_holds_across_the_owner_and_an_attached_producer(pair: Any) -> None:
    owner, attached, _ = pair
    owner.backend.set_paused("default", True)
    first = attached.send("double", [1], dedup_key="order-1")
    again = owner.send("double", [2], dedup_key="order-1")
    assert again.id == first.id
    other = attached.send("double", [3], dedup_key="order-1")
    assert other.id == first.id
    owner.backend.set_paused("default", False)
    assert first.get(timeout=10) == 2


def test_cancel_apply_many_and_results(pair: Any) -> None:
    owner, attached, reg = pair
    owner.backend.set_paused("default", True)
    doomed = attached.send("double", [5])
    assert attached.cancel(doomed.id) is True
    assert owner.backend.get(doomed.id).state is S.CANCELLED
    results = reg.get("double").apply_many([(i,) for i in range(50)], broker=attached)
    owner.backend.set_paused("default", False)
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(50)]
    # The owner's event bus saw the attached producer's enqueues.
    names = {ev.task_id for ev in owner.events.since(0, 10_000) if ev.old is None}
    assert {r.id for r in results} <= names


def test_a_dag_run_started_from_an_attached_broker(pair: Any) -> None:
    _, attached, _ = pair
    wf = Workflow("sum")
    wf.node("a", "double", args=[1])
    wf.node("b", "double", args=[2])
    wf.node("total", "add_up", after=["a", "b"], pass_results=True)
    run_id = run_workflow(attached, wf)
    snap = wait_workflow(attached, run_id, timeout=15)
    assert snap.state == "success", snap
    assert {n.id: n.state for n in snap.nodes} == dict.fromkeys(("a", "b", "total"), "success")
    total = next(n for n in snap.nodes if n.id == "total")
    assert attached.backend.get(total.task_id).result == 6


def test_cron_ticks_fire_once_from_two_schedulers(pair: Any) -> None:
    owner, attached, reg = pair
    schedules: dict[str, Any] = {}

    @periodic("* * * * *", name="every-minute", registry=reg, schedules=schedules)
    def every_minute() -> str:
        return "tick"

    hooks = [PeriodicHook(schedules), PeriodicHook(schedules)]
    now = owner.clock.now()
    for hook, broker in zip(hooks, (owner, attached), strict=True):
        hook.attach(broker)
        hook.tick(broker, now + 61)
    fired = owner.backend.list_tasks(TaskFilter(task="every-minute"), now, 0, 100)
    assert len(fired) == 1


def test_the_attached_brokers_console_sees_the_owner_store(pair: Any) -> None:
    _, attached, _ = pair
    r = attached.send("double", [21])
    assert r.get(timeout=10) == 42
    snap = attached.control.snapshot()
    assert snap.counts["SUCCESS"] >= 1
    assert snap.backend_info["role"] == "attached"
    assert len(snap.workers) == 2  # the owner's workers, through its heartbeats
    assert attached.control.task(r.id).result == 42
