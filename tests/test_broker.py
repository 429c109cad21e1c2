"""The broker facade: sending options, hostile messages, AsyncResult, expiry, events, snapshot."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from dtq_core import (
    Broker,
    ConfigError,
    DTQError,
    SerializationError,
    TaskFailed,
    TaskNotFound,
    TaskNotRegistered,
    TaskState,
    set_default_broker,
    task,
)
from dtq_core.backends.base import NewTask
from dtq_core.clock import FakeClock
from dtq_core.codec import encode_message
from dtq_core.registry import Registry
from tests.conftest import BrokerFactory, EventLog

P, R, S, F = TaskState.PENDING, TaskState.RUNNING, TaskState.SUCCESS, TaskState.FAILED


class BadThing(Exception):
    """A task error of the test's own."""


def total(broker: Broker) -> int:
    return sum(broker.backend.count_by_state().values())


@pytest.fixture
def echo(registry: Registry) -> Any:
    ran: list[Any] = []

    @task(name="echo", registry=registry)
    def echo(x: Any = None) -> Any:
        ran.append(x)
        return x

    echo.ran = ran  # type: ignore[attr-defined]
    return echo


# -- send and apply_async options ------------------------------------------------------


def test_countdown_delays_the_task_until_due(inline: Broker, clock: FakeClock, echo: Any) -> None:
    t0 = clock.now()
    res = echo.apply_async((1,), countdown=10, broker=inline)
    rec = res.record()
    assert rec.state is P and rec.eta == pytest.approx(t0 + 10)
    assert inline.work() == 0
    clock.advance(9.5)
    assert inline.work() == 0
    assert echo.ran == []
    clock.advance(1)
    assert inline.work() == 1
    assert res.get(timeout=1) == 1


def test_eta_accepts_aware_datetimes_and_rejects_naive_ones(
    inline: Broker, clock: FakeClock, echo: Any
) -> None:
    when = datetime.fromtimestamp(clock.now() + 60, tz=UTC)
    res = echo.apply_async((1,), eta=when, broker=inline)
    assert res.record().eta == pytest.approx(clock.now() + 60)
    assert inline.work() == 0

    naive = datetime.fromtimestamp(clock.now() + 60)  # naive on purpose
    with pytest.raises(ConfigError, match="timezone-aware"):
        echo.apply_async((2,), eta=naive, broker=inline)
    with pytest.raises(ConfigError):
        echo.apply_async((3,), eta=when, countdown=5, broker=inline)
    with pytest.raises(ConfigError):
        echo.apply_async((4,), countdown=-1, broker=inline)
    assert total(inline) == 1

    past = datetime.fromtimestamp(clock.now() - 60, tz=UTC)
    late = echo.apply_async((5,), eta=past, broker=inline)
    assert inline.work() == 1
    assert late.get(timeout=1) == 5
    clock.advance(61)
    assert inline.work() == 1
    assert res.get(timeout=1) == 1


def test_priority_lower_runs_first_and_overrides_the_task_default(
    inline: Broker, registry: Registry
) -> None:
    order: list[str] = []

    @task(name="p", registry=registry, priority=5)
    def p(tag: str) -> None:
        order.append(tag)

    p.apply_async(("default-5",), broker=inline)
    p.apply_async(("nine",), priority=9, broker=inline)
    p.apply_async(("one",), priority=1, broker=inline)
    p.apply_async(("three",), priority=3, broker=inline)
    assert inline.work() == 4
    assert order == ["one", "three", "default-5", "nine"]


def test_queue_routes_the_task(inline: Broker, registry: Registry) -> None:
    @task(name="routed", registry=registry, queue="math")
    def routed() -> str:
        return "ok"

    a = routed.apply_async(broker=inline)
    b = routed.apply_async(queue="io", broker=inline)
    assert (a.record().queue, b.record().queue) == ("math", "io")
    assert inline.work(queues=["default"]) == 0
    assert inline.work(queues=["io"]) == 1
    assert (a.state, b.state) == (P, S)
    assert inline.work(queues=["math"]) == 1
    assert a.state is S


def test_task_id_is_used_and_cannot_be_reused(inline: Broker, echo: Any) -> None:
    res = echo.apply_async((1,), task_id="my-id-1", broker=inline)
    assert res.id == "my-id-1"
    assert inline.backend.get("my-id-1").args == [1]
    with pytest.raises(DTQError):
        echo.apply_async((2,), task_id="my-id-1", broker=inline)
    assert inline.backend.get("my-id-1").args == [1]
    inline.work()
    assert echo.ran == [1]


