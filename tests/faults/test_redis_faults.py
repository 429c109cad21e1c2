"""Faults injected into a running Redis system: kills, a restart, stalls.

Every test runs real ``dtq worker`` processes on a redis-server with AOF
``appendfsync always`` and asserts the guarantees on the verdict of its run.
"""

from __future__ import annotations

import pytest

from tests.backends.redis.server import RedisServer
from tests.faults import scenarios
from tests.faults.conftest import SystemFactory

pytestmark = pytest.mark.redis


def test_sigkill_of_a_worker(make_system: SystemFactory, redis_url: str) -> None:
    v = scenarios.worker_sigkill(make_system(redis_url), 120)
    v.check()


def test_sigkill_of_a_producer(make_system: SystemFactory, redis_url: str) -> None:
    v = scenarios.producer_sigkill(make_system(redis_url), 150)
    v.check(duplicates=False)


def test_redis_restart_with_aof(
    make_system: SystemFactory, redis_url: str, aof_server: RedisServer
) -> None:
    v = scenarios.redis_restart(make_system(redis_url), aof_server, 150)
    v.check()


def test_stall_shorter_than_the_lease_runs_nothing_twice(
    make_system: SystemFactory, redis_url: str, aof_server: RedisServer
) -> None:
    s = make_system(redis_url, {"lease_s": 4.0, "heartbeat_s": 0.5})
    v = scenarios.redis_stall(s, aof_server, 300, "pause", 1.0)
    v.check(duplicates=False)


@pytest.mark.parametrize("how", ["pause", "sleep"])
def test_stall_longer_than_the_lease(
    make_system: SystemFactory, redis_url: str, aof_server: RedisServer, how: str
) -> None:
    s = make_system(redis_url, {"lease_s": 1.5, "heartbeat_s": 0.3})
    v = scenarios.redis_stall(s, aof_server, 300, how, 3.0)
    v.check()
