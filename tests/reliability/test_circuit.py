"""Circuit breakers: tripping in a window or on a ratio, holding, probing, manual control."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from dtq_core import Broker, ConfigError, TaskState, task
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from dtq_core.snapshot import BreakerSnapshot
from dtq_core.workers.base import WorkerInfo
from dtq_core.workers.runner import Runner
from tests.conftest import BrokerFactory

PENDING, SUCCESS, DEAD = TaskState.PENDING, TaskState.SUCCESS, TaskState.DEAD
WINDOW, RESET, THRESHOLD = 10.0, 30.0, 3


class Downstream(Exception):
    """The service behind the breaker is down."""


@dataclass
class Service:
    """A task behind a breaker whose outcome the test controls."""

    task: Any
    clock: FakeClock
    t0: float
    failing: bool = True
    calls: list[tuple[int, float]] = field(default_factory=list)

    def ran(self) -> list[int]:
        return [i for i, _ in self.calls]


def make_service(registry: Registry, clock: FakeClock, name: str = "svc", **opts: Any) -> Service:
    options: dict[str, Any] = {
        "breaker": True,
        "breaker_threshold": THRESHOLD,
        "breaker_window": WINDOW,
        "breaker_reset": RESET,
        "max_retries": 0,
        **opts,
    }
    svc = Service(None, clock, clock.now())

    @task(name=name, registry=registry, **options)
    def call(i: int) -> int:
        svc.calls.append((i, clock.now() - svc.t0))
        if svc.failing:
            raise Downstream(f"call {i} refused")
        return i

    svc.task = call
    return svc


@pytest.fixture
def svc(registry: Registry, clock: FakeClock) -> Service:
    return make_service(registry, clock)


def breaker(broker: Broker, key: str = "svc") -> BreakerSnapshot:
    [b] = [b for b in broker.control.snapshot().breakers if b.key == key]
    return b


def fail_times(broker: Broker, svc: Service, gaps: list[float], start: int = 0) -> None:
    """One failing call after each gap (seconds)."""
    for n, gap in enumerate(gaps):
        svc.clock.advance(gap)
        svc.task.apply_async((start + n,), broker=broker)
        broker.work()


def trip(broker: Broker, svc: Service) -> None:
    fail_times(broker, svc, [0.0, 1.0, 1.0], start=100)
    assert breaker(broker).state == "open"


def advance_and_work(broker: Broker, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    broker.tick()
    broker.work()


# -- tripping --------------------------------------------------------------------------


def test_opens_after_threshold_failures_within_the_window(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    inline.open()
    assert breaker(inline).state == "closed"
    fail_times(inline, svc, [0.0, 1.0])
    assert breaker(inline).state == "closed"
    assert breaker(inline).failures == 2
    fail_times(inline, svc, [1.0], start=2)
    b = breaker(inline)
    assert b.state == "open"
    assert b.failures == THRESHOLD
    assert b.threshold == THRESHOLD
    assert b.opened_at == clock.now()
    assert b.next_probe_at == clock.now() + RESET
    assert not b.manual


def test_failures_spread_beyond_the_window_do_not_trip(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    fail_times(inline, svc, [0.0, 6.0, 6.0, 6.0, 6.0])
    b = breaker(inline)
    assert b.state == "closed"
    assert b.failures == 2  # only those of the last 10 s count
    assert svc.ran() == [0, 1, 2, 3, 4]
    clock.advance(WINDOW)
    assert breaker(inline).failures == 0


def test_successes_do_not_trip_and_are_counted(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    svc.failing = False
    for i in range(10):
        svc.task.apply_async((i,), broker=inline)
    inline.work()
    b = breaker(inline)
    assert (b.state, b.failures, b.successes) == ("closed", 0, 10)


# -- holding while open ----------------------------------------------------------------


def test_tasks_are_held_not_dead_lettered_while_open(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    trip(inline, svc)
    dead_before = inline.backend.count_dead()
    held = [svc.task.apply_async((i,), broker=inline) for i in range(3)]
    inline.work()
    advance_and_work(inline, clock, RESET / 2)
    assert svc.ran() == [100, 101, 102], "nothing runs while the breaker is open"
    for r in held:
        rec = r.record()
        assert rec.state is PENDING
        assert rec.attempt == 0
        assert rec.error is None
    assert inline.backend.count_dead() == dead_before
    b = breaker(inline)
    assert b.held == 3
    assert b.next_probe_at == b.opened_at + RESET


def test_a_retry_that_comes_due_while_open_is_held(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    svc = make_service(registry, clock, max_retries=5, retry_backoff=1.0, retry_jitter="none")
    broker = make_broker(clock=clock)
    res = svc.task.apply_async((1,), broker=broker)
    broker.work()  # attempt 1 fails; retry due in 1 s
    fail_times(broker, svc, [0.0, 0.0], start=2)  # two more failures trip the breaker
    assert breaker(broker).state == "open"
    for _ in range(10):
        advance_and_work(broker, clock, 2.0)
    assert res.record().attempt == 1, "the retry waits for the breaker"
    assert res.state is PENDING


def test_an_open_breaker_survives_a_restart_on_a_durable_store(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock, tmp_path: Any
) -> None:
    svc = make_service(registry, clock)
    url = f"embedded://{tmp_path / 'store'}"
    before = make_broker(clock=clock, backend=url)
    trip(before, svc)
    opened = breaker(before).opened_at
    before.stop(drain_timeout=0.0)
    after = make_broker(clock=clock, backend=url)
    svc.failing = False
    res = svc.task.apply_async((1,), broker=after)
    after.work()
    assert res.state is PENDING
    b = breaker(after)
    assert (b.state, b.opened_at, b.held) == ("open", opened, 1)
    advance_and_work(after, clock, RESET)
    assert res.state is SUCCESS


# -- half-open, probes -----------------------------------------------------------------


def test_after_reset_a_probe_success_closes_and_releases_everyone(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    trip(inline, svc)
    opened = breaker(inline).opened_at
    assert opened is not None
    held = [svc.task.apply_async((i,), broker=inline) for i in range(3)]
    inline.work()
    svc.failing = False
    clock.set(opened + RESET - 0.1)
    inline.tick()
    inline.work()
    assert svc.ran() == [100, 101, 102]
    clock.set(opened + RESET)
    inline.tick()
    inline.work()
    assert svc.ran() == [100, 101, 102, 0, 1, 2]
    assert [r.state for r in held] == [SUCCESS] * 3
    b = breaker(inline)
    assert (b.state, b.failures, b.opened_at, b.next_probe_at) == ("closed", 0, None, None)


def test_a_probe_failure_reopens_the_breaker(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    trip(inline, svc)
    held = [svc.task.apply_async((i,), broker=inline) for i in range(3)]
    inline.work()
    advance_and_work(inline, clock, RESET)
    assert svc.ran() == [100, 101, 102, 0], "one probe, which failed"
    b = breaker(inline)
    assert b.state == "open"
    assert b.opened_at == clock.now()
    assert b.next_probe_at == clock.now() + RESET
    assert held[0].state is DEAD  # the probe's own failure (no retries)
    assert [r.state for r in held[1:]] == [PENDING, PENDING]
    svc.failing = False
    advance_and_work(inline, clock, RESET)
    assert svc.ran() == [100, 101, 102, 0, 1, 2]
    assert breaker(inline).state == "closed"


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_half_open_lets_exactly_breaker_probes_through(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock, probes: int
) -> None:
    svc = make_service(registry, clock, breaker_probes=probes)
    broker = make_broker(clock=clock)
    trip(broker, svc)
    svc.failing = False
    seen: list[str] = []
    inner = svc.task.fn

    def probe(i: int) -> int:
        # While this probe is in flight another worker claims the next task.
        seen.append(breaker(broker).state)
        if len(seen) <= probes:
            broker.work(max_tasks=1)
        return inner(i)

    svc.task.fn = probe
    held = [svc.task.apply_async((i,), broker=broker) for i in range(probes + 2)]
    clock.advance(RESET)
    broker.tick()
    broker.work(max_tasks=1)
    assert seen == ["half_open"] * probes
    assert sorted(svc.ran()[3:]) == list(range(probes))
    assert held[probes].state is PENDING, "the claim past the probes was held"
    assert breaker(broker).state == "closed"
    advance_and_work(broker, clock, 1.0)
    assert [r.state for r in held] == [SUCCESS] * (probes + 2)


def test_a_lost_probe_does_not_wedge_the_breaker_half_open(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    svc = make_service(registry, clock)
    broker = make_broker(clock=clock, lease_s=10.0, heartbeat_s=1.0)
    trip(broker, svc)
    res = svc.task.apply_async((7,), broker=broker)
    clock.advance(RESET)
    broker.tick()
    [d] = broker.backend.claim(None, "doomed", 10.0, 1, clock.now())
    assert Runner(broker).prepare(d, WorkerInfo("doomed", "thread")) is not None
    # The worker dies with its probe; the lease runs out and the task is requeued.
    svc.failing = False
    for _ in range(120):
        advance_and_work(broker, clock, 1.0)
    assert res.state is SUCCESS
    assert breaker(broker).state == "closed"


# -- ratio -----------------------------------------------------------------------------


def test_breaker_ratio_trips_on_the_failure_share_not_the_count(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    svc = make_service(registry, clock, breaker_threshold=4, breaker_ratio=0.5)
    broker = make_broker(clock=clock)
    svc.failing = False
    for i in range(6):
        svc.task.apply_async((i,), broker=broker)
    broker.work()
    svc.failing = True
    fail_times(broker, svc, [0.0, 0.0, 0.0], start=10)
    assert breaker(broker).state == "closed", "3 of 9 failed: under half"
    fail_times(broker, svc, [0.0, 0.0, 0.0], start=20)
    assert breaker(broker).state == "open", "6 of 12 failed: half"


def test_breaker_ratio_needs_the_minimum_volume(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    svc = make_service(registry, clock, breaker_threshold=4, breaker_ratio=0.5)
    broker = make_broker(clock=clock)
    fail_times(broker, svc, [0.0, 0.0, 0.0])
    assert breaker(broker).state == "closed", "3 calls are under the volume of 4"
    fail_times(broker, svc, [0.0], start=3)
    assert breaker(broker).state == "open"


def test_breaker_ratio_only_counts_calls_inside_the_window(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    svc = make_service(registry, clock, breaker_threshold=4, breaker_ratio=0.5)
    broker = make_broker(clock=clock)
    svc.failing = False
    for i in range(10):
        svc.task.apply_async((i,), broker=broker)
    broker.work()
    clock.advance(WINDOW * 10)
    svc.failing = True
    fail_times(broker, svc, [0.0, 0.0, 0.0, 0.0], start=10)
    # Every call of the last window failed.
    assert breaker(broker).state == "open"


# -- manual control --------------------------------------------------------------------


def test_set_breaker_open_holds_until_closed_by_hand(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    svc.failing = False
    inline.control.set_breaker("svc", "open")
    b = breaker(inline)
    assert (b.state, b.manual, b.next_probe_at) == ("open", True, None)
    res = svc.task.apply_async((1,), broker=inline)
    inline.work()
    for _ in range(5):
        advance_and_work(inline, clock, RESET)  # a manual open never probes
    assert svc.ran() == []
    assert res.state is PENDING
    assert breaker(inline).held >= 1
    inline.control.set_breaker("svc", "closed")
    b = breaker(inline)
    assert (b.state, b.manual) == ("closed", True)  # closed by hand: the console says "hand"
    advance_and_work(inline, clock, RESET)
    assert res.state is SUCCESS


def test_manual_open_ignores_outcomes_and_manual_close_clears_failures(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    trip(inline, svc)
    inline.control.set_breaker("svc", "closed")
    b = breaker(inline)
    assert (b.state, b.failures) == ("closed", 0)
    svc.task.apply_async((1,), broker=inline)
    inline.work()
    assert svc.ran()[-1] == 1
    assert breaker(inline).state == "closed"


def test_outcomes_are_ignored_while_forced_open(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    inner = svc.task.fn

    def forced_mid_run(i: int) -> int:
        inline.control.set_breaker("svc", "open")  # an operator acts while it runs
        return inner(i)

    svc.task.fn = forced_mid_run
    for i in range(THRESHOLD):
        svc.task.apply_async((i,), broker=inline)
        inline.work()
        inline.control.set_breaker("svc", "closed")
    b = breaker(inline)
    assert (b.state, b.failures, b.manual) == ("closed", 0, True)
    assert svc.ran() == list(range(THRESHOLD))


def test_a_breaker_closed_by_hand_trips_again_and_is_then_auto(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    trip(inline, svc)
    inline.control.set_breaker("svc", "closed")
    assert breaker(inline).manual
    trip(inline, svc)
    b = breaker(inline)
    assert (b.state, b.manual) == ("open", False)


def test_set_breaker_on_an_undeclared_key_and_bad_states(inline: Broker) -> None:
    inline.control.set_breaker("payments-api", "open")
    b = breaker(inline, "payments-api")
    assert (b.state, b.manual) == ("open", True)
    with pytest.raises(ConfigError, match="forced open or closed"):
        inline.control.set_breaker("payments-api", "half_open")


def test_a_shared_breaker_key_covers_several_tasks(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    a = make_service(registry, clock, name="a", breaker="api")
    b = make_service(registry, clock, name="b", breaker="api")
    broker = make_broker(clock=clock)
    fail_times(broker, a, [0.0, 0.0])
    fail_times(broker, b, [0.0], start=2)
    assert breaker(broker, "api").state == "open"
    b.failing = False
    res = b.task.apply_async((9,), broker=broker)
    broker.work()
    assert res.state is PENDING


def test_bad_breaker_settings_are_rejected(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    make_service(registry, clock, breaker_threshold=0)
    with pytest.raises(ConfigError, match="breaker"):
        make_broker(clock=clock).open()


# -- health ----------------------------------------------------------------------------


def test_an_open_breaker_degrades_health_and_raises_an_alert(
    inline: Broker, clock: FakeClock, svc: Service
) -> None:
    inline.open()
    assert not any("breaker" in r for r in inline.control.health().reasons)
    trip(inline, svc)
    svc.task.apply_async((1,), broker=inline)
    inline.work()
    snap = inline.control.snapshot()
    assert snap.health.status == "degraded"
    assert "breaker svc open" in snap.health.reasons
    assert "breaker svc open (1 tasks held)" in snap.alerts
    clock.advance(RESET)
    inline.tick()
    svc.failing = False
    inline.work()
    snap = inline.control.snapshot()
    assert not any("breaker" in r for r in snap.health.reasons)
    assert not any("breaker" in a for a in snap.alerts)