def test_per_call_max_retries_and_time_limit_are_recorded(
    inline: Broker, registry: Registry
) -> None:
    @task(name="opts", registry=registry, max_retries=5, time_limit=30)
    def opts() -> None:
        return None

    default = opts.apply_async(broker=inline).record()
    custom = opts.apply_async(max_retries=1, time_limit=2.5, broker=inline).record()
    assert (default.max_retries, default.time_limit) == (5, 30)
    assert (custom.max_retries, custom.time_limit) == (1, 2.5)


def test_unknown_or_task_only_per_call_options_are_rejected(inline: Broker, echo: Any) -> None:
    with pytest.raises(ConfigError, match="colour"):
        echo.apply_async((1,), colour="red", broker=inline)
    with pytest.raises(ConfigError, match="retry_on"):
        echo.apply_async((1,), retry_on=(ValueError,), broker=inline)
    assert total(inline) == 0


def test_unknown_task_option_is_rejected_at_decoration(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="retries_max"):

        @task(name="typo", registry=registry, retries_max=3)
        def typo() -> None:
            return None

    with pytest.raises(ConfigError, match="max_retries"):

        @task(name="neg", registry=registry, max_retries=-1)
        def neg() -> None:
            return None

    assert "typo" not in registry and "neg" not in registry


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((object(),), {}, "argument 0"),
        ((1, {1, 2}), {}, "argument 1"),
        ((), {"when": datetime.now(tz=UTC)}, "'when'"),
        ((float("nan"),), {}, "NaN"),
    ],
)
def test_non_serializable_args_fail_at_delay_and_enqueue_nothing(
    inline: Broker, registry: Registry, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    @task(name="anything", registry=registry)
    def anything(*a: Any, **k: Any) -> None:
        return None

    set_default_broker(inline)
    with pytest.raises(SerializationError, match=named):
        anything.delay(*args, **kwargs)
    assert total(inline) == 0
    assert inline.events.last_seq == 0


def test_sending_an_unknown_name_raises_task_not_registered(inline: Broker, echo: Any) -> None:
    with pytest.raises(TaskNotRegistered, match=r"'no\.such\.task'") as info:
        inline.send("no.such.task", [1])
    assert "echo" in str(info.value)  # it says what is known
    assert total(inline) == 0
    assert inline.send("echo", [7]).id  # a registered name is fine by name


def test_a_message_for_an_unregistered_task_is_dead_lettered(
    inline: Broker, clock: FakeClock, echo: Any
) -> None:
    payload = encode_message("ghost-1", "ghost", [1], {})
    inline.open()
    inline.backend.enqueue(NewTask("ghost-1", "ghost", "default", 0, payload), clock.now())
    assert inline.work() == 1
    rec = inline.backend.get("ghost-1")
    assert rec.state is TaskState.DEAD
    assert rec.dead_reason == "unregistered task"
    assert "ghost" in rec.error.message
    assert [r.id for r in inline.dlq.list()] == ["ghost-1"]
    assert echo.ran == []


_unpickled: list[str] = []


def _reconstruct(tag: str) -> str:
    _unpickled.append(tag)
    return tag


class Sentinel:
    """Unpickling it calls ``_reconstruct`` (what its ``__reduce__`` names)."""

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return _reconstruct, ("unpickled!",)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_payload_is_dead_lettered_without_being_unpickled(
    inline: Broker, clock: FakeClock, echo: Any, protocol: int
) -> None:
    payload = pickle.dumps({"task": "echo", "args": [Sentinel()]}, protocol=protocol)
    _unpickled.clear()
    inline.open()
    inline.backend.enqueue(NewTask("pkl", "echo", "default", 0, payload), clock.now())
    assert inline.work() == 1
    rec = inline.backend.get("pkl")
    assert rec.state is TaskState.DEAD
    assert rec.dead_reason == "undecodable message"
    assert rec.error.type == "SerializationError"
    assert _unpickled == []
    assert echo.ran == []
    # Listing and filtering dead letters must not decode it either.
    assert [r.id for r in inline.dlq.list("text:echo")] == ["pkl"]
    assert inline.dlq.groups()[0].task_ids == ("pkl",)
    assert _unpickled == []


# -- AsyncResult -----------------------------------------------------------------------


def test_async_result_state_ready_and_get(inline: Broker, echo: Any) -> None:
    res = echo.apply_async(({"a": [1, 2]},), broker=inline)
    assert (res.state, res.ready(), res.successful()) == (P, False, False)
    assert res == inline.result(res.id) and hash(res) == hash(inline.result(res.id))
    inline.work()
    assert (res.state, res.ready(), res.successful()) == (S, True, True)
    assert res.get(timeout=1) == {"a": [1, 2]}
    assert inline.result("unknown-id").state is None
    with pytest.raises(TaskNotFound):
        inline.result("unknown-id").get(timeout=1)


def test_cancel_a_countdown_task(inline: Broker, clock: FakeClock, echo: Any) -> None:
    res = echo.apply_async((1,), countdown=30, broker=inline)
    assert res.cancel() is True
    assert res.state is TaskState.CANCELLED and res.ready()
    assert res.cancel() is False
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=1)
    assert info.value.state == "CANCELLED"
    clock.advance(60)
    inline.tick()
    assert inline.work() == 0
    assert echo.ran == []

    done = echo.apply_async((2,), broker=inline)
    inline.work()
    assert done.cancel() is False
    assert done.state is S


