"""State shared through one Redis by processes that never talk to each other directly.

Queue pause and resume, delayed tasks and retries promoted by whichever worker's
maintenance runs, dedup keys and rate-limit buckets shared by two brokers, and the Console
API of a process that runs no worker showing the workers of the others.
"""

from __future__ import annotations

import time

import pytest

from dtq_core import Broker, BrokerConfig
from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.control import connect
from dtq_core.registry import Registry
from dtq_core.task import ErrorInfo, TaskState
from tests.backends.redis.cluster import NAMES, wait_for
from tests.backends.redis.conftest import ClusterFactory

pytestmark = pytest.mark.redis

S = TaskState


def test_pause_and_resume_from_other_processes_and_console_sees_workers(
    make_cluster: ClusterFactory,
) -> None:
    c = make_cluster()
    w1, w2 = c.spawn(2, queues="pq"), c.spawn(1, queues="pq,other")
    c.wait_ready(w1, w2)

    # A console in this process (no workers here) sees both processes' workers.
    console = connect(c.url)
    snap = console.snapshot()
    pids = {w.id.split(":")[-2] for w in snap.workers}
    assert {str(w1.pid), str(w2.pid)} <= pids
    assert sum(1 for w in snap.workers if w1.owns(w.id)) == 2
    assert sum(1 for w in snap.workers if w2.owns(w.id)) == 1
    assert all(w.heartbeat_age < 5 for w in snap.workers)

    console.pause_queue("pq")
    producer = c.producer()
    ids = [producer.send("rt.rec", [i], queue="pq").id for i in range(5)]
    time.sleep(1.2)  # several claim rounds of every worker
    assert c.executions() == {}
    assert {producer.backend.get_state(t) for t in ids} == {S.PENDING}
    stats = {q.name: q for q in console.snapshot().queues}
    assert stats["pq"].paused and stats["pq"].ready == 5

    other = connect(c.url)  # another console resumes it
    other.resume_queue("pq")
    for t in ids:
        assert producer.wait(t, timeout=10).state is S.SUCCESS
    assert set(c.executions()) == set(range(5))
    snap = console.snapshot()
    assert not {q.name: q for q in snap.queues}["pq"].paused
    # The workers' processed counts reach the console through their heartbeats.
    wait_for(
        lambda: sum(w.processed for w in console.snapshot().workers) == 5,
        5,
        "heartbeats with the processed counts",
    )
    # Counters and events written by the worker processes are read back here.
    pq = {q.name: q for q in console.snapshot().queues}["pq"]
    assert pq.counters.get("succeeded") == 5
    assert pq.counters.get("enqueued") == 5
    done = [e for e in console.events(0, 1000) if e.new == "SUCCESS"]
    assert {e.task_id for e in done} == set(ids)
    started = [e for e in console.events(0, 1000) if e.new == "RUNNING"]
    assert {e.task_id for e in started} == set(ids)
    assert all(w1.owns(e.worker) or w2.owns(e.worker) for e in started)
    for cons in (console, other):
        cons.close()  # type: ignore[attr-defined]


