"""Console test fixtures: frozen local time, a fake console, and a real engine."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from dtq_core import Broker, BrokerConfig, task
from dtq_core.registry import Registry
from dtq_core.task import TaskRecord, TaskState
from dtq_tui.app import DTQApp
from tests.tui.fake import FakeConsole


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no async plugin is required)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


@pytest.fixture(autouse=True, scope="session")
def _utc() -> Iterator[None]:
    """Clock columns render the same on every machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def fake() -> FakeConsole:
    """A console over fixed data."""
    return FakeConsole()


@pytest.fixture
def fake_app(fake: FakeConsole) -> DTQApp:
    """The app over the fake console, refreshing fast."""
    return DTQApp(fake, refresh_s=1.0)


async def until(pilot: Pilot[Any], cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the app run until ``cond()`` holds (the UI answers through messages)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {cond}")
        # A plain sleep: the app's loop keeps running; Pilot's idle detection would wait
        # for the whole process (engine threads included) to go quiet.
        await asyncio.sleep(0.01)


async def until_engine(cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for an engine-side condition without blocking the app's loop."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {cond}")
        await asyncio.sleep(0.02)


class Engine:
    """A real broker on memory:// with worker threads and its own registry.

    ``flaky(x)`` fails with ``ValueError("boom <x>")`` while :attr:`broken` and ``x < 10``
    (no retries: it goes straight to the dead-letter queue), else returns ``2 * x``.
    """

    def __init__(self) -> None:
        self.registry = Registry()
        self.broken = True
        engine = self

        @task(name="flaky", registry=self.registry, max_retries=0)
        def flaky(x: int) -> int:
            if engine.broken and x < 10:
                raise ValueError(f"boom {x}")
            return 2 * x

        @task(name="echo", registry=self.registry, queue="echoes", max_retries=0)
        def echo(x: int) -> int:
            return x

        self.broker = Broker(
            BrokerConfig(
                backend="memory://", num_workers=2, registry=self.registry, heartbeat_s=0.5
            )
        )
        self.broker.start()
        self.console = self.broker.control

    def send(self, name: str, *args: Any, **kw: Any) -> str:
        return self.broker.send(name, list(args), **kw).id

    def dead(self, *xs: int) -> list[str]:
        """Enqueue ``flaky(x)`` for each x while broken; return their ids once dead."""
        ids = [self.send("flaky", x) for x in xs]
        for i in ids:
            rec = self.broker.wait(i, timeout=10)
            assert rec.state is TaskState.DEAD, rec.state
        return ids

    def record(self, task_id: str) -> TaskRecord | None:
        return self.console.task(task_id)

    def stop(self) -> None:
        self.broker.stop(drain_timeout=1.0)


@pytest.fixture
def engine() -> Iterator[Engine]:
    """A running engine, stopped at teardown."""
    e = Engine()
    yield e
    e.stop()
