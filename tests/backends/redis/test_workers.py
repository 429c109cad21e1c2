"""Several ``dtq worker`` processes on one Redis and on a Redis Cluster: crashes, long
tasks, poison tasks.

Every worker is a real ``dtq worker`` subprocess running ``app_module`` with 2 s leases
renewed every 0.5 s; the reclaim sweep of each worker runs every ``min(1, lease/4)``
= 0.5 s. Tasks record each execution, so duplicates are counted, not guessed.
"""

from __future__ import annotations

import time

import pytest

from dtq_core.filters import parse_filter
from dtq_core.task import TaskState
from tests.backends.redis.cluster import Cluster, wait_for
from tests.backends.redis.conftest import FAST, ClusterFactory

pytestmark = pytest.mark.redis


# On the cluster under -m soak: the fault suite's kills run there in the normal suite
# (tests/faults/test_redis_faults.py), and the whole suite must stay under 5 minutes.
@pytest.fixture(params=["redis", pytest.param("redis-cluster", marks=pytest.mark.soak)])
def make_cluster(request: pytest.FixtureRequest, make_cluster: ClusterFactory) -> ClusterFactory:
    """The worker-fault suite on one Redis and on the session's Redis Cluster."""
    if request.param == "redis":
        return make_cluster
    rc = request.getfixturevalue("redis_cluster")

    def on_cluster(**kw: object) -> Cluster:
        kw.setdefault("server", rc)
        return make_cluster(**kw)

    return on_cluster


S = TaskState
LEASE = FAST["lease_s"]
SWEEP = min(1.0, LEASE / 4)
HEARTBEAT = FAST["heartbeat_s"]
#: Scheduling slack of a loaded CI machine on top of the lease arithmetic.
SLACK = 0.75


def send_many(c: Cluster, n: int, sleep: float = 0.0, queue: str | None = None) -> list[str]:
    p = c.producer() if not c.producers else c.producers[0]
    return [
        p.send("rt.rec", [i], {"sleep": sleep}, task_id=f"k{i:04d}", queue=queue).id
        for i in range(n)
    ]


def test_sigkill_mid_run_every_task_completes_duplicates_bounded(
    make_cluster: ClusterFactory,
) -> None:
    n, conc = 150, 2
    c = make_cluster()
    ids = send_many(c, n, sleep=0.03)
    workers = [c.spawn(conc) for _ in range(3)]
    victim = workers[0]
    c.wait_ready(*workers)

    # Kill the victim while it is running tasks.
    def victim_busy() -> bool:
        mine = [r for r in c.records() if r["pid"] == victim.pid]
        return len(mine) >= 5 and len(c.records()) >= n // 4

    wait_for(victim_busy, 30, "the victim to run tasks")
    t_kill = victim.kill()
    running = c.backend.list_tasks(parse_filter("state:running"), time.time(), limit=1000)
    held = {r.id for r in running if victim.owns(r.worker)}
    # At most one running task per thread (30 ms tasks: adaptive prefetch stays at 1),
    # plus, per thread, one finished task whose ack was still waiting (ack_delay_s).
    assert len(held) <= 2 * conc

    # Every task ends SUCCESS with its result.
    p = c.producers[0]
    for i, tid in enumerate(ids):
        rec = p.wait(tid, timeout=30)
        assert rec.state is S.SUCCESS, rec
        assert rec.result == i

    # Duplicates: only tasks the victim held, at most once more each.
    counts = c.executions()
    assert set(counts) == set(range(n))
    dups = {f"k{i:04d}": k - 1 for i, k in counts.items() if k > 1}
    assert set(dups) <= held, (dups, held)
    assert sum(dups.values()) <= len(held)

    # The victim's tasks were requeued once their lease ran out, within lease + sweep.
    for tid in held:
        rec = c.backend.get(tid)
        assert rec is not None
        lost = [a for a in rec.history if a.outcome == "LOST"]
        assert len(lost) == 1, rec.history
        assert lost[0].worker is not None and victim.owns(lost[0].worker)
        assert lost[0].finished_at is not None
        delay = lost[0].finished_at - t_kill
        assert LEASE - HEARTBEAT - SLACK <= delay <= LEASE + SWEEP + SLACK, delay
        assert rec.deliveries == 2
    # Nothing else was ever redelivered.
    others = c.backend.list_tasks(parse_filter("state:success"), time.time(), limit=1000)
    assert sum(1 for r in others if r.deliveries > 1) == len(held)
    for w in workers[1:]:
        assert w.alive()