def test_task_failed_carries_the_error_as_strings(inline: Broker, registry: Registry) -> None:
    @task(name="boom", registry=registry, max_retries=0)
    def boom(n: int) -> None:
        raise BadThing(f"bad thing {n}")

    res = boom.apply_async((42,), broker=inline)
    inline.work()
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=1)
    err = info.value
    assert err.task_id == res.id and err.state == "DEAD"
    assert isinstance(err.exc_type, str) and err.exc_type.endswith("BadThing")
    assert err.message == "bad thing 42"
    assert isinstance(err.traceback, str) and 'raise BadThing(f"bad thing {n}")' in err.traceback
    as_dict = res.get(timeout=1, propagate=False)
    assert as_dict["exc_type"] == err.exc_type and as_dict["message"] == "bad thing 42"


@pytest.mark.timeout(30)
def test_get_times_out_on_a_slow_task(make_broker: BrokerFactory, registry: Registry) -> None:
    started, release = threading.Event(), threading.Event()

    @task(name="slow", registry=registry)
    def slow() -> str:
        started.set()
        release.wait(20)
        return "late"

    broker = make_broker(num_workers=1).start()
    res = slow.apply_async(broker=broker)
    assert started.wait(10)
    with pytest.raises(TimeoutError):
        res.get(timeout=0.2)
    assert res.state is R
    release.set()
    assert res.get(timeout=10) == "late"


def test_results_expire_after_result_ttl(
    make_broker: BrokerFactory, clock: FakeClock, echo: Any
) -> None:
    broker = make_broker(clock=clock, result_ttl=60)
    res = echo.apply_async((1,), broker=broker)
    broker.work()
    clock.advance(30)
    broker.tick()
    assert res.get(timeout=1) == 1
    clock.advance(31)
    broker.tick()
    assert res.state is None
    with pytest.raises(TaskNotFound, match="expired"):
        res.get(timeout=1)


def test_a_non_json_result_fails_the_task(inline: Broker, registry: Registry) -> None:
    @task(name="bad_result", registry=registry, max_retries=0, dead_letter=False)
    def bad_result() -> object:
        return object()

    res = bad_result.apply_async(broker=inline)
    inline.work()
    assert res.state is F
    with pytest.raises(TaskFailed) as info:
        res.get(timeout=1)
    assert info.value.exc_type.endswith("SerializationError")
    assert "not JSON-serializable" in info.value.message


# -- events ----------------------------------------------------------------------------


def test_events_one_per_transition_for_a_success(inline: Broker, echo: Any) -> None:
    log = EventLog(inline)
    res = echo.apply_async((1,), broker=inline)
    inline.work()
    assert log.transitions(res.id) == [(None, P), (P, R), (R, S)]
    seqs = [e.seq for e in log.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e.name == "echo" and e.queue == "default" for e in log.events)


def test_events_for_a_retry_then_success(
    inline: Broker, clock: FakeClock, registry: Registry
) -> None:
    calls: list[int] = []

    @task(name="flaky", registry=registry, max_retries=3, retry_jitter="none")
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise BadThing("first time")
        return "ok"

    log = EventLog(inline)
    res = flaky.apply_async(broker=inline)
    inline.work()
    clock.advance(1)
    inline.tick()
    inline.work()
    assert res.get(timeout=1) == "ok"
    assert log.transitions(res.id) == [
        (None, P),
        (P, R),
        (R, F),
        (F, TaskState.RETRY),
        (TaskState.RETRY, P),
        (P, R),
        (R, S),
    ]


