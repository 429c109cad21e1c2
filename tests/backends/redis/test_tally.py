"""Single enqueues counted by their producer and added to Redis's counters in batches.

The counts of ``enqueued`` (per second and in total) reach Redis within the flush
delay, in the second of each enqueue; a flush that fails keeps them; close adds the
rest; a forked child starts with none of its parent's.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.backends.redis.tally import Counts, Tally


class Sink:
    """A flush that records what it was given, or fails while ``down``."""

    def __init__(self) -> None:
        self.got: list[Counts] = []
        self.down = False
        self.flushed = threading.Event()

    def __call__(self, counts: Counts) -> None:
        if self.down:
            raise ConnectionError("redis is down")
        self.got.append(dict(counts))
        self.flushed.set()

    def total(self) -> Counts:
        out: Counts = {}
        for batch in self.got:
            for k, n in batch.items():
                out[k] = out.get(k, 0) + n
        return out


def test_counts_are_flushed_in_one_batch_after_the_delay() -> None:
    sink = Sink()
    tally = Tally(sink, after_s=0.2)
    for _ in range(3):
        tally.add("q", 100)
    tally.add("q", 101)
    tally.add("r", 101)
    assert sink.got == []  # not per enqueue
    assert sink.flushed.wait(5)
    assert sink.got == [{("q", 100): 3, ("q", 101): 1, ("r", 101): 1}]
    tally.close()


def test_a_failed_flush_keeps_the_counts_for_the_next() -> None:
    sink = Sink()
    tally = Tally(sink, after_s=0.05)
    sink.down = True
    tally.add("q", 1)
    with pytest.raises(ConnectionError):
        tally.flush()
    tally.add("q", 1)
    sink.down = False
    assert sink.flushed.wait(5)  # the thread tries again by itself
    tally.close()
    assert sink.total() == {("q", 1): 2}


def test_close_flushes_and_a_later_add_starts_again() -> None:
    sink = Sink()
    tally = Tally(sink, after_s=60.0)
    tally.add("q", 5)
    tally.close()
    assert sink.got == [{("q", 5): 1}]
    tally.add("q", 6)
    tally.flush()
    assert sink.total() == {("q", 5): 1, ("q", 6): 1}
    tally.close()


def test_threads_counting_at_once_lose_nothing() -> None:
    sink = Sink()
    tally = Tally(sink, after_s=0.01)

    def count() -> None:
        for i in range(2000):
            tally.add("q", i % 3)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.close()
    assert sum(sink.total().values()) == 8000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# Forks a threaded process on purpose (the tally's thread runs): Python 3.12+ warns.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_does_not_count_its_parents_enqueues_again() -> None:
    sink = Sink()
    tally = Tally(sink, after_s=60.0)
    tally.add("q", 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            tally.add("q", 2)
            tally.flush()
            os.write(w, repr(sink.got).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        child = fh.read()
    os.waitpid(pid, 0)
    assert child == "[{('q', 2): 1}]"
    tally.close()
    assert sink.got == [{("q", 1): 1}]


@pytest.mark.redis
def test_another_process_sees_the_counts_in_their_seconds(
    make_be: Callable[..., RedisBackend], plain: Any
) -> None:
    producer, reader = make_be(), make_be()
    now = float(int(time.time())) - 5.5  # within the counters' two minutes
    producer.enqueue(NewTask("seed", "app.x", "q", 0, b"{}"), now)  # ENQUEUE: counts itself
    for i in range(4):
        producer.enqueue(NewTask(f"a{i}", "app.x", "q", 0, b"{}"), now)
    producer.enqueue(NewTask("b", "app.x", "q", 0, b"{}"), now + 1)
    k = producer.keys.queue("q")
    deadline = time.monotonic() + 10
    while reader.totals().get("q", {}).get("enqueued") != 6:
        assert time.monotonic() < deadline, reader.totals()
        time.sleep(0.05)
    assert plain.hget(f"{k['sec']}{int(now)}", "enqueued") == "5"
    assert plain.hget(f"{k['sec']}{int(now) + 1}", "enqueued") == "1"
    assert 0 < plain.ttl(f"{k['sec']}{int(now) + 1}") <= 120
    series = reader.rate_series(now + 3, seconds=5)["q"]["enqueued"]
    assert series[-3:] == [5, 1, 0]


@pytest.mark.redis
def test_close_adds_what_the_producer_counted(
    make_be: Callable[..., RedisBackend], plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = make_be()
    assert producer._tally is not None
    monkeypatch.setattr(producer._tally, "_after_s", 60.0)
    now = time.time()
    producer.enqueue(NewTask("seed", "app.x", "q", 0, b"{}"), now)
    producer.enqueue(NewTask("one", "app.x", "q", 0, b"{}"), now)
    assert plain.hget(producer.keys.queue("q")["totals"], "enqueued") == "1"
    producer.close()
    assert plain.hget(producer.keys.queue("q")["totals"], "enqueued") == "2"


def test_a_flush_waits_for_one_under_way() -> None:
    """A reader's flush returns only once what the thread took is added."""
    entered, release = threading.Event(), threading.Event()
    sink = Sink()

    def slow(counts: Counts) -> None:
        entered.set()
        assert release.wait(5)
        sink(counts)

    tally = Tally(slow, after_s=0.01)
    tally.add("q", 1)
    assert entered.wait(5)  # the thread is sending
    done = threading.Event()
    reader = threading.Thread(target=lambda: (tally.flush(), done.set()))
    reader.start()
    assert not done.wait(0.2)  # waits for the send under way
    release.set()
    assert done.wait(5)
    assert sink.total() == {("q", 1): 1}
    reader.join()
    tally.close()