def test_healthy_worker_keeps_a_task_longer_than_its_lease(make_cluster: ClusterFactory) -> None:
    c = make_cluster()
    runner, idle = c.spawn(1, queues="long"), c.spawn(1, queues="long")
    c.wait_ready(runner, idle)
    (tid,) = send_many(c, 1, sleep=2.5 * LEASE, queue="long")
    rec = c.producers[0].wait(tid, timeout=30)
    assert rec.state is S.SUCCESS
    assert c.executions() == {0: 1}
    assert (rec.attempt, rec.deliveries) == (1, 1)
    assert [a.outcome for a in rec.history if a.outcome == "LOST"] == []
    assert rec.finished_at is not None and rec.started_at is not None
    assert rec.finished_at - rec.started_at >= 2.5 * LEASE - 0.1


def test_prefetched_tasks_are_not_redelivered_while_their_worker_lives(
    make_cluster: ClusterFactory,
) -> None:
    c = make_cluster()
    p = c.producer()
    long = p.send("rt.rec", [0], {"sleep": 2 * LEASE}, queue="pf").id
    short = [p.send("rt.rec", [i], {"sleep": 0.1}, queue="pf").id for i in (1, 2)]
    greedy = c.spawn(1, queues="pf", config={"prefetch": 3})
    c.wait_ready(greedy)
    wait_for(lambda: c.executions().get(0), 20, "the long task to start")
    other = c.spawn(1, queues="pf")
    c.wait_ready(other)
    for tid in [long, *short]:
        assert p.wait(tid, timeout=30).state is S.SUCCESS
    time.sleep(0.5)  # the greedy worker runs its (by then stale) prefetched tasks
    assert c.executions() == {0: 1, 1: 1, 2: 1}


def test_poison_task_that_kills_its_worker_ends_in_the_dlq(make_cluster: ClusterFactory) -> None:
    maxd = int(FAST["max_deliveries"])
    c = make_cluster()
    p = c.producer()
    tid = p.send("rt.poison", [0], queue="poison").id
    ok = [p.send("rt.rec", [i], queue="poison").id for i in range(1, 4)]
    # A janitor serves another queue: its maintenance reclaims expired leases everywhere.
    janitor = c.spawn(1, queues="elsewhere")
    deaths = 0
    w = c.spawn(1, queues="poison")
    deadline = time.monotonic() + 40
    while p.backend.get_state(tid) is not S.DEAD:
        assert time.monotonic() < deadline, p.backend.get(tid)
        if not w.alive():
            assert w.proc.returncode == 17, w.stderr()
            deaths += 1
            w = c.spawn(1, queues="poison")  # restarted as it dies, like a supervisor
        time.sleep(0.05)
    rec = p.backend.get(tid)
    assert rec is not None
    assert rec.state is S.DEAD
    assert rec.dead_reason == "worker_lost"
    assert rec.deliveries == maxd
    assert c.executions()[0] == maxd
    assert rec.error is not None and rec.error.type == "WorkerLost"
    assert [d.id for d in p.backend.list_dead(parse_filter("reason:worker_lost"), time.time())] == [
        tid
    ]
    assert p.dlq.list("reason:worker_lost")[0].id == tid
    # The other tasks of the queue ran (the last restarted worker is healthy).
    for t in ok:
        assert p.wait(t, timeout=20).state is S.SUCCESS
    assert deaths in (maxd, maxd - 1)  # the last worker may still be dying when it is buried
    assert janitor.alive()
