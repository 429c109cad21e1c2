"""A failed embedded store in one process: health says so, the broker stops by itself."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from dtq_core import Broker, BrokerConfig, task
from dtq_core.errors import StoreFailed
from dtq_core.registry import Registry
from tests.backends.redis.cluster import wait_for


def _failing_fsync(fail: threading.Event) -> object:
    def fsync(fd: int) -> None:
        if fail.is_set():
            raise OSError(errno.EIO, "injected fsync failure")
        os.fsync(fd)

    return fsync


def test_health_names_the_failed_store(tmp_path: Path) -> None:
    fail = threading.Event()
    b = Broker(BrokerConfig(backend=f"embedded://{tmp_path / 'd'}", num_workers=0))
    b.backend.fsync_fn = _failing_fsync(fail)  # type: ignore[attr-defined]
    b.open()
    b.backend.register_names(["x"])
    try:
        b.send("x")
        fail.set()
        with pytest.raises(StoreFailed, match="injected fsync failure"):
            b.send("x")
        health = b.control.snapshot().health
        assert health.status == "down"
        assert health.reasons == ("store failed (OSError: injected fsync failure)",)
        assert b.control.health() == health  # what `dtq health` prints: "down: store failed (…)"
    finally:
        b.stop()


@pytest.mark.parametrize("pool", ["thread", "process", "async"])
def test_a_broker_with_workers_stops_itself_on_a_failed_store(tmp_path: Path, pool: str) -> None:
    reg = Registry()

    @task(name="fs.one", registry=reg)
    def one() -> int:
        return 1

    fail = threading.Event()
    cfg = BrokerConfig(
        backend=f"embedded://{tmp_path / 'd'}", num_workers=2, pool=pool, registry=reg
    )
    b = Broker(cfg)
    b.backend.fsync_fn = _failing_fsync(fail)  # type: ignore[attr-defined]
    b.start()
    try:
        assert one.apply_async(broker=b).get(timeout=10) == 1
        # A reader sees the success once applied; its worker counts it once durable.
        pool = b.pool
        assert pool is not None
        wait_for(lambda: sum(w.processed for w in pool.workers) == 1, 10, "the ack")
        fail.set()
        with pytest.raises(StoreFailed):
            one.apply_async(broker=b)
        summary = b.wait_until_stopped(10)  # the next claim or maintenance round sees it
        assert summary is not None, "the broker kept running on a failed store"
        assert summary.failure is not None and "injected fsync failure" in summary.failure
        assert summary.processed == 1
        assert isinstance(b.failure, StoreFailed)
    finally:
        b.stop()
