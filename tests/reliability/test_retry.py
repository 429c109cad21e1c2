"""Retries: backoff and jitter on a fake clock, exhaustion, retry_on, Retry, overrides."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core import Broker, ConfigError, Retry, RetryPolicy, TaskFailed, TaskState, task
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from tests.conftest import BrokerFactory

RETRY, DEAD, FAILED, SUCCESS = (
    TaskState.RETRY,
    TaskState.DEAD,
    TaskState.FAILED,
    TaskState.SUCCESS,
)


class Transient(Exception):
    """Worth retrying."""


class Fatal(Transient):
    """A transient error that is not worth retrying after all."""


def claimable(broker: Broker) -> bool:
    """Whether a worker could take a task now (due tasks promoted first, nothing run)."""
    broker.emit(broker.backend.promote_due(broker.clock.now()))
    return bool(broker.backend.peek("default", 1))


# -- the policy ------------------------------------------------------------------------


def test_delay_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_delay=10, jitter="none")
    rng = random.Random(0)
    assert [policy.delay(n, rng) for n in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert RetryPolicy(backoff=1, max_delay=300, jitter="none").delay(10_000, rng) == 300


@settings(max_examples=200, deadline=None)
@given(
    backoff=st.floats(0.001, 100),
    max_delay=st.floats(0, 1000),
    n=st.integers(0, 100),
    seed=st.integers(0, 2**32),
)
def test_jitter_stays_within_its_bounds(
    backoff: float, max_delay: float, n: int, seed: int
) -> None:
    cap = min(max_delay, backoff * 2**n)
    full = RetryPolicy(backoff=backoff, max_delay=max_delay, jitter="full")
    equal = RetryPolicy(backoff=backoff, max_delay=max_delay, jitter="equal")
    none = RetryPolicy(backoff=backoff, max_delay=max_delay, jitter="none")
    rng = random.Random(seed)
    assert 0 <= full.delay(n, rng) <= cap
    assert cap / 2 <= equal.delay(n, rng) <= cap
    assert none.delay(n, rng) == pytest.approx(cap)


def test_jitter_is_reproducible_with_a_seed_and_actually_varies() -> None:
    policy = RetryPolicy(backoff=10, max_delay=1000, jitter="full")
    a = [policy.delay(3, random.Random(42)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(1)
    draws = {policy.delay(3, rng) for _ in range(20)}
    assert len(draws) > 1


def test_bad_policies_are_rejected() -> None:
    for kwargs in ({"max_retries": -1}, {"backoff": -1}, {"max_delay": -1}, {"jitter": "some"}):
        with pytest.raises(ConfigError):
            RetryPolicy(**kwargs)


# -- end to end on a fake clock --------------------------------------------------------


def always_failing(registry: Registry, **options: Any) -> Any:
    """A task that always raises ``Transient``; ``.calls`` counts its runs."""
    calls: list[int] = []

    @task(name="fails", registry=registry, **options)
    def fails() -> None:
        calls.append(1)
        raise Transient(f"failure at call {len(calls)}")

    fails.calls = calls  # type: ignore[attr-defined]
    return fails


@pytest.mark.parametrize("jitter", ["none", "equal", "full"])
def test_retries_wait_for_their_backoff_on_the_fake_clock(
    make_broker: BrokerFactory, clock: FakeClock, registry: Registry, jitter: str
) -> None:
    broker = make_broker(clock=clock, seed=3)
    fails = always_failing(
        registry, max_retries=4, retry_backoff=2, retry_max_delay=10, retry_jitter=jitter
    )
    res = fails.apply_async(broker=broker)
    assert broker.work() == 1
    for n in range(4):
        rec = res.record()
        assert rec.state is RETRY
        delay = rec.eta - clock.now()
        cap = min(10, 2 * 2**n)
        low = {"none": cap, "equal": cap / 2, "full": 0}[jitter]
        assert low - 1e-6 <= delay <= cap + 1e-6
        if delay > 0.01:
            clock.advance(delay - 0.01)
            broker.tick()
            assert not claimable(broker), f"retry {n} claimable early"
            assert broker.work() == 0
            assert res.state is RETRY
        clock.advance(0.02)
        broker.tick()
        assert claimable(broker)
        assert res.state is TaskState.PENDING
        assert broker.work() == 1
    assert res.state is DEAD
    assert len(fails.calls) == 5


def test_seeded_jitter_gives_the_same_schedule_twice(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    fails = always_failing(registry, max_retries=3, retry_backoff=5, retry_jitter="full")
    schedules = []
    for _ in range(2):
        clock = FakeClock()
        broker = make_broker(clock=clock, seed=1234)
        res = fails.apply_async(broker=broker)
        delays = []
        broker.work()
        while res.state is RETRY:
            delay = res.record().eta - clock.now()
            delays.append(delay)
            clock.advance(delay)
            broker.work()
        schedules.append(delays)
    assert len(schedules[0]) == 3
    assert schedules[0] == schedules[1]


def test_exhausted_retries_go_dead_with_every_attempt_in_the_history(
    inline: Broker, clock: FakeClock, registry: Registry
) -> None:
    fails = always_failing(registry, max_retries=2, retry_jitter="none")
    res = fails.apply_async(broker=inline)
    for _ in range(3):
        inline.work()
        clock.advance(60)
    rec = res.record()
    assert rec.state is DEAD
    assert rec.dead_reason == "retries exhausted (2)"
    attempts = rec.attempts()
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.error.message for a in attempts] == [
        "failure at call 1",
        "failure at call 2",
        "failure at call 3",
    ]
    assert all(a.error.type.endswith("Transient") for a in attempts)
    assert all(a.started_at is not None and a.finished_at is not None for a in attempts)
    assert [r.id for r in inline.dlq.list()] == [res.id]
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=1)
    assert info.value.state == "DEAD" and info.value.message == "failure at call 3"


def test_max_retries_zero_dies_on_the_first_failure(inline: Broker, registry: Registry) -> None:
    fails = always_failing(registry, max_retries=0)
    res = fails.apply_async(broker=inline)
    inline.work()
    assert res.state is DEAD and len(fails.calls) == 1


@pytest.mark.parametrize(
    ("raised", "options", "retried"),
    [
        (Transient, {"retry_on": (Transient,)}, True),
        (Fatal, {"retry_on": Transient}, True),  # subclasses match; a bare class works
        (ValueError, {"retry_on": (Transient,)}, False),
        (Fatal, {"dont_retry_on": (Fatal,)}, False),
        (Transient, {"dont_retry_on": (Fatal,)}, True),
        (Fatal, {"retry_on": (Transient,), "dont_retry_on": (Fatal,)}, False),
        (KeyError, {"dont_retry_on": (LookupError,)}, False),
    ],
)
def test_retry_on_and_dont_retry_on(
    inline: Broker,
    registry: Registry,
    raised: type[Exception],
    options: dict[str, Any],
    retried: bool,
) -> None:
    @task(name="picky", registry=registry, max_retries=3, **options)
    def picky() -> None:
        raise raised("nope")

    res = picky.apply_async(broker=inline)
    inline.work()
    rec = res.record()
    if retried:
        assert rec.state is RETRY
    else:
        assert rec.state is DEAD
        assert rec.dead_reason == f"not retried: {raised.__name__}"


def test_raise_retry_with_a_countdown(inline: Broker, clock: FakeClock, registry: Registry) -> None:
    calls: list[int] = []

    @task(name="polls", registry=registry, retry_backoff=1000, retry_jitter="none")
    def polls() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Retry(countdown=5, reason="not ready yet")
        return "ready"

    res = polls.apply_async(broker=inline)
    for _ in range(2):
        t0 = clock.now()
        inline.work()
        rec = res.record()
        assert rec.state is RETRY
        assert rec.eta == pytest.approx(t0 + 5)
        clock.advance(4.9)
        assert inline.work() == 0
        clock.advance(0.1)
    assert inline.work() == 1
    assert res.get(timeout=1) == "ready"
    assert len(res.record().history) == 2


def test_raise_retry_still_counts_against_max_retries(
    inline: Broker, clock: FakeClock, registry: Registry
) -> None:
    @task(name="forever", registry=registry, max_retries=2)
    def forever() -> None:
        raise Retry(countdown=1)

    res = forever.apply_async(broker=inline)
    for _ in range(5):
        inline.work()
        clock.advance(1)
    assert res.state is DEAD
    assert res.record().attempt == 3


def test_per_call_max_retries_overrides_the_task(
    inline: Broker, clock: FakeClock, registry: Registry
) -> None:
    fails = always_failing(registry, max_retries=5, retry_jitter="none")
    once = fails.apply_async(max_retries=0, broker=inline)
    inline.work()
    assert once.state is DEAD and len(fails.calls) == 1

    twice = fails.apply_async(max_retries=1, broker=inline)
    for _ in range(4):
        inline.work()
        clock.advance(1)
    assert twice.state is DEAD
    assert twice.record().attempt == 2


def test_dead_letter_false_leaves_the_task_failed(
    inline: Broker, clock: FakeClock, registry: Registry
) -> None:
    fails = always_failing(registry, max_retries=1, retry_jitter="none", dead_letter=False)
    res = fails.apply_async(broker=inline)
    inline.work()
    clock.advance(1)
    inline.work()
    assert res.state is FAILED
    assert inline.dlq.count() == 0
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=1)
    assert info.value.state == "FAILED"
    assert [a.number for a in res.record().attempts()] == [1, 2]


@pytest.mark.parametrize("how", ["Retry(countdown=0)", "retry_backoff=0"])
def test_a_retry_due_at_once_runs_again(inline: Broker, registry: Registry, how: str) -> None:
    calls: list[int] = []
    options = {"retry_backoff": 0} if how == "retry_backoff=0" else {}

    @task(name="again", registry=registry, max_retries=3, **options)
    def again() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Retry(countdown=0) if how.startswith("Retry") else Transient("once")
        return "ok"

    res = again.apply_async(broker=inline)
    inline.work()
    inline.tick()
    inline.work()
    assert res.get(timeout=1) == "ok"
    assert len(calls) == 2
