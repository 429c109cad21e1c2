"""A claimed task whose lease may have run out is renewed before it starts, or skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtq_core import Broker, BrokerConfig
from dtq_core.backends.base import NewTask
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from dtq_core.workers.base import lease_ok

S = TaskState


@pytest.fixture
def broker() -> Iterator[Broker]:
    clock = FakeClock(1000.0)
    b = Broker(
        BrokerConfig(backend="memory://", num_workers=0, registry=Registry(), clock=clock),
        lease_s=10.0,
    )
    b.open()
    yield b
    b.stop()


def _claim(b: Broker, n: int = 1) -> list:
    now = b.clock.now()
    for i in range(n):
        b.backend.enqueue(NewTask(f"t{i}", "x", "default", 0, b"{}", None, 0, None), now)
    return b.backend.claim(None, "w", b.config.lease_s, n, now)


def test_a_fresh_claim_starts_without_a_round_trip(broker: Broker) -> None:
    (d,) = _claim(broker)
    broker.clock.advance(4.9)  # under half the lease
    assert lease_ok(broker, d)
    rec = broker.backend.get(d.task_id)
    assert rec is not None and rec.lease_deadline == pytest.approx(1010.0)  # not renewed


def test_a_task_that_waited_has_its_lease_renewed(broker: Broker) -> None:
    (d,) = _claim(broker)
    broker.clock.advance(11.0)  # past its lease, but nobody reclaimed it yet
    assert lease_ok(broker, d)
    rec = broker.backend.get(d.task_id)
    assert rec is not None and rec.lease_deadline == pytest.approx(1021.0)
    # Renewed: the reclaim sweep leaves it alone.
    assert broker.backend.reclaim_expired(broker.clock.now(), 5) == []


def test_a_task_the_store_took_back_is_not_started(broker: Broker) -> None:
    (d,) = _claim(broker)
    broker.clock.advance(11.0)
    (tr,) = broker.backend.reclaim_expired(broker.clock.now(), 5)
    assert tr.new is S.PENDING
    (again,) = broker.backend.claim(None, "other", 10.0, 1, broker.clock.now())
    assert again.token != d.token
    assert not lease_ok(broker, d)
    # Untouched: still leased to the other worker under its token.
    rec = broker.backend.get(d.task_id)
    assert rec is not None and rec.state is S.RUNNING and rec.lease_token == again.token


def test_a_delivery_leased_before_its_claim_counts_from_then(broker: Broker) -> None:
    (d,) = _claim(broker)
    broker.clock.advance(1.0)
    handed = d._replace(started_at=broker.clock.now(), leased_at=d.started_at - 9.0)
    broker.clock.advance(1.0)
    broker.backend.reclaim_expired(broker.clock.now() + 100, 5)  # the store took it back
    assert not lease_ok(broker, handed)


def test_a_heartbeat_after_a_stalled_round_renews_from_the_current_time(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A maintenance round takes its time once; when the store stalled its earlier calls
    # (promotion, reclaim), the heartbeat comes seconds later. Renewing from the round's
    # time would end the leases sooner than the workers believe.
    (d,) = _claim(broker)
    round_started = broker.clock.now()
    broker.clock.advance(3.0)  # the stall
    assert lease_ok(broker, d)  # renewed from now: until 1013
    pool = type("Pool", (), {"workers": [], "in_flight": lambda self: [(d.task_id, d.token)]})
    monkeypatch.setattr(broker, "pool", pool())
    broker.clock.advance(1.0)
    broker.heartbeat(round_started)
    rec = broker.backend.get(d.task_id)
    assert rec is not None and rec.lease_deadline == pytest.approx(1014.0)