@pytest.mark.redis
def test_a_key_of_another_type_drops_its_own_counts_alone(
    make_be: Callable[..., RedisBackend], plain: Any
) -> None:
    producer = make_be()
    now = time.time()
    for q in ("q", "bad"):
        producer.enqueue(NewTask(f"seed-{q}", "app.x", q, 0, b"{}"), now)
    plain.set(producer.keys.queue("bad")["totals"], "not a hash")  # made by hand
    for i in range(3):
        producer.enqueue(NewTask(f"q{i}", "app.x", "q", 0, b"{}"), now)
        producer.enqueue(NewTask(f"b{i}", "app.x", "bad", 0, b"{}"), now)
    assert producer._tally is not None
    producer._tally.flush()  # q's counts added; bad's totals refused and dropped
    time.sleep(1.2)  # more than two flush delays: nothing is sent again
    assert plain.hget(producer.keys.queue("q")["totals"], "enqueued") == "4"


@pytest.mark.redis
def test_a_process_that_exits_without_close_adds_its_counts(url: str, plain: Any) -> None:
    code = f"""
import time
from dtq_core.backends import make_backend
from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
be = make_backend({url!r})
be.open()
for i in range(5):
    be.enqueue(NewTask(f"x{{i}}", "app.x", "q", 0, b"{{}}"), time.time())
"""  # no close(): the atexit flush adds the four single enqueues' counts
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    be = make_backend(url)
    assert isinstance(be, RedisBackend)
    assert plain.hget(be.keys.queue("q")["totals"], "enqueued") == "5"


@pytest.mark.redis
def test_a_backend_dropped_without_close_ends_its_tally_thread(url: str) -> None:
    def tally_threads() -> int:
        return sum(t.name == "dtq-redis-tally" and t.is_alive() for t in threading.enumerate())

    before = tally_threads()
    be = make_backend(url)
    assert isinstance(be, RedisBackend)
    be.open()
    be.enqueue(NewTask("seed", "app.x", "q", 0, b"{}"), time.time())
    be.enqueue(NewTask("one", "app.x", "q", 0, b"{}"), time.time())
    assert tally_threads() == before + 1
    be.close()  # (closes the pool; the tally thread ends with the backend object)
    be.enqueue(NewTask("two", "app.x", "q", 0, b"{}"), time.time())  # a thread again
    del be
    gc.collect()
    deadline = time.monotonic() + 5
    while tally_threads() > before:
        assert time.monotonic() < deadline
        time.sleep(0.02)
