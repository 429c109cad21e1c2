"""DTQ on a real Redis Cluster of 3 masters (``redis+cluster://``, one seed node).

The contract suite runs on the same cluster (``tests/backends/conftest.py``); these tests
cover what only a cluster shows: queues on different masters, task ids across nodes,
waits on queues of several nodes, worker processes killed, the URL and its errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dtq_core import ConfigError
from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.errors import BackendUnavailable, DTQError
from dtq_core.task import TaskState
from tests.backends.redis.cluster import wait_for
from tests.backends.redis.conftest import ClusterFactory
from tests.backends.redis.rcluster import RedisCluster
from tests.backends.redis.server import free_port

pytestmark = pytest.mark.redis

S = TaskState


@pytest.fixture
def cbe(redis_cluster: RedisCluster, prefix: str) -> Iterator[RedisBackend]:
    be = make_backend(redis_cluster.url(prefix))
    assert isinstance(be, RedisBackend)
    be.open()
    yield be
    be.close()


def queues_on_masters(be: RedisBackend, n: int = 3) -> list[str]:
    """One queue name per master (the first names whose hash tag lands on each)."""
    by_node: dict[str, str] = {}
    i = 0
    while len(by_node) < n:
        q = f"q{i}"
        by_node.setdefault(be.r.get_node_from_key(be.keys.tag(q)).name, q)
        i += 1
    return list(by_node.values())


def test_queues_spread_over_the_masters(cbe: RedisBackend) -> None:
    names = [f"queue-{i}" for i in range(30)]
    nodes = {cbe.r.get_node_from_key(cbe.keys.tag(q)).name for q in names}
    assert len(nodes) == 3
    assert cbe.info()["cluster_masters"] == 3


def test_same_id_in_a_queue_on_another_node_is_refused(cbe: RedisBackend) -> None:
    a, b, c = queues_on_masters(cbe)
    now = time.time()
    cbe.enqueue(NewTask("same-id", "app.x", a, 0, b"first"), now)
    with pytest.raises(DTQError, match="exists in queue"):
        cbe.enqueue(NewTask("same-id", "app.x", b, 0, b"second"), now)
    # A batch holding one such id is refused whole, and frees the ids it claimed.
    with pytest.raises(DTQError, match="exists in queue"):
        cbe.enqueue_many(
            [NewTask("fresh", "app.x", c, 0, b"x"), NewTask("same-id", "app.x", c, 0, b"y")],
            now,
        )
    assert cbe.get("fresh") is None
    cbe.enqueue(NewTask("fresh", "app.x", b, 0, b"z"), now)
    rec = cbe.get("same-id")
    assert rec is not None
    assert (rec.queue, rec.payload) == (a, b"first")
    assert {q.name: q.ready for q in cbe.queue_stats()} == {a: 1, b: 1}
    # Same queue: the queue's own script refuses it.
    with pytest.raises(DTQError):
        cbe.enqueue(NewTask("same-id", "app.x", a, 0, b"again"), now)


def test_an_id_is_free_again_once_its_record_is_gone(cbe: RedisBackend) -> None:
    a, b, _ = queues_on_masters(cbe)
    now = time.time()
    cbe.enqueue(NewTask("reused", "app.x", a, 0, b"1"), now)
    [d] = cbe.claim([a], "w", 30, 1, now)
    cbe.ack_many([(d.task_id, d.token, 1)], now)
    later = now + cbe.result_ttl + 1
    with pytest.raises(DTQError, match="exists in queue"):
        cbe.enqueue(NewTask("reused", "app.x", b, 0, b"2"), now)
    assert cbe.expire(later) == 1  # the record expires, its owner key goes with it
    assert cbe.get("reused") is None
    cbe.enqueue(NewTask("reused", "app.x", b, 0, b"2"), later)
    rec = cbe.get("reused")
    assert rec is not None and rec.queue == b


def test_a_stale_claim_is_taken_over(cbe: RedisBackend) -> None:
    """An owner key whose queue never wrote the record (its producer died) is stale."""
    a, b, _ = queues_on_masters(cbe)
    now = time.time()
    cbe.r.set(cbe.keys.owner("orphan"), f"{now - 3600!r}|{a}")
    cbe.enqueue(NewTask("orphan", "app.x", b, 0, b"x"), now)
    assert cbe._q("orphan") == b
    # A fresh claim (a producer's script may be on its way) is honoured.
    cbe.r.set(cbe.keys.owner("busy"), f"{now!r}|{a}")
    with pytest.raises(DTQError, match="exists in queue"):
        cbe.enqueue(NewTask("busy", "app.x", b, 0, b"x"), now)


def test_a_wait_on_queues_of_every_node_wakes_on_an_enqueue(cbe: RedisBackend) -> None:
    names = queues_on_masters(cbe)
    now = time.time()
    for q in names:  # the queues exist (a producer used them)
        cbe.enqueue(NewTask(f"seed-{q}", "app.x", q, 0, b""), now)
        [d] = cbe.claim([q], "seed", 30, 1, now)
        cbe.ack_many([(d.task_id, d.token, None)], now)
    got: list[Any] = []

    def waiter() -> None:
        t0 = time.monotonic()
        got.append(cbe.claim(names, "waiter", 30, 4, time.time(), wait=8.0))
        got.append(time.monotonic() - t0)

    th = threading.Thread(target=waiter)
    th.start()
    idle = [cbe.keys.queue(q)["idle"] for q in names]
    wait_for(lambda: all(cbe.r.zcard(k) for k in idle), 5, "the waiter to register")
    t_enq = time.monotonic()
    cbe.enqueue(NewTask("wake", "app.x", names[-1], 0, b"payload"), time.time())
    th.join(10)
    assert not th.is_alive()
    deliveries, elapsed = got
    assert [d.task_id for d in deliveries] == ["wake"]
    assert deliveries[0].payload == b"payload"
    assert time.monotonic() - t_enq < 2.0, elapsed  # woken, not at the 8 s timeout
    # Every registration ended with the wait, on every node.
    assert [cbe.r.zcard(k) for k in idle] == [0, 0, 0]
    assert cbe.get_state("wake") is S.RUNNING


def test_find_ids_and_listings_fan_out_over_the_nodes(cbe: RedisBackend) -> None:
    names = queues_on_masters(cbe)
    now = time.time()
    for i, q in enumerate(names):
        cbe.enqueue(NewTask(f"abc-{i}", "app.x", q, 0, b""), now)
    cbe.enqueue(NewTask("abd-0", "app.x", names[0], 0, b""), now)
    assert cbe.find_ids("abc-") == ["abc-0", "abc-1", "abc-2"]
    assert cbe.find_ids("abd-0") == ["abd-0"]
    assert cbe.find_ids("zzz") == []
    from dtq_core.filters import parse_filter

    listed = cbe.list_tasks(parse_filter(""), now, limit=10)
    assert {r.id for r in listed} == {"abc-0", "abc-1", "abc-2", "abd-0"}
    assert cbe.count_by_state()[S.PENDING] == 4


def test_bad_cluster_urls_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        make_backend("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ConfigError, match="unknown option"):
        make_backend("redis+cluster://127.0.0.1:7000?nope=1")
    with pytest.raises(ConfigError, match="wait_replicas"):
        make_backend("redis+cluster://127.0.0.1:7000?wait_replicas=x")


def test_an_unreachable_cluster_fails_in_bounded_time() -> None:
    be = make_backend(f"redis+cluster://127.0.0.1:{free_port()}?retry_s=0.5")
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        be.enqueue(NewTask("x", "app.x", "q", 0, b""), time.time())
    assert time.monotonic() - t0 < 5.0


@pytest.mark.soak  # faults/test_redis_faults.py kills a worker on the cluster in every run
def test_sigkilled_workers_on_the_cluster_lose_nothing(
    make_cluster: ClusterFactory, redis_cluster: RedisCluster
) -> None:
    n = 120
    c = make_cluster(server=redis_cluster)
    p = c.producer()
    names = queues_on_masters(c.backend)
    ids = [
        p.send("rt.rec", [i], {"sleep": 0.02}, task_id=f"k{i:04d}", queue=names[i % 3]).id
        for i in range(n)
    ]
    workers = [c.spawn(2, queues=",".join(names)) for _ in range(3)]
    c.wait_ready(*workers)
    wait_for(lambda: len(c.records()) >= n // 4, 30, "a quarter of the tasks to start")
    workers[0].kill()
    wait_for(lambda: len(c.records()) >= n // 2, 30, "half of the tasks to start")
    workers[1].kill()
    for i, tid in enumerate(ids):
        rec = p.wait(tid, timeout=30)
        assert rec.state is S.SUCCESS, rec
        assert rec.result == i
    counts = c.executions()
    assert set(counts) == set(range(n))
    # Only what the killed workers held ran twice: at most 2 threads + 2 acks pending each.
    assert sum(k - 1 for k in counts.values()) <= 8
    assert workers[2].alive()


def test_retries_and_delays_through_a_worker_on_the_cluster(
    make_cluster: ClusterFactory, redis_cluster: RedisCluster
) -> None:
    c = make_cluster(server=redis_cluster)
    p = c.producer()
    names = queues_on_masters(c.backend)
    flaky = [p.send("rt.flaky", [i, 0.3], queue=names[i % 3]).id for i in range(3)]
    later = p.send("rt.rec", [99], queue=names[1], countdown=0.5).id
    w = c.spawn(2, queues=",".join(names))
    for tid in flaky:
        rec = p.wait(tid, timeout=20)
        assert rec.state is S.SUCCESS and rec.result == 2, rec
    rec = p.wait(later, timeout=20)
    assert rec.state is S.SUCCESS
    assert rec.started_at is not None and rec.started_at >= rec.enqueued_at + 0.5
    assert w.alive()


def test_dtq_stats_and_an_unreachable_cluster_from_the_command_line(
    cbe: RedisBackend, redis_cluster: RedisCluster, prefix: str
) -> None:
    import json
    import subprocess

    from tests.backends.redis.cluster import REPO, dtq_command

    names = queues_on_masters(cbe)
    for i, q in enumerate(names):
        cbe.enqueue(NewTask(f"cli-{i}", "app.x", q, 0, b""), time.time())
    out = subprocess.run(
        [*dtq_command(), "--backend", redis_cluster.url(prefix), "stats", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = json.dumps(json.loads(out.stdout))
    assert all(q in text for q in names)
    down = f"redis+cluster://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    out = subprocess.run(
        [*dtq_command(), "--backend", down, "stats"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert "unreachable" in out.stderr
    assert time.monotonic() - t0 < 15


def test_wait_replicas_waits_for_a_replica_and_says_when_none_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One Redis and its replica: enqueues and acks WAIT for it; without it they refuse."""
    import redis

    from dtq_core.backends.redis import client
    from tests.backends.redis.server import RedisServer, unique_prefix

    master = RedisServer()
    master_args = master.args
    # The replica syncs at once (the default waits 5 s for more replicas to share a sync).
    master.args = lambda: [*master_args(), "--repl-diskless-sync-delay", "0"]  # type: ignore[method-assign]
    master.start()
    replica = RedisServer()
    replica_args = replica.args
    replica.args = lambda: [*replica_args(), "--replicaof", "127.0.0.1", str(master.port)]  # type: ignore[method-assign]
    replica.start()
    try:
        m = redis.Redis(port=master.port)
        wait_for(lambda: m.info("replication").get("connected_slaves") == 1, 10, "the replica")
        url = master.url(unique_prefix("wait")) + "&wait_replicas=1"
        be = make_backend(url)
        assert isinstance(be, RedisBackend)

        def waits() -> int:
            return int(m.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

        be._load_scripts()  # (no NOSCRIPT retry muddles the count)
        now = time.time()
        be.enqueue(NewTask("w1", "app.x", "q", 0, b""), now)
        assert waits() == 1
        [d] = be.claim(["q"], "w", 30, 1, now)
        assert be.ack_many([(d.task_id, d.token, 1)], now)[0]
        assert waits() == 2
        r = redis.Redis(port=replica.port)
        assert r.hget(be.keys.record("q", "w1"), "state") == b"SUCCESS"  # on the replica
        # No replica: the write is refused with the reason, within the WAIT's bound.
        replica.stop()
        wait_for(lambda: m.info("replication").get("connected_slaves") == 0, 10, "no replica")
        monkeypatch.setattr(client, "WAIT_MS", 200)
        with pytest.raises(DTQError, match="0 of 1 replica"):
            be.enqueue(NewTask("w2", "app.x", "q", 0, b""), now)
        be.close()
        m.close()
        r.close()
    finally:
        replica.cleanup()
        master.cleanup()


def test_a_cluster_with_a_password_from_the_environment_never_shows_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-cluster-pw"
    rc = RedisCluster(masters=3, password=secret).start()
    try:
        monkeypatch.setenv("DTQ_REDIS_PASSWORD", secret)
        be = make_backend(f"redis+cluster://127.0.0.1:{rc.port}?prefix=pw")
        assert isinstance(be, RedisBackend)
        names = queues_on_masters(be)
        now = time.time()
        for i, q in enumerate(names):
            be.enqueue(NewTask(f"pw-{i}", "app.x", q, 0, b""), now)
        assert {q.name for q in be.queue_stats()} == set(names)
        be.close()
        shown = make_backend(rc.url("pw"))
        assert isinstance(shown, RedisBackend)
        assert secret not in shown.safe_url and "***" in shown.safe_url
        monkeypatch.delenv("DTQ_REDIS_PASSWORD")
        wrong = make_backend(f"redis+cluster://:nope@127.0.0.1:{rc.port}?prefix=pw&retry_s=0.5")
        with pytest.raises(BackendUnavailable, match="refused the credentials") as err:
            wrong.enqueue(NewTask("x", "app.x", "q", 0, b""), now)
        assert "nope" not in str(err.value) and secret not in str(err.value)
        assert secret not in caplog.text
    finally:
        rc.cleanup()


def test_a_workflow_over_queues_of_every_node_with_dedup_and_a_rate_limit(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """The broker's hooks on a cluster: DAG release, dedup and a rate limit."""
    from dtq_core import Broker, BrokerConfig, task
    from dtq_core.client import Task
    from dtq_core.registry import Registry
    from dtq_core.scheduling.dag import Workflow, get_workflow, run_workflow

    reg = Registry()
    Task(lambda: None, "cluster_sentinel", {}, reg)  # (an empty registry is falsy)
    broker = Broker(BrokerConfig(backend=redis_cluster.url(prefix), num_workers=0, registry=reg))
    broker.open()
    try:
        a, b, c = queues_on_masters(broker.backend)  # type: ignore[arg-type]

        @task(name="c.const", registry=reg, queue=a)
        def const(value: int) -> int:
            return value

        @task(name="c.add", registry=reg, queue=b, rate_limit="1000/s")
        def add(upstream: dict[str, int]) -> int:
            return sum(upstream.values())

        @task(name="c.once", registry=reg, queue=c)
        def once(x: int) -> int:
            return x

        wf = Workflow("spread")
        top = wf.node("top", const, args=[1])
        left = wf.node("left", "c.const", args=[10], after=top)
        wf.node("bottom", "c.add", after=[top, left], pass_results=True)
        run_id = run_workflow(broker, wf)
        first = once.apply_async((5,), dedup_key="k1", broker=broker)
        again = once.apply_async((5,), dedup_key="k1", broker=broker)
        assert again.id == first.id

        def finished() -> Any:
            # work() returns when nothing is ready in the queues it knows; the queue of
            # a node released later is known within a second (the queue list's cache).
            broker.work()
            snap = get_workflow(broker, run_id)
            return snap if snap is not None and snap.state != "running" else None

        snap = wait_for(finished, 15, "the workflow to finish", step=0.1)
        assert snap.state == "success", snap
        bottom = next(n for n in snap.nodes if n.id == "bottom")
        assert bottom.task_id is not None
        assert broker.result(bottom.task_id).get(timeout=5) == 11
        assert first.get(timeout=5) == 5
    finally:
        broker.stop(drain_timeout=0)
