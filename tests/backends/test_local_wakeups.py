"""Claimers blocked in a local store: woken by an enqueue, a resume or a wakeup, once each."""

from __future__ import annotations

import threading
import time

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import Backend, Delivery, NewTask
from dtq_core.codec import encode_message

LONG = 30.0  # a claim that is not woken fails the test by its join timeout


def _task(tid: str, queue: str = "q") -> NewTask:
    return NewTask(tid, "app.x", queue, 0, encode_message(tid, "app.x", [], {}))


def _claimers(
    backend: Backend, n: int, queues: list[str] | None = None
) -> tuple[list[threading.Thread], list[list[Delivery]]]:
    got: list[list[Delivery]] = []

    def claim() -> None:
        got.append(backend.claim(queues, "w", 30.0, 1, time.time(), LONG))

    threads = [threading.Thread(target=claim, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(backend._write._sleepers) < n:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the claimers never went to sleep"
        time.sleep(0.001)
    return threads, got


@pytest.fixture
def backend() -> Backend:
    b = make_backend("memory://")
    b.open()
    return b


def test_each_enqueue_wakes_one_sleeping_claimer(backend: Backend) -> None:
    threads, got = _claimers(backend, 2)
    backend.enqueue(_task("a"), time.time())
    backend.enqueue(_task("b"), time.time())
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert sorted(d.task_id for batch in got for d in batch) == ["a", "b"]
    backend.enqueue(_task("c"), time.time())  # nobody sleeps: nothing to wake
    assert [d.task_id for d in backend.claim(None, "w", 30.0, 5, time.time())] == ["c"]


def test_resume_and_wakeup_wake_every_sleeper(backend: Backend) -> None:
    backend.set_paused("q", True)
    backend.enqueue(_task("a"), time.time())
    threads, got = _claimers(backend, 2, ["q"])
    backend.set_paused("q", False)  # resumed: every claimer looks again
    backend.wakeup()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert sorted(len(batch) for batch in got) == [0, 1]


def test_a_claim_that_times_out_leaves_no_sleeper(backend: Backend) -> None:
    assert backend.claim(None, "w", 30.0, 1, time.time(), 0.01) == []
    assert not backend._write._sleepers  # type: ignore[attr-defined]
