"""Periodic tasks: one fire per tick, shared and restarted schedulers, missed ticks, control."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dtq_core import Broker, ConfigError, TaskState, task
from dtq_core.broker import default_hooks
from dtq_core.clock import FakeClock
from dtq_core.errors import BackendError, CronError
from dtq_core.registry import Registry
from dtq_core.scheduling.cron import CronExpression
from dtq_core.scheduling.periodic import PeriodicHook, Schedule, ScheduleRegistry, periodic
from tests.conftest import BrokerFactory

MINUTE, HOUR = 60.0, 3600.0


def at(hour: int, minute: int, second: int = 0) -> float:
    return datetime(2024, 1, 1, hour, minute, second, tzinfo=UTC).timestamp()


def cron_ids(broker: Broker) -> list[str]:
    """Ids of the tasks the scheduler enqueued, oldest tick first."""
    return sorted(t.id for t in broker.control.tasks(limit=1000) if t.id.startswith("cron-"))


def tick_id(name: str, when: float) -> str:
    return f"cron-{name}-{int(when)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(12, 0, 30))


@pytest.fixture
def schedules() -> ScheduleRegistry:
    return ScheduleRegistry()


@pytest.fixture
def scheduler(make_broker: BrokerFactory, clock: FakeClock, schedules: ScheduleRegistry) -> Any:
    """Build brokers whose cron scheduler reads this test's schedules."""

    def make(**overrides: Any) -> Broker:
        hooks = [
            PeriodicHook(schedules) if isinstance(h, PeriodicHook) else h for h in default_hooks()
        ]
        overrides.setdefault("clock", clock)
        return make_broker(hooks=hooks, **overrides)

    return make


@pytest.fixture
def ran() -> list[Any]:
    return []


@pytest.fixture
def every_minute(registry: Registry, schedules: ScheduleRegistry, ran: list[Any]) -> Any:
    @periodic(
        "* * * * *",
        name="beat",
        args=[1],
        kwargs={"label": "x"},
        registry=registry,
        schedules=schedules,
    )
    def beat(n: int, label: str) -> str:
        ran.append((n, label))
        return label

    return beat


def hourly(registry: Registry, schedules: ScheduleRegistry, missed: str) -> Any:
    @periodic("0 * * * *", name="hourly", missed=missed, registry=registry, schedules=schedules)
    def hourly_job() -> None:
        pass

    return hourly_job


# -- one fire per tick -----------------------------------------------------------------


def test_fires_each_tick_exactly_once(
    scheduler: Any, clock: FakeClock, every_minute: Any, ran: list[Any]
) -> None:
    broker = scheduler()
    broker.open()
    broker.tick()
    assert cron_ids(broker) == [], "started mid-minute: nothing is due yet"
    expected = []
    for minute in range(1, 6):
        clock.set(at(12, minute))
        broker.tick()
        broker.tick()  # a second round in the same tick fires nothing more
        clock.advance(20.0)
        broker.tick()
        expected.append(tick_id("beat", at(12, minute)))
        assert cron_ids(broker) == expected
    broker.work()
    assert ran == [(1, "x")] * 5
    rec = broker.control.task(expected[0])
    assert rec is not None
    assert rec.name == "beat"
    assert rec.state is TaskState.SUCCESS


