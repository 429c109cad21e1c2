"""A worker loop that dies of an unexpected error is logged, counted and replaced."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dtq_core.monitoring.health import assess
from tests.conftest import BrokerFactory
from tests.workers import pool_tasks as pt

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("pool", ["thread", "process", "async"])
def test_a_dead_worker_loop_is_replaced_and_counted(
    make_broker: BrokerFactory, pool: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = make_broker(num_workers=1, pool=pool, registry=pt.registry)
    real = b.backend.claim
    calls = {"n": 0}

    def claim(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            # What a malformed record did to the claim before the scripts checked it.
            raise TypeError("cannot convert 'NoneType' object to bytes")
        return real(*args, **kwargs)

    b.backend.claim = claim  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="dtq.worker"):
        b.start()
        assert pt.add.apply_async((2, 3), broker=b).get(timeout=10)[0] == 5
    assert b.pool is not None
    assert sum(w.restarts for w in b.pool.workers) == 1
    assert "died of an unexpected error and was replaced" in caplog.text
    assert "TypeError" in caplog.text
    snap = b.control.snapshot()
    assert sum(w.restarts for w in snap.workers) == 1
    health = assess(snap)
    assert any("restarted 1 time" in r for r in health.reasons), health


def test_the_maintenance_round_sweeps_for_orphans_rarely(make_broker: BrokerFactory) -> None:
    from dtq_core.clock import FakeClock
    from dtq_core.maintenance import FIRST_SWEEP_S, SWEEP_EVERY_S

    clock = FakeClock(1000.0)
    b = make_broker(clock=clock)
    sweeps: list[float] = []
    b.backend.sweep_orphans = lambda now: sweeps.append(now) or []  # type: ignore[method-assign]
    b.tick()
    clock.advance(FIRST_SWEEP_S - 1)
    b.tick()
    assert sweeps == []
    clock.advance(1)
    b.tick()
    b.tick()
    assert sweeps == [1000.0 + FIRST_SWEEP_S]
    clock.advance(SWEEP_EVERY_S)
    b.tick()
    assert len(sweeps) == 2
