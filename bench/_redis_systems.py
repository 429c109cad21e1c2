"""The systems ``redis_bench.py`` measures: each one's producer and worker command line."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import _probe

Enqueue = Callable[[int], None]


@dataclass
class System:
    """One task queue: how to enqueue from here and how to start its worker."""

    name: str
    module: str
    worker: Callable[[int], list[str]]
    producer: Callable[[], tuple[Enqueue, Callable[[], None]]]
    env: dict[str, str] = field(default_factory=dict)
    n_max: int = 10**9
    note: str = ""


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def dtq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.dtq_app import config, noop
    from dtq_core import Broker

    b = Broker(config(0))
    b.open()

    def enq(i: int) -> None:
        noop.apply_async((i,), broker=b)

    return enq, b.stop


def dtq_batch_producer() -> tuple[Enqueue, Callable[[], None]]:
    """``apply_many`` in batches of 100 (one round trip each); ``enq.flush`` sends the
    rest (the latency phase flushes after every task, so nothing waits in a batch)."""
    from bench.peers.dtq_app import config, noop
    from dtq_core import Broker

    b = Broker(config(0))
    b.open()
    pending: list[tuple[tuple[int], dict[str, object]]] = []

    def flush() -> None:
        if pending:
            noop.apply_many(pending, broker=b)
            pending.clear()

    def enq(i: int) -> None:
        pending.append(((i,), {}))
        if len(pending) >= 100:
            flush()

    enq.flush = flush  # type: ignore[attr-defined]
    return enq, b.stop


def celery_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.celery_app import app, noop

    def enq(i: int) -> None:
        noop.delay(i)

    return enq, app.close


def dramatiq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.dramatiq_app import broker, noop

    def enq(i: int) -> None:
        noop.send(i)

    return enq, broker.close


def rq_producer() -> tuple[Enqueue, Callable[[], None]]:
    import redis
    from rq import Queue

    from bench.peers.rq_app import noop

    conn = redis.Redis.from_url(_probe.url())
    q = Queue("bench", connection=conn)

    def enq(i: int) -> None:
        q.enqueue(noop, i, result_ttl=0)

    return enq, conn.close


def huey_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.huey_app import noop

    def enq(i: int) -> None:
        noop(i)

    return enq, lambda: None


def arq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from arq import create_pool

    from bench.peers.arq_app import WorkerSettings

    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(WorkerSettings.redis_settings))

    def enq(i: int) -> None:
        loop.run_until_complete(pool.enqueue_job("noop", i))

    def close() -> None:
        loop.run_until_complete(pool.aclose())
        loop.close()

    return enq, close


SYSTEMS = [
    System(
        "dtq",
        "dtq_core",
        lambda c: [sys.executable, "-m", "bench.peers.dtq_app"],
        dtq_producer,
        note="defaults: thread pool, adaptive prefetch, acks batched (2 ms), results kept",
    ),
    System(
        "dtq-batch",
        "dtq_core",
        lambda c: [sys.executable, "-m", "bench.peers.dtq_app"],
        dtq_batch_producer,
        note="the same worker; enqueued with apply_many, 100 per call",
    ),
    System(
        "dtq-prefetch1",
        "dtq_core",
        lambda c: [sys.executable, "-m", "bench.peers.dtq_app"],
        dtq_producer,
        env={"BENCH_PREFETCH": "1", "BENCH_ACK_DELAY": "0"},
        note="one task per claim, each ack on its own (the behaviour before batching)",
    ),
    System(
        "celery",
        "celery",
        lambda c: [
            _bin("celery"),
            "-A",
            "bench.peers.celery_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(c),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        celery_producer,
        n_max=5000,
        note="threads pool, ignore_result; N capped at 5000",
    ),
    System(
        "dramatiq",
        "dramatiq",
        lambda c: [_bin("dramatiq"), "bench.peers.dramatiq_app", "-p", "1", "-t", str(c)],
        dramatiq_producer,
        note="1 process, threads",
    ),
    System(
        "rq",
        "rq",
        lambda c: [
            sys.executable,
            "-c",
            "import bench.peers.rq_app; from rq.cli import main; main()",
            "worker",
            "-u",
            _probe.url(),
            "-q",
            "bench",
        ],
        rq_producer,
        n_max=300,
        note="default worker (forks a work horse per job), result_ttl=0; N capped at 300",
    ),
    System(
        "huey",
        "huey",
        lambda c: [
            _bin("huey_consumer"),
            "bench.peers.huey_app.huey",
            "-w",
            str(c),
            "-k",
            "thread",
            "-q",
        ],
        huey_producer,
        note="RedisHuey, threads, results off",
    ),
    System(
        "arq",
        "arq",
        lambda c: [_bin("arq"), "bench.peers.arq_app.WorkerSettings"],
        arq_producer,
        n_max=2000,
        note="max_jobs = concurrency, keep_result 0; N capped at 2000",
    ),
]
