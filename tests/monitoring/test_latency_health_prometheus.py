"""Latency histograms in the snapshot, health and alerts, and the Prometheus exposition."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from dtq_core import Broker, task
from dtq_core.clock import FakeClock
from dtq_core.errors import BackendUnavailable
from dtq_core.monitoring.health import STALE_WORKER_S, alerts, assess
from dtq_core.monitoring.prometheus import render
from dtq_core.registry import Registry
from dtq_core.snapshot import LatencySnapshot, QueueSnapshot, Rates, SystemSnapshot, Throughput
from dtq_core.workers.base import WorkerInfo
from tests.conftest import BrokerFactory

#: Histograms promise a relative error under 1 %.
REL = 0.01


class Boom(Exception):
    """A task failure."""


@pytest.fixture
def jobs(registry: Registry, clock: FakeClock) -> dict[str, Any]:
    @task(name="sleepy", registry=registry)
    def sleepy(seconds: float) -> None:
        clock.advance(seconds)  # run time on the fake clock

    @task(name="mail", registry=registry, queue="emails")
    def mail() -> None:
        pass

    @task(name="broken", registry=registry, max_retries=0)
    def broken() -> None:
        raise Boom("no")

    return {"sleepy": sleepy, "mail": mail, "broken": broken}


def latency(broker: Broker, scope: str, key: str, kind: str, window: int = 60) -> LatencySnapshot:
    [lat] = [
        x
        for x in broker.control.snapshot().latency
        if (x.scope, x.key, x.kind, x.window_s) == (scope, key, kind, window)
    ]
    return lat


# -- latency ---------------------------------------------------------------------------


def test_queue_waits_are_recorded_per_queue_and_per_task(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    for _ in range(10):
        jobs["sleepy"].apply_async((0,), broker=inline)
    for _ in range(10):
        clock.advance(1.0)
        assert inline.work(max_tasks=1) == 1
    for scope, key in (("queue", "default"), ("task", "sleepy")):
        wait = latency(inline, scope, key, "wait")
        assert wait.count == 10
        assert wait.p50 == pytest.approx(5.0, rel=REL)
        assert wait.p95 == pytest.approx(10.0, rel=REL)
        assert wait.p99 == pytest.approx(10.0, rel=REL)
        assert wait.max == pytest.approx(10.0, rel=REL)
        assert wait.mean == pytest.approx(5.5, rel=REL)
        assert sum(n for _, _, n in wait.bins) == 10
    assert latency(inline, "queue", "default", "wait", 600).count == 10


def test_attempts_recorded_from_many_threads_all_count(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from dtq_core.backends.base import Delivery
    from dtq_core.hooks import RunContext
    from dtq_core.monitoring import latency as latency_module
    from dtq_core.monitoring.latency import LatencyHook

    monkeypatch.setattr(latency_module, "RECORD_AT", 5)  # threads record now and then
    hook = inline.hook(LatencyHook)
    assert hook is not None
    now = clock.now()
    d = Delivery("t1", 1, "sleepy", "default", b"", 1, 1, now - 2.0, now, None, 0)
    ctx = RunContext(inline, d, jobs["sleepy"], [], {}, {}, "w", runtime=0.5)

    def attempts() -> None:
        for _ in range(250):
            hook.after_run(ctx, None, [])

    threads = [threading.Thread(target=attempts) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait = latency(inline, "task", "sleepy", "wait")  # a snapshot records what is left
    assert wait.count == 1_000
    assert wait.p50 == pytest.approx(2.0, rel=REL)
    assert latency(inline, "task", "sleepy", "run").p50 == pytest.approx(0.5, rel=REL)


def test_latency_is_kept_apart_per_queue_and_task(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    jobs["mail"].apply_async(broker=inline)
    jobs["sleepy"].apply_async((0,), broker=inline)
    clock.advance(3.0)
    inline.work(queues=["emails"])
    clock.advance(4.0)
    inline.work()
    assert latency(inline, "queue", "emails", "wait").p50 == pytest.approx(3.0, rel=REL)
    assert latency(inline, "task", "mail", "wait").p50 == pytest.approx(3.0, rel=REL)
    assert latency(inline, "queue", "default", "wait").p50 == pytest.approx(7.0, rel=REL)
    assert latency(inline, "task", "sleepy", "wait").count == 1


def test_old_samples_leave_the_short_window_first(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    jobs["mail"].apply_async(broker=inline)
    inline.work()
    clock.advance(120.0)
    keys = {(x.key, x.kind, x.window_s) for x in inline.control.snapshot().latency}
    assert ("emails", "wait", 60) not in keys
    assert ("emails", "wait", 600) in keys
    clock.advance(700.0)
    keys = {(x.key, x.kind, x.window_s) for x in inline.control.snapshot().latency}
    assert ("emails", "wait", 600) not in keys and ("emails", "wait", 60) not in keys
    assert ("emails", "wait", 3600) in keys and ("emails", "wait", 86_400) in keys
    clock.advance(90_000.0)
    assert inline.control.snapshot().latency == ()


def test_failed_attempts_are_recorded_too(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    jobs["broken"].apply_async(broker=inline)
    clock.advance(2.0)
    inline.work()
    assert latency(inline, "task", "broken", "wait").count == 1


def test_run_time_on_the_fake_clock_inline(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    for seconds in (0.5, 0.5, 0.5, 2.0):
        jobs["sleepy"].apply_async((seconds,), broker=inline)
    inline.work()
    run = latency(inline, "task", "sleepy", "run")
    assert run.count == 4
    assert run.p50 == pytest.approx(0.5, rel=REL)
    assert run.max == pytest.approx(2.0, rel=REL)


def test_run_time_on_the_fake_clock_in_a_thread_pool(
    make_broker: BrokerFactory, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    broker = make_broker(clock=clock, num_workers=1)
    broker.start()
    res = jobs["sleepy"].apply_async((3.0,), broker=broker)
    res.get(timeout=10)
    broker.stop(drain_timeout=5.0)  # the latency hook has seen the attempt
    assert latency(broker, "task", "sleepy", "run").p50 == pytest.approx(3.0, rel=REL)


# -- health ----------------------------------------------------------------------------


def test_an_idle_system_is_healthy(inline: Broker) -> None:
    inline.open()
    snap = inline.control.snapshot()
    assert (snap.health.status, snap.health.reasons, snap.alerts) == ("ok", (), ())
    assert inline.control.health() == snap.health


def test_ready_tasks_and_no_worker_degrade(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    for _ in range(3):
        jobs["mail"].apply_async(broker=inline)
    health = inline.control.health()
    assert health.status == "degraded"
    assert health.reasons == ("3 tasks ready and no live worker",)
    inline.control.pause_queue("emails")  # paused work is not owed to anyone
    snap = inline.control.snapshot()
    assert snap.health.status == "ok"
    assert "queue emails paused (3 waiting)" in snap.alerts


def test_a_live_worker_clears_and_a_silent_one_raises_the_alarm(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    jobs["mail"].apply_async(broker=inline)
    worker = WorkerInfo("w1", "thread")
    inline.backend.heartbeat("w1", worker.to_dict(clock.now()), clock.now(), 60.0)
    assert inline.control.health().status == "ok"
    clock.advance(STALE_WORKER_S + 5)
    health = inline.control.health()
    assert health.status == "degraded"
    assert health.reasons == ("1 tasks ready and no live worker", "worker w1 silent for 20s")


def test_a_growing_dead_letter_queue_degrades_and_alerts(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    for _ in range(2):
        jobs["broken"].apply_async(broker=inline)
    inline.work()
    assert inline.backend.count_dead() == 2
    clock.advance(1.0)  # rates count complete seconds only
    snap = inline.control.snapshot()
    assert snap.health.status == "degraded"
    assert "dead-letter queue growing: 2 in the last minute" in snap.health.reasons
    assert "DLQ growing: +2 in 60s (2 dead in all)" in snap.alerts
    clock.advance(60.0)
    snap = inline.control.snapshot()
    assert snap.health.status == "ok", "dead but no longer growing"
    assert snap.dead_letters == 2


def test_an_open_breaker_degrades(inline: Broker) -> None:
    inline.open()
    inline.control.set_breaker("api", "open")
    snap = inline.control.snapshot()
    assert snap.health.status == "degraded"
    assert snap.health.reasons == ("breaker api open",)
    assert snap.alerts == ("breaker api open (0 tasks held)",)


def test_an_unreachable_backend_is_down(inline: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    inline.open()

    def unreachable() -> float:
        raise BackendUnavailable("connection refused")

    monkeypatch.setattr(inline.backend, "ping", unreachable)
    health = inline.control.health()
    assert health.status == "down"
    assert health.reasons == ("backend unreachable: connection refused",)
    assert assess(inline.control.snapshot(), "timeout").status == "down"


# -- Prometheus ------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HELP = re.compile(rf"^# HELP ({_NAME}) (.+)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|summary|histogram|untyped)$")
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_VALUE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?Inf$|^NaN$")


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], str]:
    """Check every line of a text exposition; return ``{(name, labels): raw value}``."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], str] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            if m := _HELP.match(line):
                assert m.group(1) not in helped, f"second HELP: {line}"
                helped.add(m.group(1))
                continue
            m = _TYPE.match(line)
            assert m, f"bad comment line: {line!r}"
            assert m.group(1) not in types, f"second TYPE: {line}"
            types[m.group(1)] = m.group(2)
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        name, raw_labels, value = m.groups()
        family = re.sub(r"_(sum|count|bucket|total|created)$", "", name)
        family = name if name in types else family
        assert family in types, f"sample before its TYPE: {line}"
        assert _VALUE.match(value), f"bad value in {line!r}"
        labels: list[tuple[str, str]] = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample: {line}"
        samples[key] = value
    assert helped == set(types)
    return samples


