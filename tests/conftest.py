"""Shared fixtures: a fresh task registry, a fake clock and brokers that clean up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dtq_core import Broker, BrokerConfig, set_default_broker
from dtq_core.clock import FakeClock
from dtq_core.events import Event
from dtq_core.registry import Registry


@pytest.fixture
def registry() -> Registry:
    """A registry of this test's own, so task names never collide across tests."""
    return Registry()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


BrokerFactory = Callable[..., Broker]


@pytest.fixture
def make_broker(registry: Registry) -> Iterator[BrokerFactory]:
    """Build brokers on ``registry`` (memory backend); every one is stopped at teardown.

    Keyword arguments are :class:`BrokerConfig` fields; ``num_workers`` defaults to 0
    (run tasks inline with ``broker.work()``) and ``own`` to True.
    """
    made: list[Broker] = []

    def make(**overrides: Any) -> Broker:
        overrides.setdefault("num_workers", 0)
        overrides.setdefault("backend", "memory://")
        overrides.setdefault("registry", registry)
        # Inline brokers run tasks themselves (work()): they own an embedded store.
        overrides.setdefault("own", True)
        broker = Broker(BrokerConfig(**overrides))
        made.append(broker)
        return broker

    yield make
    set_default_broker(None)
    for broker in made:
        # A short drain, not 0: a hard stop right after a task finished can land its
        # WorkerShutdown outside the task (see test_pools' hard-stop xfail).
        broker.stop(drain_timeout=2.0)


@pytest.fixture
def inline(make_broker: BrokerFactory, clock: FakeClock) -> Broker:
    """A producer-only broker on the fake clock: ``work()`` runs tasks, ``tick()`` schedules."""
    return make_broker(clock=clock, seed=7)


class EventLog:
    """Collects the events a broker publishes, as ``(old, new)`` pairs per task."""

    def __init__(self, broker: Broker) -> None:
        self.events: list[Event] = []
        self.unsubscribe = broker.events.subscribe(self.events.append)

    def transitions(self, task_id: str) -> list[tuple[str | None, str]]:
        """The ``(old, new)`` state pairs of one task, in publication order."""
        return [(e.old, e.new) for e in self.events if e.task_id == task_id]


@pytest.fixture
def event_log() -> Callable[[Broker], EventLog]:
    """Subscribe an :class:`EventLog` to a broker."""
    return EventLog


@pytest.fixture(autouse=True)
def _isolate_global_registries() -> Iterator[None]:
    """Tasks and schedules registered globally by one test are gone for the next."""
    from dtq_core.registry import default_registry
    from dtq_core.scheduling.periodic import default_schedules

    tasks = dict(default_registry._tasks)
    schedules = dict(default_schedules._items)
    yield
    default_registry._tasks.clear()
    default_registry._tasks.update(tasks)
    default_schedules._items.clear()
    default_schedules._items.update(schedules)
