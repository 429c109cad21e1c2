"""A failed embedded store in one process: health says so, the broker stops by itself."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from dtq_core import Broker, BrokerConfig
from dtq_core.backends.embedded import write_path
from dtq_core.errors import StoreFailed
from tests.backends.redis.cluster import wait_for
from tests.workers import pool_tasks as pt


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set it, and every write of an embedded log fails with ENOSPC."""
    full = threading.Event()
    real = write_path.write_all

    def write_all(fd: int, data: bytes | bytearray) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(write_path, "write_all", write_all)
    return full


def test_health_names_the_failed_store(tmp_path: Path, disk_full: threading.Event) -> None:
    b = Broker(BrokerConfig(backend=f"embedded://{tmp_path / 'd'}", num_workers=0, own=True))
    b.open()
    b.backend.register_names(["x"])
    try:
        b.send("x")
        disk_full.set()
        with pytest.raises(StoreFailed, match="No space left on device"):
            b.send("x")
        health = b.control.snapshot().health
        assert health.status == "down"
        assert health.reasons == ("store failed (OSError: No space left on device)",)
        assert b.control.health() == health  # what `dtq health` prints: "down: store failed (…)"
    finally:
        b.stop()


@pytest.mark.parametrize("pool", ["thread", "process", "async"])
def test_a_broker_with_workers_stops_itself_on_a_failed_store(
    tmp_path: Path, pool: str, disk_full: threading.Event
) -> None:
    cfg = BrokerConfig(
        backend=f"embedded://{tmp_path / 'd'}", num_workers=2, pool=pool, registry=pt.registry
    )
    b = Broker(cfg)
    b.start()
    try:
        assert pt.job.apply_async((1,), broker=b).get(timeout=10) == 1
        # A reader sees the success once applied; its worker counts it once durable.
        pool_ = b.pool
        assert pool_ is not None
        wait_for(lambda: sum(w.processed for w in pool_.workers) == 1, 10, "the ack")
        disk_full.set()
        with pytest.raises(StoreFailed):
            pt.job.apply_async((2,), broker=b)
        summary = b.wait_until_stopped(10)  # the next claim or maintenance round sees it
        assert summary is not None, "the broker kept running on a failed store"
        assert summary.failure is not None and "No space left on device" in summary.failure
        assert summary.processed == 1
        assert isinstance(b.failure, StoreFailed)
    finally:
        b.stop()