def test_delayed_task_and_retry_are_promoted_by_any_worker(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    first = c.spawn(1, queues="dq")
    c.wait_ready(first)
    producer = c.producer()  # runs no maintenance: it promotes nothing itself

    # A delayed task enqueued here is promoted by a worker process on time.
    t0 = time.time()
    delayed = producer.send("rt.rec", [100], queue="dq", countdown=1.0).id
    rec = producer.wait(delayed, timeout=10)
    assert rec.state is S.SUCCESS
    (start,) = [r["t"] for r in c.records() if r["i"] == 100]
    assert t0 + 1.0 <= start <= t0 + 1.0 + 1.5

    # A retry scheduled by one worker is promoted and run by another after it died.
    flaky = producer.send("rt.flaky", [7, 1.5], queue="dq").id
    wait_for(lambda: producer.backend.get_state(flaky) is S.RETRY, 10, "the first failure")
    first.kill()
    failed_at = time.time()
    second = c.spawn(1, queues="dq")
    rec = producer.wait(flaky, timeout=15)
    assert rec.state is S.SUCCESS
    assert rec.result == 2
    attempts = sorted((r["attempt"], r["pid"], r["t"]) for r in c.records() if r["i"] == 7)
    assert [(a, pid) for a, pid, _ in attempts] == [(1, first.pid), (2, second.pid)]
    assert attempts[1][2] >= attempts[0][2] + 1.5
    assert attempts[1][2] <= failed_at + 1.5 + 10
    assert [a.outcome for a in rec.history][:1] == ["FAILED"]


def test_dedup_and_rate_limits_are_shared_by_two_brokers(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    a, b = c.producer(), c.producer()
    assert a is not b and a.backend is not b.backend

    # Dedup: the second broker's duplicate answers with the first broker's task.
    first = a.send("rt.rec", [1], dedup_key="order-42")
    again = b.send("rt.rec", [1], dedup_key="order-42")
    assert again.id == first.id
    other = b.send("rt.rec", [2], dedup_key="order-43")
    assert other.id != first.id
    assert sum(q.ready for q in a.backend.queue_stats()) == 2

    # Raw set_if_absent / reserve: one key, one bucket, whichever broker asks.
    now = time.time()
    assert a.backend.set_if_absent("lock:x", "a", 30, now) is None
    assert b.backend.set_if_absent("lock:x", "b", 30, now) == "a"
    waits = [(a if i % 2 else b).backend.reserve("rl:shared", 10.0, 2, now) for i in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-6)


def test_queue_rate_limit_holds_across_worker_processes(make_cluster: ClusterFactory) -> None:
    rate, burst, n = 4.0, 4, 10  # "4/s": burst 4, then one start every 0.25 s
    c = make_cluster(config={"rate_limits": {"rl": "4/s"}})
    workers = [c.spawn(2, queues="rl"), c.spawn(2, queues="rl")]
    c.wait_ready(*workers)
    producer = c.producer()
    ids = [producer.send("rt.rec", [i], queue="rl").id for i in range(n)]
    for t in ids:
        assert producer.wait(t, timeout=20).state is S.SUCCESS
    starts = sorted(r["t"] for r in c.records())
    assert len(starts) == n
    assert {r["pid"] for r in c.records()} == {w.pid for w in workers}
    # One bucket for both processes: the k-th start is no earlier than the bucket allows.
    t0 = starts[0]
    for k, t in enumerate(starts):
        allowed = t0 + max(0, k - burst + 1) / rate
        assert t >= allowed - 0.05, (k, t - t0, allowed - t0)


def test_producer_sees_names_registered_by_worker_processes(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    w = c.spawn(1)
    c.wait_ready(w)
    # A producer with an empty registry of its own learns the names from the server.
    fresh = Broker(BrokerConfig(backend=c.url, num_workers=0, registry=Registry()))
    try:
        assert set(NAMES) <= fresh.backend.known_names()
        rec = fresh.send("rt.rec", [5]).get(timeout=10)
        assert rec == 5
    finally:
        fresh.stop()


def test_events_read_back_from_redis_name_the_worker_that_settled(url: str) -> None:
    backend = make_backend(url)
    now = time.time()
    for tid in ("e1", "e2"):
        backend.enqueue(NewTask(tid, "app.x", "q", 0, b"{}"), now)
    d1, d2 = backend.claim(["q"], "host:1:t0", 30.0, 2, now)
    backend.ack(d1.task_id, d1.token, None, now)
    backend.fail(d2.task_id, d2.token, ErrorInfo("ValueError", "x", ""), now, dead_reason="x")
    console = connect(url)
    try:
        settled = [e for e in console.events(0, 100) if e.old in ("RUNNING", "FAILED")]
        assert {(e.task_id, e.new) for e in settled} == {
            ("e1", "SUCCESS"),
            ("e2", "FAILED"),
            ("e2", "DEAD"),
        }
        assert {e.worker for e in settled} == {"host:1:t0"}
    finally:
        console.close()  # type: ignore[attr-defined]
        backend.close()
