"""The app module of the ``dtq worker`` subprocesses of the Redis tests.

Every task records each execution (JSON, RPUSH) into a Redis list of its own (on the
test's in-memory server, never the backend under test), so the test counts executions
and duplicates, and sees which process ran what and when. Settings come from the
environment:

- ``DTQ_TEST_REC_URL``: the Redis server the records go to (``redis://host:port/0``).
- ``DTQ_TEST_REC_KEY``: the list key of the records.
- ``DTQ_TEST_CONFIG``: JSON object of :class:`~dtq_core.config.BrokerConfig` fields
  (``lease_s``, ``heartbeat_s``, ``max_deliveries``, ``prefetch``, ``rate_limits``...).

``dtq worker`` builds its ``BrokerConfig`` from its options only (concurrency, pool,
queues, backend, drain timeout); it has no option for leases, heartbeats, delivery limits
or prefetch. So this module wraps ``dtq_core.BrokerConfig`` (which the command looks up
after importing the app module) to apply ``DTQ_TEST_CONFIG`` under the command's own
options. Nothing is patched when the variable is absent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import redis

import dtq_core
from dtq_core import Retry, task
from dtq_core.config import BrokerConfig

OVERRIDES: dict[str, Any] = json.loads(os.environ.get("DTQ_TEST_CONFIG") or "{}")

if OVERRIDES:

    def _config(**options: Any) -> BrokerConfig:
        return BrokerConfig(**{**OVERRIDES, **options})

    dtq_core.BrokerConfig = _config  # type: ignore[misc,assignment]

_client: redis.Redis | None = None
_lock = threading.Lock()


def _rec() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["DTQ_TEST_REC_URL"])
        return _client


def record(kind: str, i: Any, **extra: Any) -> None:
    """Append one execution record (``kind``, task argument ``i``, pid, wall time)."""
    row = {"kind": kind, "i": i, "pid": os.getpid(), "t": time.time(), **extra}
    _rec().rpush(os.environ["DTQ_TEST_REC_KEY"], json.dumps(row))


@task(name="rt.rec")
def rec(i: int, sleep: float = 0.0) -> int:
    """Record, sleep ``sleep`` seconds, return ``i``."""
    record("start", i)
    if sleep:
        time.sleep(sleep)
    return i


@task(name="rt.poison")
def poison(i: int) -> None:
    """Record, then kill this whole worker process (every thread of it)."""
    record("start", i)
    os._exit(17)


@task(name="rt.flaky")
def flaky(i: int, countdown: float) -> int:
    """Fail the first attempt with a retry ``countdown`` seconds later; succeed after."""
    n = int(_rec().incr(os.environ["DTQ_TEST_REC_KEY"] + f":flaky:{i}"))
    record("start", i, attempt=n)
    if n == 1:
        raise Retry(countdown=countdown, reason="first attempt fails")
    return n
