"""arq: ``arq bench.peers.arq_app.WorkerSettings`` (defaults but ``max_jobs`` = N)."""

from __future__ import annotations

from typing import Any

from arq.connections import RedisSettings

from bench.peers import _probe

_probe.install()


async def noop(ctx: dict[str, Any], i: int) -> None:
    _probe.record(i)


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(_probe.url())
    max_jobs = _probe.concurrency()
    keep_result = 0