def sample(samples: dict[Any, str], name: str, **labels: str) -> float:
    return float(samples[(name, frozenset(labels.items()))])


def test_the_exposition_parses_and_counts_per_queue(
    inline: Broker, clock: FakeClock, jobs: dict[str, Any]
) -> None:
    for _ in range(3):
        jobs["mail"].apply_async(broker=inline)
    jobs["sleepy"].apply_async((0,), broker=inline)
    jobs["broken"].apply_async(broker=inline)
    clock.advance(1.0)
    inline.work()
    jobs["mail"].apply_async(broker=inline)  # left ready
    samples = parse_exposition(inline.control.metrics_text())
    assert sample(samples, "dtq_tasks_enqueued_total", queue="emails") == 4
    assert sample(samples, "dtq_tasks_succeeded_total", queue="emails") == 3
    assert sample(samples, "dtq_tasks_enqueued_total", queue="default") == 2
    assert sample(samples, "dtq_tasks_succeeded_total", queue="default") == 1
    assert sample(samples, "dtq_tasks_failed_total", queue="default") == 1
    assert sample(samples, "dtq_tasks_dead_total", queue="default") == 1
    assert sample(samples, "dtq_queue_ready", queue="emails") == 1
    assert sample(samples, "dtq_dead_letters") == 1
    assert sample(samples, "dtq_tasks", state="SUCCESS") == 4
    # Real histograms: cumulative buckets, sum and count per queue and task.
    mail = {"queue": "emails", "task": "mail"}
    assert sample(samples, "dtq_task_wait_seconds_count", **mail) == 3
    assert sample(samples, "dtq_task_wait_seconds_sum", **mail) == pytest.approx(3.0, rel=REL)
    assert sample(samples, "dtq_task_wait_seconds_bucket", le="0.5", **mail) == 0
    assert sample(samples, "dtq_task_wait_seconds_bucket", le="1.0", **mail) == 3
    assert sample(samples, "dtq_task_wait_seconds_bucket", le="0.25", **mail) == 0
    assert sample(samples, "dtq_task_wait_seconds_bucket", le="+Inf", **mail) == 3


