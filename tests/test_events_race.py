"""Readers of structures that workers mutate, against publishers, in threads.

``EventBus.since`` used to iterate the ring while workers appended to it (``deque
mutated during iteration``); snapshots read the metrics, the pool's workers and the
hooks' state meanwhile. Bounded: a few seconds, whatever the machine.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from dtq_core import Broker, BrokerConfig, task
from dtq_core.events import EventBus
from dtq_core.registry import Registry

SECONDS = 1.5


def race(targets: list[Callable[[], None]], stop: threading.Event) -> None:
    """Run ``targets`` in threads of their own for ``SECONDS``, then stop and join them."""
    threads = [threading.Thread(target=fn) for fn in targets]
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_event_bus_readers_against_publishers() -> None:
    bus = EventBus(history=500)
    stop = threading.Event()
    failures: list[BaseException] = []
    counts = {"read": 0}

    def publish() -> None:
        try:
            while not stop.is_set():
                bus.publish(time.time(), "id", "t", "q", None, "PENDING")
        except BaseException as exc:  # pragma: no cover - the failure being tested
            failures.append(exc)

    def read() -> None:
        try:
            seen = 0
            while not stop.is_set():
                events = bus.since(seen, 200)
                seqs = [e.seq for e in events]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
                assert all(s > seen for s in seqs) and len(seqs) <= 200
                if seqs:
                    # Consecutive: nothing in between was skipped except what fell off.
                    assert seqs == list(range(seqs[0], seqs[-1] + 1))
                    seen = seqs[-1]
                assert bus.last_seq >= seen
                counts["read"] += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(5)
    assert not failures, failures[0]
    assert counts["read"] > 10
    assert bus.since(bus.last_seq - 10, 5) == bus.since(bus.last_seq - 5, 100)


def test_event_bus_since_limits_to_the_newest() -> None:
    bus = EventBus(history=10)
    for _ in range(25):
        bus.publish(0.0, "id", "t", "q", None, "PENDING")
    assert [e.seq for e in bus.since(0, 3)] == [23, 24, 25]
    assert [e.seq for e in bus.since(20)] == [21, 22, 23, 24, 25]
    assert [e.seq for e in bus.since(0)] == list(range(16, 26))
    assert bus.since(25) == [] and bus.since(0, 0) == []


def test_snapshots_and_event_reads_while_workers_run() -> None:
    reg = Registry()

    @task(name="noop", registry=reg, dedup=True, rate_limit="100000/s")
    def noop(i: int) -> int:
        return i

    broker = Broker(BrokerConfig(backend="memory://", num_workers=4, registry=reg))
    broker.start()
    stop = threading.Event()
    failures: list[BaseException] = []
    console = broker.control

    def produce() -> None:
        i = 0
        try:
            while not stop.is_set():
                noop.apply_async((i,), broker=broker)
                i += 1
        except BaseException as exc:
            failures.append(exc)

    def look() -> None:
        try:
            seen = 0
            while not stop.is_set():
                snap = console.snapshot()
                assert snap.last_event >= 0
                for ev in console.events(seen, 500):
                    seen = max(seen, ev.seq)
                console.metrics_text()
        except BaseException as exc:
            failures.append(exc)

    try:
        race([produce] * 2 + [look] * 2, stop)
    finally:
        broker.stop(drain_timeout=1)
    assert not failures, failures[0]


def test_batches_of_every_size_read_in_sequence_while_published_without_a_lock() -> None:
    """The ring takes no lock: batches are numbered, then stored under their first number.

    Readers must never see an event after a number not stored yet (they would skip it
    for good), every event a reader gets follows the last one it got, ``last_seq`` is
    never below what was read, and the trimmer keeps the ring near ``history``.
    """
    import random
    import sys

    bus = EventBus(history=300)
    stop = threading.Event()
    failures: list[BaseException] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switches between the two steps of a publish, often

    def publish(k: int) -> None:
        rnd = random.Random(k)
        try:
            while not stop.is_set():
                n = rnd.choice([1, 1, 1, 2, 5, 64])
                first = bus.publish_many(0.0, [("id", "t", "q", None, "PENDING", None)] * n)
                assert first >= 1
        except BaseException as exc:  # pragma: no cover - the failure being tested
            failures.append(exc)

    def read() -> None:
        try:
            seen = 0
            while not stop.is_set():
                seqs = [e.seq for e in bus.since(seen, 200)]
                if seqs:
                    assert seqs == list(range(seqs[0], seqs[-1] + 1))
                    assert seqs[0] > seen and len(seqs) <= 200
                    seen = seqs[-1]
                assert bus.last_seq >= seen
        except BaseException as exc:
            failures.append(exc)

    try:
        race([functools.partial(publish, k) for k in range(4)] + [read] * 2, stop)
    finally:
        sys.setswitchinterval(old)
    assert not failures, failures[0]
    # Every number in one stored batch: from the head, batch after batch, to the end.
    ring, k = bus._ring, bus._head
    while k in ring:
        k += ring[k].n
    assert k == bus.last_seq + 1
    bus.publish_many(0.0, [("id", "t", "q", None, "PENDING", None)])  # trims, nothing in flight
    assert sum(b.n for b in ring.values()) <= 300 + bus._slack + 64
