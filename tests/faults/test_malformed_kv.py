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


@pytest.mark.parametrize("raw", ["not json", '{"rate": "fast", "burst": 1}', '{"rate": 5}'])
def test_a_malformed_rate_limit_override_is_ignored_and_the_others_load(
    make_broker: BrokerFactory, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    from dtq_core.scheduling.ratelimit import PREFIX as RL
    from dtq_core.scheduling.ratelimit import RateLimitHook

    b = make_broker()
    b.open()
    now = b.clock.now()
    b.backend.set_key(f"{RL}cfg:queue:bad", raw, None, now)
    b.backend.set_key(f"{RL}cfg:queue:good", '{"rate": 5.0, "burst": 2}', None, now)
    hook = b.hook(RateLimitHook)
    assert hook is not None
    hook.tick(b, now + 10)
    hook.tick(b, now + 20)  # warned once, not every round
    limits = {(lim.scope, lim.key) for lim in b.control.snapshot().limits}
    assert ("queue", "good") in limits and ("queue", "bad") not in limits
    assert caplog.text.count("rate limit dtq:rl:cfg:queue:bad ignored") == 1