def test_the_exposition_carries_limits_breakers_and_hook_counters(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    @task(name="limited", registry=registry, rate_limit="1/s")
    def limited() -> None:
        pass

    broker = make_broker(clock=clock)
    for _ in range(3):
        limited.apply_async(broker=broker)
        limited.apply_async(dedup_key="same", broker=broker)
    broker.work()
    broker.control.set_breaker("api", "open")
    samples = parse_exposition(broker.control.metrics_text())
    assert sample(samples, "dtq_tasks_throttled_total") == 3
    assert sample(samples, "dtq_tasks_deduped_total") == 2
    assert sample(samples, "dtq_ratelimit_tokens", scope="task", key="limited") == 0
    assert sample(samples, "dtq_breaker_open", key="api") == 1


def test_label_values_are_escaped(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    odd = 'we"ird\\queue\nname'

    @task(name="odd", registry=registry, queue=odd)
    def odd_task() -> None:
        pass

    broker = make_broker(clock=clock)
    odd_task.apply_async(broker=broker)
    broker.control.set_breaker('key"with\\quotes', "open")
    text = broker.control.metrics_text()
    assert 'queue="we\\"ird\\\\queue\\nname"' in text
    samples = parse_exposition(text)
    assert sample(samples, "dtq_tasks_enqueued_total", queue=odd) == 1
    assert sample(samples, "dtq_breaker_open", key='key"with\\quotes') == 1


def _snapshot_with(enqueued: int) -> SystemSnapshot:
    zero = Rates()
    queue = QueueSnapshot("q", 0, 0, 0, False, zero, zero, zero, counters={"enqueued": enqueued})
    return SystemSnapshot(
        taken_at=0.0,
        backend="memory://",
        backend_info={},
        uptime=None,
        counts={"SUCCESS": enqueued},
        queues=(queue,),
        workers=(),
        in_flight=0,
        workers_busy=0,
        throughput=Throughput(zero, zero, zero, zero, zero),
        dead_letters=0,
        counters={},
        last_event=0,
    )


def test_render_of_a_hand_built_snapshot() -> None:
    samples = parse_exposition(render(_snapshot_with(42)))
    assert sample(samples, "dtq_tasks_enqueued_total", queue="q") == 42
    assert sample(samples, "dtq_tasks_retried_total", queue="q") == 0
    empty = dataclasses.replace(_snapshot_with(0), queues=())
    parse_exposition(render(empty))


def test_wal_recovery_figures_become_alerts() -> None:
    snap = dataclasses.replace(
        _snapshot_with(0), backend_info={"recovered_tasks": 3, "dropped_bytes": 17}
    )
    assert alerts(snap) == (
        "WAL recovery at start: 3 tasks restored",
        "WAL torn tail cut at start: 17 bytes dropped",
    )
    assert assess(snap).status == "ok"


def test_large_counters_are_exported_exactly() -> None:
    samples = parse_exposition(render(_snapshot_with(1_234_567)))
    assert sample(samples, "dtq_tasks_enqueued_total", queue="q") == 1_234_567
    assert sample(samples, "dtq_tasks", state="SUCCESS") == 1_234_567
