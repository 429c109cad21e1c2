"""Huey: ``huey_consumer bench.peers.huey_app.huey -w N -k thread`` (RedisHuey, blocking)."""

from __future__ import annotations

from huey import RedisHuey

from bench.peers import _probe

_probe.install()

huey = RedisHuey("bench", url=_probe.url(), results=False)


@huey.task()
def noop(i: int) -> None:
    _probe.record(i)