def test_events_for_a_dead_task(inline: Broker, registry: Registry) -> None:
    @task(name="doomed", registry=registry, max_retries=0)
    def doomed() -> None:
        raise BadThing("no")

    log = EventLog(inline)
    res = doomed.apply_async(broker=inline)
    inline.work()
    assert log.transitions(res.id) == [(None, P), (P, R), (R, F), (F, TaskState.DEAD)]
    assert inline.events.since(0) == log.events


# -- snapshot --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_snapshot_counts_queues_workers_and_in_flight(
    make_broker: BrokerFactory, registry: Registry, echo: Any
) -> None:
    started, release = threading.Event(), threading.Event()

    @task(name="gate", registry=registry)
    def gate() -> str:
        started.set()
        release.wait(20)
        return "open"

    broker = make_broker(num_workers=1).start()
    g = gate.apply_async(broker=broker)
    assert started.wait(10)
    queued = [echo.apply_async((i,), broker=broker) for i in range(2)]
    other = echo.apply_async((9,), queue="other", broker=broker)

    snap = broker.control.snapshot()
    assert snap.counts["RUNNING"] == 1 and snap.counts["PENDING"] == 3
    assert snap.in_flight == 1 and snap.workers_busy == 1
    assert len(snap.workers) == 1
    w = snap.workers[0]
    assert (w.state, w.task_id, w.task_name, w.pool) == ("busy", g.id, "gate", "thread")
    queues = {q.name: (q.ready, q.running) for q in snap.queues}
    assert queues == {"default": (2, 1), "other": (1, 0)}
    assert snap.dead_letters == 0

    release.set()
    for res in [g, *queued, other]:
        res.get(timeout=10)
    snap = broker.control.snapshot()
    assert snap.counts["SUCCESS"] == 4 and snap.counts["RUNNING"] == 0
    assert snap.in_flight == 0


def test_snapshot_counts_dead_letters(inline: Broker, registry: Registry) -> None:
    @task(name="dies", registry=registry, max_retries=0)
    def dies() -> None:
        raise BadThing("x")

    for _ in range(3):
        dies.apply_async(broker=inline)
    inline.work()
    snap = inline.control.snapshot()
    assert snap.dead_letters == 3 and snap.counts["DEAD"] == 3


def test_apply_many_enqueues_a_batch_and_each_runs(make_broker: Any, registry: Any) -> None:
    from dtq_core import task

    @task(name="mul", registry=registry)
    def mul(a: int, b: int = 1) -> int:
        return a * b

    broker = make_broker()
    results = mul.apply_many([(2, 3), ([4], {"b": 5}), [6]], broker=broker)
    assert len(results) == 3 and len({r.id for r in results}) == 3
    assert broker.work() == 3
    assert [r.get(timeout=1) for r in results] == [6, 20, 6]


def test_apply_many_rejects_a_bad_argument_before_enqueueing_anything(
    make_broker: Any, registry: Any
) -> None:
    from dtq_core import SerializationError, task

    @task(name="echo", registry=registry)
    def echo(x: object) -> object:
        return x

    broker = make_broker()
    with pytest.raises(SerializationError):
        echo.apply_many([(1,), (object(),)], broker=broker)
    assert sum(broker.backend.count_by_state().values()) == 0


def test_a_bad_per_call_option_value_is_refused_at_send(make_broker: Any, registry: Any) -> None:
    from dtq_core import ConfigError, task

    @task(name="t", registry=registry)
    def t() -> int:
        return 1

    broker = make_broker()
    with pytest.raises(ConfigError, match="time_limit"):
        t.apply_async((), broker=broker, time_limit="abc")
    assert sum(broker.backend.count_by_state().values()) == 0


def test_waiting_leaves_no_waiter_behind(make_broker: Any, registry: Any) -> None:
    from dtq_core import task

    @task(name="t", registry=registry)
    def t(x: int) -> int:
        return x

    broker = make_broker(num_workers=2)
    broker.start()
    results = [t.apply_async((i,), broker=broker) for i in range(50)]
    assert [r.get(timeout=10) for r in results] == list(range(50))
    with pytest.raises(TimeoutError):
        t.apply_async((0,), broker=broker, countdown=60).get(timeout=0.05)
    assert broker._waiters == {}


def test_results_are_kept_in_their_json_form(make_broker: Any, registry: Any) -> None:
    from dtq_core import task

    @task(name="t", registry=registry)
    def t() -> object:
        return {1: "a", "t": (1, 2)}

    broker = make_broker()
    res = t.apply_async((), broker=broker)
    broker.work()
    # What a log, a checkpoint or another process would give back, not the live object.
    assert res.get(timeout=1) == {"1": "a", "t": [1, 2]}
