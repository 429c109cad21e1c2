"""A Redis restart mid-run: workers reconnect by themselves and no acknowledged enqueue is lost.

The server is one the test started with ``--appendonly yes --appendfsync always``; it is
killed with SIGKILL (no shutdown save) while a producer enqueues and two ``dtq worker``
processes drain, then started again on the same port and directory.
"""

from __future__ import annotations

import threading
import time

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.errors import DTQError
from dtq_core.task import TaskState
from tests.backends.redis.cluster import wait_for
from tests.backends.redis.conftest import ClusterFactory
from tests.backends.redis.proxy import CutProxy
from tests.backends.redis.server import RedisServer

pytestmark = pytest.mark.redis

S = TaskState


def test_redis_restart_mid_run_loses_no_acknowledged_enqueue(
    make_cluster: ClusterFactory, redis_aof_server: RedisServer
) -> None:
    n = 240
    c = make_cluster(server=redis_aof_server)
    producer = c.producer()
    workers = [c.spawn(2), c.spawn(2)]
    c.wait_ready(*workers)

    acked: dict[int, str] = {}
    errors: list[BaseException] = []

    def produce() -> None:
        for i in range(n):
            try:
                acked[i] = producer.send("rt.rec", [i], {"sleep": 0.01}).id
            except DTQError as exc:  # an enqueue that was not acknowledged
                errors.append(exc)
            time.sleep(0.005)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    wait_for(lambda: len(acked) >= n // 3 and len(c.records()) >= 20, 30, "work under way")
    redis_aof_server.stop(kill=True)
    down_at = time.time()
    time.sleep(1.0)
    redis_aof_server.start()
    up_at = time.time()
    t.join(60)
    assert not t.is_alive()
    # With retry_s=30 the producer rode out the outage. A send may still raise when its
    # reply was lost (see the next test); such a send was not acknowledged, so the
    # property below is about the acknowledged ones.
    assert len(acked) + len(errors) == n
    assert len(errors) <= 1, errors  # one producer thread: one send in flight at the kill

    for tid in acked.values():
        rec = producer.wait(tid, timeout=30)
        assert rec.state is S.SUCCESS, rec
    counts = c.executions()
    assert set(acked) <= set(counts)
    # Both workers reconnected by themselves and took work after the restart.
    after = {r["pid"] for r in c.records() if r["t"] > up_at}
    for w in workers:
        assert w.alive(), w.stderr()
        assert w.pid in after, f"worker {w.pid} ran nothing after the restart:\n{w.stderr()}"
    assert "Traceback" not in "".join(w.stderr() for w in workers)
    assert down_at < up_at


def test_enqueue_whose_reply_was_lost_is_not_reported_as_failed(
    redis_server: RedisServer, prefix: str
) -> None:
    proxy = CutProxy(redis_server.port)
    backend = make_backend(f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix}&retry_s=5")
    try:
        now = time.time()
        backend.enqueue(NewTask("warm", "app.x", "q", 0, b"{}"), now)  # scripts loaded
        proxy.cut_next(b"EVALSHA")
        backend.enqueue(NewTask("lost-reply", "app.x", "q", 0, b"{}"), now)
        assert proxy.cuts == 1
        rec = backend.get("lost-reply")
        assert rec is not None and rec.state is S.PENDING
        assert sum(q.ready for q in backend.queue_stats()) == 2
    finally:
        backend.close()
        proxy.close()


def test_a_batch_whose_reply_was_lost_is_not_reported_as_a_duplicate(
    redis_server: RedisServer, prefix: str
) -> None:
    # A batch over two queues goes in a pipeline. redis-py would resend it by itself
    # after the lost reply (its default retries), and the resent scripts would find
    # the tasks stored: a "duplicate id" for an enqueue that worked. DTQ's own retry
    # knows it resent, and takes that as the stored first attempt.
    proxy = CutProxy(redis_server.port)
    backend = make_backend(f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix}&retry_s=5")
    try:
        now = time.time()
        backend.enqueue_many(
            [NewTask("w1", "app.x", "q1", 0, b"{}"), NewTask("w2", "app.x", "q2", 0, b"{}")], now
        )
        proxy.cut_next(b"EVALSHA")
        backend.enqueue_many(
            [NewTask("b1", "app.x", "q1", 0, b"{}"), NewTask("b2", "app.x", "q2", 0, b"{}")], now
        )
        assert proxy.cuts == 1
        for tid in ("b1", "b2"):
            rec = backend.get(tid)
            assert rec is not None and rec.state is S.PENDING
        assert sum(q.ready for q in backend.queue_stats()) == 4
    finally:
        backend.close()
        proxy.close()


def test_a_producer_lists_its_queues_again_after_a_restart_that_lost_the_data(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A producer lists a queue once (SADD to the queue list), then remembers it did. A
    # Redis without persistence comes back empty: without listing it again, workers
    # serving every queue (they read the list) would never find the new tasks.
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis-plain"))
    server.start()
    try:
        be = make_backend(server.url("relist"), None)
        be.retry_s = 10.0
        be.open()
        try:
            be.enqueue(NewTask("a1", "job", "q1", 0, b"{}", None, 0, None), time.time())
            assert [s.name for s in be.queue_stats()] == ["q1"]
            server.stop(kill=True)
            server.start()
            be.enqueue(NewTask("a2", "job", "q1", 0, b"{}", None, 0, None), time.time())
            assert [s.name for s in be.queue_stats()] == ["q1"]
            got = be.claim(None, "w", 10.0, 5, time.time())  # a worker of every queue
            assert [d.task_id for d in got] == ["a2"]
        finally:
            be.close()
    finally:
        server.stop()
