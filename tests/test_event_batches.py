"""Events published in batches read exactly as if published one by one; metrics too."""

from __future__ import annotations

import random

import pytest

from dtq_core.backends.base import Transition
from dtq_core.events import Event, EventBus
from dtq_core.monitoring.metrics import COUNTERS, RATED, Metrics
from dtq_core.task import TaskState

S = TaskState

#: Transitions that mean something to the metrics, and some that do not.
MOVES = [
    (None, S.PENDING),
    (S.PENDING, S.RUNNING),
    (S.RUNNING, S.SUCCESS),
    (S.RUNNING, S.FAILED),
    (S.FAILED, S.RETRY),
    (S.RETRY, S.PENDING),
    (S.FAILED, S.DEAD),
    (S.RUNNING, S.PENDING),
    (S.PENDING, S.CANCELLED),
    (S.RUNNING, S.DEAD),
]


def batches(seed: int) -> list[tuple[float, list[Transition], str | None]]:
    rng = random.Random(seed)
    out = []
    ts = 1000.0
    for b in range(60):
        ts += rng.choice([0.0, 0.3, 1.1, 7.0])
        size = rng.choice([1, 1, 2, 5, 17])
        trs = [
            Transition(f"t{b}-{i}", "job", rng.choice(["a", "b"]), *rng.choice(MOVES), None)
            for i in range(size)
        ]
        out.append((ts, trs, rng.choice([None, "w1", "w2"])))
    return out


@pytest.mark.parametrize("history", [0, 1, 7, 50, 10_000])
def test_batches_read_back_as_single_events_at_every_cut(history: int) -> None:
    batched, single = EventBus(history), EventBus(history)
    seen_batched: list[Event] = []
    seen_single: list[Event] = []
    batched.subscribe(seen_batched.append)
    single.subscribe(seen_single.append)
    for ts, trs, worker in batches(history):
        first = batched.publish_many(ts, trs, worker)
        for i, tr in enumerate(trs):
            ev = single.publish(ts, tr.task_id, tr.name, tr.queue, tr.old, tr.new, worker, tr.note)
            assert ev.seq == first + i
    assert seen_batched == seen_single
    assert batched.last_seq == single.last_seq
    last = single.last_seq
    for since in [0, 1, last // 3, last - history, last - 3, last - 1, last, last + 5]:
        for limit in [0, 1, 4, history, 1000]:
            assert batched.since(since, limit) == single.since(since, limit), (since, limit)


def test_a_batch_subscriber_gets_each_batch_once_and_makes_no_events() -> None:
    bus = EventBus(history=0)
    got: list[tuple[float, int, str | None]] = []
    unsubscribe = bus.subscribe_batch(lambda ts, trs, worker: got.append((ts, len(trs), worker)))
    trs = [
        Transition("a", "job", "q", S.PENDING, S.RUNNING),
        Transition("b", "job", "q", None, S.PENDING),
    ]
    assert bus.publish_many(5.0, trs, "w") == 1
    assert bus.publish_many(6.0, [], "w") == 0  # nothing published, nothing delivered
    unsubscribe()
    bus.publish_many(7.0, trs, "w")
    assert got == [(5.0, 2, "w")]
    assert bus.last_seq == 0 and bus.since(0) == []  # no history kept: nothing to read


def test_a_failing_subscriber_is_logged_and_the_others_still_get_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    got: list[str] = []

    def bad(ts: float, trs: object, worker: str | None) -> None:
        raise ValueError("boom")

    bus.subscribe_batch(bad)
    bus.subscribe(lambda ev: got.append(ev.task_id))
    bus.publish_many(1.0, [Transition("a", "job", "q", None, S.PENDING)], None)
    assert got == ["a"] and "event subscriber" in caplog.text


def test_metrics_counted_per_batch_equal_metrics_counted_per_event() -> None:
    per_batch, per_event = Metrics(), Metrics()
    by_batch, by_event = EventBus(history=0), EventBus(history=0)
    by_batch.subscribe_batch(per_batch.on_batch)
    by_event.subscribe(per_event.on_event)
    data = batches(3)
    for ts, trs, worker in data:
        by_batch.publish_many(ts, trs, worker)
        by_event.publish_many(ts, trs, worker)
    now = data[-1][0]
    assert per_batch.queues() == per_event.queues() == ["a", "b"]
    for queue in [None, "a", "b"]:
        assert per_batch.counters(queue) == per_event.counters(queue)
        for counter in RATED:
            assert per_batch.series(counter, now, 60, queue) == per_event.series(
                counter, now, 60, queue
            )
    assert sum(per_batch.counters()[c] for c in COUNTERS) > 0


def test_the_ring_keeps_its_events_out_of_the_cyclic_gc() -> None:
    import gc

    bus = EventBus(history=100)
    trs = [Transition(f"t{i}", "app.x", "q", S.PENDING, S.RUNNING, None) for i in range(3)]
    bus.publish_many(1.0, trs, "w")
    bus.publish_many(2.0, trs[:1])
    bus.publish(3.0, "t9", "app.x", "q", None, S.PENDING)
    gc.collect()  # what is left tracked now stays tracked
    kept = list(bus._ring.values())
    assert len(kept) == 3
    assert [k.n for k in kept] == [3, 1, 1]
    assert not any(gc.is_tracked(k) for k in kept)
    rows = [r for k in kept for r in getattr(k, "rows", ())]
    assert len(rows) == 3 and not any(gc.is_tracked(r) for r in rows)
    assert [(e.seq, e.task_id, e.old, e.new, e.worker) for e in bus.since(0)] == [
        (1, "t0", S.PENDING, S.RUNNING, "w"),
        (2, "t1", S.PENDING, S.RUNNING, "w"),
        (3, "t2", S.PENDING, S.RUNNING, "w"),
        (4, "t0", S.PENDING, S.RUNNING, None),
        (5, "t9", None, S.PENDING, None),
    ]


def test_metrics_count_batches_published_from_many_threads_without_a_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from dtq_core.monitoring import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "FOLD_AT", 7)  # publishers fold now and then
    m = Metrics()
    start = Transition("t", "app.x", "q", S.PENDING, S.RUNNING, None)
    done = Transition("t", "app.x", "q", S.RUNNING, S.SUCCESS, None)

    def publish() -> None:
        for i in range(500):
            m.on_batch(1_000.0 + i % 3, [start], "w")
            m.on_batch(1_000.0 + i % 3, [done, done], "w")

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = m.counters("q")  # a reader counts whatever is left
    assert counts["started"] == 2_000 and counts["succeeded"] == 4_000
    assert sum(m.series("succeeded", 1_003.0, 5, "q")) == 4_000
