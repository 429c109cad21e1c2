"""The quick start as users run it, the ``with Broker(...)`` form and producer-only brokers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dtq_core
from dtq_core import Broker, BrokerConfig, StopSummary, TaskNotRegistered, TaskState, task
from dtq_core.registry import Registry
from tests.conftest import BrokerFactory


def quickstart_code() -> str:
    """The code block of the package docstring, exactly as the README shows it."""
    doc = dtq_core.__doc__ or ""
    _, marker, block = doc.partition("Quick start::")
    assert marker, "the package docstring lost its quick start"
    return textwrap.dedent(block).strip() + "\n"


def test_quickstart_block_is_the_documented_one() -> None:
    code = quickstart_code()
    assert code.startswith("from dtq_core import Broker, BrokerConfig, task, set_default_broker")
    assert "print(add.delay(2, 3).get(timeout=10))  # 5" in code
    assert code.rstrip().endswith("broker.stop()")


@pytest.mark.timeout(60)
def test_quickstart_runs_in_a_fresh_interpreter_and_prints_5(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DTQ_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", quickstart_code()],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "5"


@pytest.mark.timeout(30)
def test_with_broker_starts_runs_and_stops(registry: Registry) -> None:
    @task(name="add", registry=registry)
    def add(a: int, b: int) -> int:
        return a + b

    with Broker(BrokerConfig(num_workers=2, backend="memory://", registry=registry)) as broker:
        assert broker.running
        res = add.apply_async((2, 3), broker=broker)
        assert res.get(timeout=10) == 5
        assert res.state is TaskState.SUCCESS
        assert res.successful() and res.ready()
    assert not broker.running
    summary = broker.wait_until_stopped(timeout=0)
    assert isinstance(summary, StopSummary) and summary.drained and summary.processed == 1


@pytest.mark.timeout(30)
def test_producer_only_broker_enqueues_and_answers_but_runs_nothing(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    calls: list[int] = []

    @task(name="record", registry=registry)
    def record(x: int) -> int:
        calls.append(x)
        return x

    broker = make_broker(num_workers=0).start()
    assert broker.pool is None
    results = [record.apply_async((i,), broker=broker) for i in range(3)]

    for i, res in enumerate(results):
        assert res.state is TaskState.PENDING
        assert not res.ready()
        rec = res.record()
        assert rec is not None and rec.args == [i]
    with pytest.raises(TimeoutError):
        results[0].get(timeout=0.3)
    snap = broker.control.snapshot()
    assert snap.counts["PENDING"] == 3
    assert snap.in_flight == 0
    assert snap.workers == ()
    assert [(q.name, q.ready) for q in snap.queues] == [("default", 3)]
    assert calls == []
    assert all(r.state is TaskState.PENDING for r in results)

    with pytest.raises(TaskNotRegistered, match="nope"):
        broker.send("nope")