def test_tick_returns_the_next_fire_time(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    hourly(registry, schedules, "skip")
    broker = scheduler()
    broker.open()
    hook = broker.hook(PeriodicHook)
    assert hook is not None
    assert hook.tick(broker, clock.now()) == at(13, 0)


def test_schedule_args_and_queue_reach_the_task(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    @periodic("*/5 * * * *", name="report", queue="reports", registry=registry, schedules=schedules)
    def report() -> None:
        pass

    broker = scheduler()
    broker.open()
    clock.set(at(12, 5))
    broker.tick()
    rec = broker.control.task(tick_id("report", at(12, 5)))
    assert rec is not None
    assert rec.queue == "reports"
    clock.set(at(12, 9))
    broker.tick()
    assert len(cron_ids(broker)) == 1


def test_two_schedulers_sharing_a_backend_fire_each_tick_once(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    first = scheduler()
    first.open()
    second = scheduler()
    second.backend = first.backend
    second.open()
    expected = []
    for minute in range(1, 6):
        clock.set(at(12, minute))
        # Alternate who looks first.
        for broker in (first, second) if minute % 2 else (second, first):
            broker.tick()
        expected.append(tick_id("beat", at(12, minute)))
        assert cron_ids(first) == expected
    snap = first.control.snapshot().schedules[0]
    assert snap.fired == 5


def test_a_restart_neither_double_fires_nor_forgets(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    before = scheduler()
    before.open()
    clock.set(at(12, 1))
    before.tick()
    assert cron_ids(before) == [tick_id("beat", at(12, 1))]
    before.stop(drain_timeout=0.0)

    clock.set(at(12, 1, 30))
    after = scheduler()
    after.backend = before.backend
    after.open()
    after.tick()
    assert cron_ids(after) == [tick_id("beat", at(12, 1))], "12:01 is not fired again"
    after.stop(drain_timeout=0.0)

    # Down across 12:02, back within the grace period: 12:02 still fires, once.
    clock.set(at(12, 2, 20))
    again = scheduler()
    again.backend = before.backend
    again.open()
    again.tick()
    again.tick()
    assert cron_ids(again) == [tick_id("beat", at(12, 1)), tick_id("beat", at(12, 2))]


def test_a_restart_on_a_durable_store_neither_double_fires_nor_forgets(
    scheduler: Any, clock: FakeClock, every_minute: Any, tmp_path: Any
) -> None:
    url = f"embedded://{tmp_path / 'store'}"
    before = scheduler(backend=url)
    before.open()
    clock.set(at(12, 1))
    before.tick()
    before.stop(drain_timeout=0.0)
    clock.set(at(12, 2, 20))  # down across 12:02, back within the grace period
    after = scheduler(backend=url)
    after.open()
    after.tick()
    after.tick()
    assert cron_ids(after) == [tick_id("beat", at(12, 1)), tick_id("beat", at(12, 2))]
    assert after.control.snapshot().schedules[0].fired == 2


def test_a_crash_between_claiming_a_tick_and_sending_it_does_not_lose_the_tick(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    clock.set(at(12, 0, 30))
    before = scheduler()
    before.open()
    clock.set(at(12, 1))
    # 12:01 is due, but the scheduler dies before its maintenance round sends it.
    before.stop(drain_timeout=0.0)
    clock.set(at(12, 1, 20))
    after = scheduler()
    after.backend = before.backend
    after.open()
    after.tick()
    assert cron_ids(after) == [tick_id("beat", at(12, 1))]
    after.tick()
    assert cron_ids(after) == [tick_id("beat", at(12, 1))]  # once


def test_one_failing_schedule_does_not_stop_the_others(
    scheduler: Any,
    clock: FakeClock,
    every_minute: Any,
    registry: Registry,
    schedules: ScheduleRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hourly(registry, schedules, "skip")
    broker = scheduler()
    broker.open()
    real = broker.backend.get_key

    def flaky(key: str, *args: Any) -> str | None:
        if key.startswith("dtq:cron:last:beat"):
            raise BackendError("lost the connection")
        return real(key, *args)

    monkeypatch.setattr(broker.backend, "get_key", flaky)
    clock.set(at(13, 0))
    broker.tick()
    assert cron_ids(broker) == [tick_id("hourly", at(13, 0))]


def test_a_removed_schedule_stops_firing(
    scheduler: Any, clock: FakeClock, every_minute: Any, schedules: ScheduleRegistry
) -> None:
    broker = scheduler()
    broker.open()
    schedules.remove("beat")
    clock.set(at(12, 1))
    broker.tick()
    assert cron_ids(broker) == []
    assert broker.control.snapshot().schedules == ()


def test_after_downtime_skip_skips_the_missed_ticks(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    hourly(registry, schedules, "skip")
    before = scheduler()
    before.open()
    clock.set(at(13, 0))
    before.tick()
    before.stop(drain_timeout=0.0)
    clock.set(at(17, 30))  # 14:00 .. 17:00 missed
    after = scheduler()
    after.backend = before.backend
    after.open()
    after.tick()
    assert cron_ids(after) == [tick_id("hourly", at(13, 0))]
    snap = after.control.snapshot().schedules[0]
    # The skipped ticks are handled (not sent later) but are not fires: "last" is still
    # the 13:00 tick, paired with its own task.
    assert (snap.last_fire, snap.last_task_id) == (at(13, 0), tick_id("hourly", at(13, 0)))
    clock.set(at(18, 0))
    after.tick()
    assert cron_ids(after) == [tick_id("hourly", at(13, 0)), tick_id("hourly", at(18, 0))]


def test_after_downtime_catch_up_runs_once(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    hourly(registry, schedules, "catch_up")
    before = scheduler()
    before.open()
    clock.set(at(13, 0))
    before.tick()
    before.stop(drain_timeout=0.0)
    clock.set(at(17, 30))
    after = scheduler()
    after.backend = before.backend
    after.open()
    after.tick()
    after.tick()
    clock.advance(MINUTE)
    after.tick()
    assert cron_ids(after) == [tick_id("hourly", at(13, 0)), tick_id("hourly", at(17, 0))]
    clock.set(at(18, 0))
    after.tick()
    assert cron_ids(after)[-1] == tick_id("hourly", at(18, 0))
    assert len(cron_ids(after)) == 3


# -- control ---------------------------------------------------------------------------


def test_pause_and_resume_through_the_console(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    broker = scheduler()
    broker.open()
    clock.set(at(12, 1))
    broker.tick()
    broker.control.pause_schedule("beat")
    assert broker.control.snapshot().schedules[0].paused
    for minute in range(2, 5):
        clock.set(at(12, minute))
        broker.tick()
    assert cron_ids(broker) == [tick_id("beat", at(12, 1))]
    broker.control.pause_schedule("beat", paused=False)
    assert not broker.control.snapshot().schedules[0].paused
    clock.set(at(12, 5))
    broker.tick()
    assert cron_ids(broker) == [tick_id("beat", at(12, 1)), tick_id("beat", at(12, 5))]


def test_a_paused_schedules_last_stays_paired_with_its_task(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    broker = scheduler()
    broker.open()
    clock.set(at(12, 1))
    broker.tick()
    broker.control.pause_schedule("beat")
    clock.set(at(12, 3))
    broker.tick()  # 12:02 and 12:03 are skipped: not fires
    snap = broker.control.snapshot().schedules[0]
    assert (snap.last_fire, snap.last_task_id) == (at(12, 1), tick_id("beat", at(12, 1)))
    clock.set(at(12, 3, 20))
    manual = broker.control.trigger_schedule("beat")
    snap = broker.control.snapshot().schedules[0]
    assert (snap.last_fire, snap.last_task_id, snap.last_manual) == (at(12, 3, 20), manual, True)


def test_a_pause_is_seen_by_every_scheduler_on_the_backend(
    scheduler: Any, clock: FakeClock, every_minute: Any
) -> None:
    first = scheduler()
    first.open()
    second = scheduler()
    second.backend = first.backend
    second.open()
    first.control.pause_schedule("beat")
    clock.set(at(12, 1))
    second.tick()
    assert cron_ids(second) == []
    assert second.control.snapshot().schedules[0].paused


def test_resuming_a_catch_up_schedule_does_not_replay_paused_ticks(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    hourly(registry, schedules, "catch_up")
    broker = scheduler()
    broker.open()
    clock.set(at(12, 10))
    broker.control.pause_schedule("hourly")
    clock.set(at(15, 30))
    broker.tick()
    broker.control.pause_schedule("hourly", paused=False)
    broker.tick()
    assert cron_ids(broker) == []
    clock.set(at(16, 0))
    broker.tick()
    assert cron_ids(broker) == [tick_id("hourly", at(16, 0))]


def test_trigger_enqueues_now_without_moving_the_schedule(
    scheduler: Any, clock: FakeClock, every_minute: Any, ran: list[Any]
) -> None:
    broker = scheduler()
    broker.open()
    task_id = broker.control.trigger_schedule("beat")
    rec = broker.control.task(task_id)
    assert rec is not None
    assert rec.name == "beat"
    snap = broker.control.snapshot().schedules[0]
    assert snap.last_task_id == task_id
    assert snap.last_state == "PENDING"
    assert (snap.last_fire, snap.last_manual) == (clock.now(), True)  # paired with its task
    assert snap.fired == 0
    broker.work()
    assert ran == [(1, "x")]
    assert broker.control.snapshot().schedules[0].last_state == "SUCCESS"
    clock.set(at(12, 1))
    broker.tick()
    assert cron_ids(broker) == [tick_id("beat", at(12, 1))]


def test_unknown_schedules_are_named_in_the_error(
    scheduler: Any, every_minute: Any, registry: Registry
) -> None:
    broker = scheduler()
    with pytest.raises(ConfigError, match=r"unknown schedule 'nope' \(known: beat\)"):
        broker.control.trigger_schedule("nope")
    with pytest.raises(ConfigError, match="unknown schedule"):
        broker.control.pause_schedule("nope")


def test_console_commands_need_the_scheduler_in_the_chain(
    make_broker: BrokerFactory, clock: FakeClock, every_minute: Any
) -> None:
    broker = make_broker(clock=clock, hooks=[])
    with pytest.raises(ConfigError, match="cron scheduler is not enabled"):
        broker.control.trigger_schedule("beat")


# -- snapshot --------------------------------------------------------------------------


def test_snapshot_describes_the_schedule(
    scheduler: Any, clock: FakeClock, every_minute: Any, registry: Registry
) -> None:
    broker = scheduler()
    broker.open()
    snap = broker.control.snapshot().schedules[0]
    assert (snap.name, snap.task, snap.expr, snap.tz, snap.missed) == (
        "beat",
        "beat",
        "* * * * *",
        "UTC",
        "skip",
    )
    assert snap.description == "every minute"
    assert snap.next_runs == (at(12, 1), at(12, 2), at(12, 3))
    assert (snap.last_fire, snap.last_task_id, snap.last_state, snap.fired) == (None, None, None, 0)
    clock.set(at(12, 1))
    broker.tick()
    snap = broker.control.snapshot().schedules[0]
    assert snap.last_fire == at(12, 1)
    assert snap.last_task_id == tick_id("beat", at(12, 1))
    assert snap.last_state == "PENDING"
    assert snap.fired == 1
    assert snap.next_runs == (at(12, 2), at(12, 3), at(12, 4))
    broker.work()
    assert broker.control.snapshot().schedules[0].last_state == "SUCCESS"


def test_a_schedule_in_a_time_zone_fires_at_local_time(
    scheduler: Any, clock: FakeClock, registry: Registry, schedules: ScheduleRegistry
) -> None:
    @periodic("0 9 * * *", tz="America/New_York", name="ny", registry=registry, schedules=schedules)
    def ny() -> None:
        pass

    broker = scheduler()
    broker.open()
    snap = broker.control.snapshot().schedules[0]
    assert snap.tz == "America/New_York"
    assert snap.description.endswith("(America/New_York)")
    assert snap.next_runs[0] == at(14, 0)  # 09:00 EST
    clock.set(at(14, 0))
    broker.tick()
    assert cron_ids(broker) == [tick_id("ny", at(14, 0))]


# -- declaration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("* * * jan-foo *", "month"),
        ("*/0 * * * *", "minute"),
        ("70 * * * * *", "second"),
    ],
)
def test_a_bad_cron_expression_fails_at_decoration_naming_the_field(
    expr: str, field: str, registry: Registry, schedules: ScheduleRegistry
) -> None:
    with pytest.raises(CronError, match=f"^{field}: "):
        periodic(expr, name="bad", registry=registry, schedules=schedules)
    assert schedules.all() == []
    assert "bad" not in registry.names()


def test_bad_declarations_are_rejected(registry: Registry, schedules: ScheduleRegistry) -> None:
    with pytest.raises(CronError, match="5 or 6 fields"):
        periodic("* * *", registry=registry, schedules=schedules)
    with pytest.raises(ConfigError, match="missed"):
        periodic("* * * * *", missed="sometimes", registry=registry, schedules=schedules)  # type: ignore[arg-type]
    with pytest.raises(CronError, match="time zone"):
        periodic("* * * * *", tz="Mars/Olympus", registry=registry, schedules=schedules)


def test_a_schedule_name_used_by_another_task_is_rejected(
    registry: Registry, schedules: ScheduleRegistry
) -> None:
    @periodic("* * * * *", name="dup", registry=registry, schedules=schedules)
    def one() -> None:
        pass

    @task(name="other", registry=registry)
    def other() -> None:
        pass

    with pytest.raises(ConfigError, match="already used"):
        schedules.add(Schedule("dup", "other", CronExpression("* * * * *")))
