"""Rate limits: rate parsing, GCRA bursts and slots on a fake clock, deferral, runtime changes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dtq_core import Broker, ConfigError, TaskState, task
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from dtq_core.scheduling.ratelimit import RateLimitHook, parse_rate
from tests.conftest import BrokerFactory, EventLog

PENDING, SUCCESS, DEAD = TaskState.PENDING, TaskState.SUCCESS, TaskState.DEAD


def run_for(broker: Broker, clock: FakeClock, seconds: float, step: float = 0.25) -> None:
    """Run due tasks, then step the fake clock ``seconds`` ahead, promoting and running."""
    broker.work()
    for _ in range(round(seconds / step)):
        clock.advance(step)
        broker.tick()
        broker.work()


def limiter(broker: Broker, scope: str, key: str) -> Any:
    [lim] = [x for x in broker.control.snapshot().limits if (x.scope, x.key) == (scope, key)]
    return lim


# -- parse_rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "per_second"),
    [
        ("10/s", 10.0),
        ("100/m", 100 / 60),
        ("1000/h", 1000 / 3600),
        ("24/d", 24 / 86400),
        ("5/2s", 2.5),
        ("3/0.5m", 0.1),
        ("1.5/s", 1.5),
        (" 10 / s ", 10.0),
        ("7", 7.0),
        ("0.25", 0.25),
        (4, 4.0),
        (2.5, 2.5),
    ],
)
def test_parse_rate_accepts_every_documented_form(spec: str | float, per_second: float) -> None:
    assert parse_rate(spec) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "fast",
        "10/x",
        "10/",
        "/s",
        "-1/s",
        "0/s",
        "0",
        0,
        -3,
        0.0,
        float("inf"),
        float("nan"),
        True,
        "5/0s",
        "1/.s",
    ],
)
def test_parse_rate_rejects_bad_specs_with_a_config_error(spec: Any) -> None:
    with pytest.raises(ConfigError, match="bad rate"):
        parse_rate(spec)


def test_a_zero_burst_is_rejected() -> None:
    with pytest.raises(ConfigError, match="rate_burst"):
        RateLimitHook().set_limit("task", "t", 1.0, 0)
    with pytest.raises(ConfigError, match="scope"):
        RateLimitHook().set_limit("worker", "t", 1.0, 1)


# -- bursts and slots ------------------------------------------------------------------


@pytest.fixture
def ran() -> list[tuple[Any, float]]:
    return []


@pytest.fixture
def lim(registry: Registry, clock: FakeClock, ran: list[tuple[Any, float]]) -> Any:
    t0 = clock.now()

    @task(name="lim", registry=registry, rate_limit="2/s", rate_burst=2)
    def lim(i: int) -> int:
        ran.append((i, clock.now() - t0))
        return i

    return lim


def test_a_burst_runs_at_once_then_one_task_per_interval(
    inline: Broker, clock: FakeClock, lim: Any, ran: list[tuple[Any, float]]
) -> None:
    results = [lim.apply_async((i,), broker=inline) for i in range(6)]
    inline.work()
    assert ran == [(0, 0.0), (1, 0.0)]
    clock.advance(0.25)
    inline.tick()
    inline.work()
    assert len(ran) == 2, "nothing is due between two slots"
    run_for(inline, clock, 3.0)
    assert ran == [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 1.5), (5, 2.0)]
    assert [r.state for r in results] == [SUCCESS] * 6


def test_the_bucket_refills_after_idling(
    inline: Broker, clock: FakeClock, lim: Any, ran: list[tuple[Any, float]]
) -> None:
    for i in range(3):
        lim.apply_async((i,), broker=inline)
    run_for(inline, clock, 1.0)
    assert [t for _, t in ran] == [0.0, 0.0, 0.5]
    clock.advance(10.0)  # long idle: a full burst again, not more
    ran.clear()
    t = clock.now() - 1_700_000_000.0
    for i in range(3):
        lim.apply_async((i,), broker=inline)
    run_for(inline, clock, 1.0)
    assert [round(x - t, 6) for _, x in ran] == [0.0, 0.0, 0.5]


def test_a_throttled_task_is_deferred_not_failed(
    make_broker: BrokerFactory,
    registry: Registry,
    clock: FakeClock,
    event_log: Any,
) -> None:
    @task(name="slow", registry=registry, rate_limit="1/s", max_retries=0)
    def slow(i: int) -> int:
        return i

    broker = make_broker(clock=clock, max_deliveries=1)
    log: EventLog = event_log(broker)
    results = [slow.apply_async((i,), broker=broker) for i in range(5)]
    broker.work()
    assert [r.state for r in results] == [SUCCESS] + [PENDING] * 4
    for r in results[1:]:
        rec = r.record()
        assert rec.attempt == 0
        assert rec.history == ()
        assert rec.error is None
        assert rec.eta is not None
    run_for(broker, clock, 5.0)
    assert [r.state for r in results] == [SUCCESS] * 5
    assert all(r.record().attempt == 1 for r in results)
    assert broker.backend.count_dead() == 0
    for r in results:
        states = {new for _, new in log.transitions(r.id)}
        assert TaskState.FAILED not in states
        assert DEAD not in states
        assert TaskState.RETRY not in states


def test_per_queue_limits_from_the_config(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now()
    ran: list[tuple[str, float]] = []

    @task(name="q_task", registry=registry, queue="q")
    def q_task() -> None:
        ran.append(("q", clock.now() - t0))

    @task(name="free_task", registry=registry)
    def free_task() -> None:
        ran.append(("free", clock.now() - t0))

    broker = make_broker(clock=clock, rate_limits={"q": "1/s"})
    for _ in range(3):
        q_task.apply_async(broker=broker)
        free_task.apply_async(broker=broker)
    run_for(broker, clock, 3.0)
    assert sorted(t for name, t in ran if name == "free") == [0.0, 0.0, 0.0]
    assert [t for name, t in ran if name == "q"] == [0.0, 1.0, 2.0]
    snap = limiter(broker, "queue", "q")
    assert (snap.rate, snap.burst, snap.throttled) == (1.0, 1, 2)


def test_per_queue_limits_from_the_hook_argument(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now()
    ran: list[float] = []

    @task(name="qq", registry=registry, queue="q")
    def qq() -> None:
        ran.append(clock.now() - t0)

    broker = make_broker(clock=clock, hooks=[RateLimitHook({"q": "2/s"})])
    for _ in range(4):
        qq.apply_async(broker=broker)
    run_for(broker, clock, 2.0)
    assert ran == [0.0, 0.0, 0.5, 1.0]


def test_the_slower_of_a_queue_and_a_task_limit_governs(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now()
    ran: list[float] = []

    @task(name="both", registry=registry, queue="q", rate_limit="0.5", rate_burst=1)
    def both() -> None:
        ran.append(clock.now() - t0)

    broker = make_broker(clock=clock, rate_limits={"q": "1/s"})
    for _ in range(3):
        both.apply_async(broker=broker)
    run_for(broker, clock, 6.0)
    assert ran == [0.0, 2.0, 4.0]


# -- snapshot and runtime changes ------------------------------------------------------


def test_snapshot_shows_tokens_and_throttled_counts(
    inline: Broker, clock: FakeClock, lim: Any
) -> None:
    inline.open()
    fresh = limiter(inline, "task", "lim")
    assert (fresh.rate, fresh.burst, fresh.tokens, fresh.throttled) == (2.0, 2, 2.0, 0)
    for i in range(6):
        lim.apply_async((i,), broker=inline)
    inline.work()
    drained = limiter(inline, "task", "lim")
    assert drained.tokens == 0.0
    assert drained.throttled == 4
    assert inline.control.snapshot().counters["throttled"] == 4
    run_for(inline, clock, 2.0)  # the four deferred tasks used their slots
    assert limiter(inline, "task", "lim").tokens == 0.0
    clock.advance(0.5)
    assert limiter(inline, "task", "lim").tokens == pytest.approx(1.0)
    clock.advance(0.5)
    assert limiter(inline, "task", "lim").tokens == pytest.approx(2.0)
    clock.advance(60.0)
    assert limiter(inline, "task", "lim").tokens == pytest.approx(2.0), "never above the burst"
    assert limiter(inline, "task", "lim").throttled == 4


def test_set_rate_limit_at_runtime_is_visible_and_effective(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now()
    ran: list[float] = []

    @task(name="tight", registry=registry, rate_limit="1/s", rate_burst=1)
    def tight() -> None:
        ran.append(clock.now() - t0)

    broker = make_broker(clock=clock)
    tight.apply_async(broker=broker)
    broker.work()
    assert ran == [0.0]
    broker.control.set_rate_limit("task", "tight", "10/s", burst=5)
    snap = limiter(broker, "task", "tight")
    assert (snap.rate, snap.burst) == (10.0, 5)
    clock.advance(1.0)  # the slot reserved under the old limit has passed
    for _ in range(6):
        tight.apply_async(broker=broker)
    run_for(broker, clock, 1.2, step=0.05)
    assert ran == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1])


def test_set_rate_limit_can_tighten_a_queue_and_defaults_the_burst(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    t0 = clock.now()
    ran: list[float] = []

    @task(name="free", registry=registry)
    def free() -> None:
        ran.append(clock.now() - t0)

    broker = make_broker(clock=clock)
    broker.control.set_rate_limit("queue", "default", 0.5)
    snap = limiter(broker, "queue", "default")
    assert (snap.rate, snap.burst) == (0.5, 1)
    for _ in range(3):
        free.apply_async(broker=broker)
    run_for(broker, clock, 4.0)
    assert ran == [0.0, 2.0, 4.0]


def test_set_rate_limit_reaches_another_broker_on_the_same_backend(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    @task(name="shared", registry=registry, rate_limit="1/s")
    def shared() -> None:
        pass

    first = make_broker(clock=clock)
    first.open()
    second = make_broker(clock=clock)
    second.backend = first.backend
    second.open()
    first.control.set_rate_limit("task", "shared", "4/s", burst=3)
    clock.advance(1.0)
    second.tick()
    snap = limiter(second, "task", "shared")
    assert (snap.rate, snap.burst) == (4.0, 3)


def test_a_deferred_task_keeps_its_slot_when_another_worker_claims_it(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock, ran: list[tuple[Any, float]]
) -> None:
    t0 = clock.now()

    @task(name="lim", registry=registry, rate_limit="2/s", rate_burst=2)
    def lim(i: int) -> None:
        ran.append((i, clock.now() - t0))

    first = make_broker(clock=clock)
    first.open()
    second = make_broker(clock=clock)
    second.backend = first.backend
    second.open()
    for i in range(6):
        lim.apply_async((i,), broker=first)
    first.work()  # runs the burst, defers the rest to their slots
    run_for(second, clock, 3.0)  # another worker takes the deferred tasks
    assert ran == [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 1.5), (5, 2.0)]


def test_a_runtime_limit_change_survives_a_restart_on_a_durable_store(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock, tmp_path: Any
) -> None:
    t0 = clock.now()
    ran: list[float] = []

    @task(name="kept", registry=registry, rate_limit="10/s")
    def kept() -> None:
        ran.append(clock.now() - t0)

    url = f"embedded://{tmp_path / 'store'}"
    before = make_broker(clock=clock, backend=url)
    before.open()
    before.control.set_rate_limit("task", "kept", "1/s", burst=1)
    before.stop(drain_timeout=0.0)
    after = make_broker(clock=clock, backend=url)
    after.open()
    snap = limiter(after, "task", "kept")
    assert (snap.rate, snap.burst) == (1.0, 1)
    for _ in range(3):
        kept.apply_async(broker=after)
    run_for(after, clock, 2.0)
    assert ran == [0.0, 1.0, 2.0]


def test_set_rate_limit_rejects_bad_input(inline: Broker) -> None:
    with pytest.raises(ConfigError):
        inline.control.set_rate_limit("task", "x", "often")
    with pytest.raises(ConfigError):
        inline.control.set_rate_limit("host", "x", 1.0)


# -- real threads ----------------------------------------------------------------------


def test_threads_on_a_real_clock_respect_the_rate(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="real", registry=registry, rate_limit="20/s", rate_burst=1)
    def real(i: int) -> int:
        return i

    broker = make_broker(num_workers=2)
    broker.start()
    t0 = time.monotonic()
    results = [real.apply_async((i,), broker=broker) for i in range(10)]
    assert [r.get(timeout=10) for r in results] == list(range(10))
    elapsed = time.monotonic() - t0
    # Ten slots 50 ms apart: the last starts no sooner than 450 ms after the first.
    assert elapsed >= 0.44
    assert [r.record().attempt for r in results] == [1] * 10
