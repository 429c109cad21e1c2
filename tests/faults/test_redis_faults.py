"""Faults injected into a running Redis system: kills, a restart, stalls.

Every test runs real ``dtq worker`` processes on a redis-server with AOF
``appendfsync always`` and asserts the guarantees on the verdict of its run; the kills,
malformed records and a poison task also run on the session's Redis Cluster (a restart
and stalls of one server have their cluster counterparts in ``test_cluster_failover.py``).
"""

from __future__ import annotations

import time

import pytest

from tests.backends.redis.rcluster import RedisCluster
from tests.backends.redis.server import RedisServer, unique_prefix
from tests.faults import scenarios
from tests.faults.conftest import SystemFactory
from tests.faults.harness import until

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """A backend URL on the session's Redis Cluster under a prefix of this test only."""
    return redis_cluster.url(unique_prefix("cfault"))


def test_sigkill_of_a_worker_on_a_cluster(make_system: SystemFactory, cluster_url: str) -> None:
    v = scenarios.worker_sigkill(make_system(cluster_url), 120)
    v.check()


def test_sigkill_of_a_producer_on_a_cluster(make_system: SystemFactory, cluster_url: str) -> None:
    v = scenarios.producer_sigkill(make_system(cluster_url), 150)
    v.check(duplicates=False)


def test_malformed_records_on_a_cluster(make_system: SystemFactory, cluster_url: str) -> None:
    v = scenarios.malformed_redis(make_system(cluster_url), 80)
    v.check(duplicates=False, dead=len(scenarios.CORRUPTIONS))


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


def test_malformed_records_never_kill_a_worker(make_system: SystemFactory, redis_url: str) -> None:
    s = make_system(redis_url)
    v = scenarios.malformed_redis(s, 80)
    # Corrupted fields a claim needs dead-letter their task as "malformed record"; the
    # rest (an unreadable history, say) run; nothing is lost, every worker lives on.
    v.check(duplicates=False, dead=len(scenarios.CORRUPTIONS))
    # (A payload that is not a message is the runner's "undecodable message".)
    reasons = {reason for _, reason in v.dead}
    assert reasons <= {"malformed record", "undecodable message"}, v.dead
    assert len(v.dead) >= 10, v.dead
    # 2 threads + 2 async slots publish heartbeats, none restarted.
    be = s.client().backend
    live = until(lambda: len(be.workers(time.time())) == 4 and be.workers(time.time()), 10, "4")
    assert all(not w.get("restarts") for w in live), live


@pytest.mark.parametrize("pool", ["thread", "process", "async"])
def test_poison_task(make_system: SystemFactory, redis_url: str, pool: str) -> None:
    s = make_system(redis_url, {"lease_s": 1.0, "heartbeat_s": 0.25, "max_deliveries": 2})
    n = 4
    v = scenarios.poison(s, n, pool)
    v.check(dead=n + 1)
    be = s.client().backend
    poison_id = s.acked[n]
    dead = dict(v.dead)
    assert n in dead, v  # the poison is dead-lettered
    if pool == "process":
        # Only the child died: the task failed (WorkerCrashed), nothing else was lost.
        assert set(dead) == {n}, v
        rec = be.get(poison_id)
        assert rec is not None and rec.error is not None
        assert rec.error.type.endswith("WorkerCrashed"), rec.error
        return
    assert dead[n] == "worker_lost", v
    # Every innocent lost with it names the poison as running beside it.
    for i, reason in dead.items():
        if i == n:
            continue
        assert reason == "worker_lost", v
        rec = be.get(s.acked[i])
        assert rec is not None and rec.error is not None
        assert poison_id in {tid for tid, _ in rec.error.beside}, rec.error
