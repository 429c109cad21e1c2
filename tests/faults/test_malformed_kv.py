"""Malformed state of the hooks (a breaker's document) never wedges the tasks behind it."""

from __future__ import annotations

import pytest

from dtq_core import task
from dtq_core.registry import Registry
from dtq_core.reliability.circuit import PREFIX
from tests.conftest import BrokerFactory


@pytest.mark.parametrize(
    "raw", ["not json", "[1, 2]", '{"state": "melted"}', '{"state": "open", "fails": "x"}']
)
def test_a_malformed_breaker_document_reads_as_a_fresh_breaker(
    make_broker: BrokerFactory, registry: Registry, raw: str
) -> None:
    @task(name="kv.pay", breaker="payments", registry=registry)
    def pay() -> int:
        return 7

    b = make_broker()
    b.open()
    b.backend.set_key(PREFIX + "payments", raw, None, b.clock.now())
    res = pay.apply_async(broker=b)
    assert b.work() == 1
    assert res.get(timeout=5) == 7
    (snap,) = b.control.snapshot().breakers
    assert snap.key == "payments" and snap.state == "closed"
