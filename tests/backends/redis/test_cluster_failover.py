"""Redis Cluster failover and resharding while ``dtq worker`` processes drain.

The failover test is a soak test (``-m soak``: six nodes, two failovers, ~20 s). Each
test starts a cluster of its own: 3 masters with one replica each (failover, with
``?wait_replicas=1``), or 3 masters (resharding). Producers run in this process, workers
are ``dtq worker`` subprocesses; every execution is recorded on the session's plain
Redis, so lost and repeated tasks are counted, not guessed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from dtq_core.task import TaskState
from tests.backends.redis.cluster import Cluster, wait_for
from tests.backends.redis.conftest import ClusterFactory
from tests.backends.redis.rcluster import ClusterNode, RedisCluster
from tests.backends.redis.test_cluster import queues_on_masters

pytestmark = pytest.mark.redis

S = TaskState
#: Workers and producers must carry on within this long after a failover.
CARRY_ON_S = 10.0


@pytest.fixture
def ha_cluster() -> Iterator[RedisCluster]:
    rc = RedisCluster(masters=3, replicas=1).start()
    rc.options = "&wait_replicas=1"
    yield rc
    rc.cleanup()


@pytest.fixture
def plain_cluster() -> Iterator[RedisCluster]:
    rc = RedisCluster(masters=3).start()
    yield rc
    rc.cleanup()


class Producer:
    """Enqueues ``rt.rec`` tasks round robin over ``queues`` in a thread until stopped."""

    def __init__(self, c: Cluster, queues: list[str], pace: float = 0.01) -> None:
        self.p = c.producer()
        self.queues = queues
        self.pace = pace
        self.acked: list[tuple[str, int, float]] = []  # (id, i, when the enqueue returned)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        i = 100_000  # apart from the arguments of tasks a test sends itself
        while not self._stop.is_set():
            try:
                q = self.queues[i % len(self.queues)]
                tid = self.p.send("rt.rec", [i], task_id=f"f{i:05d}", queue=q).id
                self.acked.append((tid, i, time.time()))
            except Exception as exc:  # counted: the test says none may happen
                self.errors.append(repr(exc))
            i += 1
            time.sleep(self.pace)

    def stop(self) -> None:
        self._stop.set()
        self._th.join(60)


def carried_on_after(c: Cluster, prod: Producer, t_event: float) -> float:
    """Seconds after ``t_event`` until a task enqueued after it started on a worker."""

    def started() -> Any:
        after = {i for _, i, t in prod.acked if t > t_event}
        hits = [r["t"] for r in c.records() if r["kind"] == "start" and r["i"] in after]
        return min(hits) if hits else None

    return float(wait_for(started, CARRY_ON_S + 5, "producers and workers to carry on")) - t_event


def drained(c: Cluster, prod: Producer, timeout: float = 60) -> None:
    """Every acknowledged enqueue ran to SUCCESS; nothing lost."""
    for tid, i, _ in prod.acked:
        rec = prod.p.wait(tid, timeout=timeout)
        assert rec.state is S.SUCCESS, rec
        assert rec.result == i


@pytest.mark.soak  # six redis-server processes and two failovers: about 20 s
def test_failover_by_command_and_by_sigkill_loses_no_acknowledged_enqueue(
    ha_cluster: RedisCluster, make_cluster: ClusterFactory
) -> None:
    c = make_cluster(server=ha_cluster)
    names = queues_on_masters(c.backend)
    workers = [c.spawn(2, queues=",".join(names)) for _ in range(2)]
    c.wait_ready(*workers)
    prod = Producer(c, names)
    try:
        wait_for(lambda: len(c.records()) >= 40, 30, "the first tasks to run")
        # Not the seed node: processes started later still reach the cluster through it.
        masters = [m for m in ha_cluster.masters() if m.port != ha_cluster.port]

        # 1. A replica promoted by CLUSTER FAILOVER (a planned switch, no write lost).
        replica = ha_cluster.replica_of(masters[0])
        t1 = time.time()
        replica.client().execute_command("CLUSTER FAILOVER")
        wait_for(lambda: replica in ha_cluster.masters(), 15, "the replica to take over")
        first = carried_on_after(c, prod, t1)

        # 2. A master SIGKILLed: its replica is promoted after the node timeout (2 s).
        # The promoted master has no replica left, so writes to its slots fail their
        # WAIT until the killed node is back (it rejoins as the new master's replica),
        # as an operator (or a supervisor) would restart it.
        victim: ClusterNode = masters[1]
        promoted = ha_cluster.replica_of(victim)
        t2 = time.time()
        victim.kill()
        wait_for(lambda: promoted in ha_cluster.masters(), 15, "the replica to be promoted")
        victim.start()
        ha_cluster.wait_synced()
        second = carried_on_after(c, prod, t2)
        before = len([a for a in prod.acked if a[2] < time.time()])
        wait_for(lambda: len(prod.acked) >= before + 30, 15, "more enqueues after the kill")
    finally:
        prod.stop()
    assert first <= CARRY_ON_S, first
    assert second <= CARRY_ON_S, second
    # The only refusals: writes to the shard that had no replica for a moment (nothing
    # acknowledged, so nothing to lose).
    assert all("replica(s) acknowledged" in e for e in prod.errors), prod.errors[:3]
    drained(c, prod)
    # With wait_replicas=1 every acknowledged enqueue and ack reached a replica; a task
    # runs twice only when its claim (not waited for) was lost with the killed master.
    counts = c.executions()
    assert sum(k - 1 for k in counts.values()) <= 8, {i: k for i, k in counts.items() if k > 1}
    assert all(w.alive() for w in workers)


def queues_in_low_slots(c: Cluster, below: int, n: int = 3) -> list[str]:
    """Queue names whose slot is under ``below`` (the first master's lowest slots)."""
    out, i = [], 0
    while len(out) < n:
        q = f"r{i}"
        if key_slot(c.backend.keys.tag(q).encode()) < below:
            out.append(q)
        i += 1
    return out


def test_resharding_while_workers_drain_loses_nothing(
    plain_cluster: RedisCluster, make_cluster: ClusterFactory
) -> None:
    c = make_cluster(server=plain_cluster)
    names = queues_in_low_slots(c, 1500)
    source = plain_cluster.node(
        next(t["port"] for t in plain_cluster.topology() if t["master"] and "0-" in t["slots"][0])
    )
    target = next(m for m in plain_cluster.masters() if m.port != source.port)
    assert {c.backend.r.get_node_from_key(c.backend.keys.tag(q)).port for q in names} == {
        source.port
    }
    p = c.producer()
    ids = [
        p.send("rt.rec", [i], {"sleep": 0.005}, task_id=f"m{i:05d}", queue=names[i % 3]).id
        for i in range(600)
    ]
    workers = [c.spawn(2, queues=",".join(names)) for _ in range(2)]
    c.wait_ready(*workers)
    prod = Producer(c, names, pace=0.02)
    try:
        wait_for(lambda: len(c.records()) >= 50, 30, "the first tasks to run")
        t_a = time.time()
        plain_cluster.reshard(source, target, 2000)
        t_b = time.time()
        wait_for(lambda: sum(a[2] > t_b for a in prod.acked) >= 30, 15, "enqueues after the move")
    finally:
        prod.stop()
    # The queues now live on the target, and every task ran once.
    c.backend.r.nodes_manager.initialize()
    assert {c.backend.r.get_node_from_key(c.backend.keys.tag(q)).port for q in names} == {
        target.port
    }
    for i, tid in enumerate(ids):
        rec = p.wait(tid, timeout=60)
        assert rec.state is S.SUCCESS and rec.result == i, rec
    drained(c, prod)
    assert not prod.errors, prod.errors[:3]
    counts = c.executions()
    assert sum(k - 1 for k in counts.values()) <= 4, {i: k for i, k in counts.items() if k > 1}
    # The move happened while tasks ran (the redirections were followed, not avoided).
    assert any(t_a <= r["t"] <= t_b for r in c.records()), (t_a, t_b)
