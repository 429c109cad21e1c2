"""Dramatiq: ``dramatiq bench.peers.dramatiq_app -p 1 -t N`` (Redis broker, no results)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import _probe

_probe.install()

broker = RedisBroker(url=_probe.url())
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(i: int) -> None:
    _probe.record(i)
