"""The fault scenarios: each drives a :class:`System`, injects one fault, returns a verdict.

Shared by the CI tests (small ``n``) and ``bench/faults.py`` (long runs). A scenario
never asserts the guarantees itself: the caller does, with :meth:`Verdict.check`.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from dtq_core.task import TaskState
from tests.backends.redis.cluster import Worker
from tests.backends.redis.server import RedisServer
from tests.faults.harness import System, Verdict, until

S = TaskState

#: Seconds a CI run waits for every acknowledged task to end.
SETTLE_S = 60.0
#: Seconds a worker on a failed store is given to exit before it is killed.
FAILSTOP_WAIT_S = 15.0


def _started(s: System) -> int:
    return sum(1 for r in s.journal.rows() if r["k"] == "start")


def worker_sigkill(s: System, n: int, kills: int = 1) -> Verdict:
    """SIGKILL a busy ``dtq worker`` ``kills`` times (a fresh one replaces each)."""
    s.send(0, n, sleep=0.01)
    workers = [s.spawn_worker(2), s.spawn_worker(2)]
    for k in range(kills):
        target = (k + 1) * n // (kills + 2)
        until(lambda t=target: _started(s) >= t, SETTLE_S, f"{target} tasks to start")
        victim = workers[k % len(workers)]
        victim.kill()
        workers[k % len(workers)] = s.spawn_worker(2)
    s.settle(SETTLE_S)
    return s.verdict("SIGKILL worker" + (f" x{kills}" if kills > 1 else ""))


def producer_sigkill(s: System, n: int) -> Verdict:
    """SIGKILL a producer process mid-stream; a second producer sends the rest."""
    s.spawn_worker(2)
    p = s.spawn_producer(0, n)
    until(lambda: len(s.acknowledged()) >= n // 3, SETTLE_S, "a third of the sends")
    p.kill()
    p.wait(10)
    rest = s.spawn_producer(n, n // 2)
    rest.wait(SETTLE_S)
    s.settle(SETTLE_S)
    return s.verdict("SIGKILL producer")


def redis_restart(s: System, server: RedisServer, n: int, restarts: int = 1) -> Verdict:
    """SIGKILL redis-server (AOF, appendfsync always) mid-run and start it again."""
    s.spawn_worker(2)
    s.spawn_worker(2)
    p = s.spawn_producer(0, n, sleep=0.005)
    for k in range(restarts):
        target = (k + 1) * n // (restarts + 2)
        until(lambda t=target: len(s.acknowledged()) >= t, SETTLE_S, f"{target} sends")
        s.close_client()
        server.stop(kill=True)
        time.sleep(0.5)
        server.start()
    up_at = time.time()
    p.wait(SETTLE_S)
    s.settle(SETTLE_S)
    # How long the workers took to run tasks again after the (last) restart.
    back = min((r["t"] for r in s.journal.rows() if r["k"] == "end" and r["t"] > up_at), default=0)
    v = s.verdict("Redis restart (AOF always)" + (f" x{restarts}" if restarts > 1 else ""))
    v.fault += f"; work again {max(0.0, back - up_at):.1f}s after the restart"
    return v


def redis_stall(s: System, server: RedisServer, n: int, how: str, seconds: float) -> Verdict:
    """Stall Redis for ``seconds`` with ``CLIENT PAUSE`` or ``DEBUG SLEEP`` mid-run.

    Tasks are short (a few ms), so workers prefetch batches: a prefetched task whose
    lease ran out during the stall must not start.
    """
    s.send(0, n, sleep=0.003)
    workers = [s.spawn_worker(4), s.spawn_worker(4)]
    until(lambda: _started(s) >= n // 4, SETTLE_S, "a quarter of the tasks to start")
    c = redis.Redis(port=server.port)
    try:
        if how == "pause":
            c.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
            time.sleep(seconds)
        else:
            done = threading.Event()

            def sleep() -> None:
                try:
                    c.execute_command("DEBUG", "SLEEP", seconds)
                finally:
                    done.set()

            threading.Thread(target=sleep, daemon=True).start()
            done.wait(seconds + 10)
    finally:
        c.close()
    s.settle(SETTLE_S)
    for w in workers:
        assert w.alive(), w.stderr()
    lease = s.config["lease_s"]
    what = "CLIENT PAUSE" if how == "pause" else "DEBUG SLEEP"
    rel = "longer" if seconds > lease else "shorter"
    return s.verdict(f"Redis stall {rel} than the lease ({what} {seconds:g}s, lease {lease:g}s)")


#: Corruptions of a Redis task record: (field, value); value None deletes the field,
#: field "*" replaces the whole key with a string.
CORRUPTIONS: list[tuple[str, str | None]] = [
    ("state", None),
    ("state", "BOGUS"),
    ("name", None),
    ("payload", None),
    ("payload", "not a message"),
    ("priority", None),
    ("priority", "high"),
    ("enqueued_at", None),
    ("enqueued_at", "yesterday"),
    ("time_limit", "forever"),
    ("max_retries", None),
    ("attempt", "1.5"),
    ("deliveries", None),
    ("lease_token", "abc"),
    ("history", "{not json"),
    ("*", "garbage"),
]


def malformed_redis(s: System, n: int) -> Verdict:
    """Records corrupted straight in Redis among good ones; workers must live on."""
    from dtq_core.backends.redis.backend import RedisBackend

    s.send(0, n, sleep=0.005)
    be = s.client().backend
    assert isinstance(be, RedisBackend)
    # On a cluster the backend's own client routes each key to its node.
    plain = be.r if be.cluster else redis.Redis(port=be.r.connection_pool.connection_kwargs["port"])
    try:
        step = max(1, n // len(CORRUPTIONS))
        for k, (field, value) in enumerate(CORRUPTIONS):
            key = be.keys.record("default", s.acked[(k * step) % n])
            if field == "*":
                plain.delete(key)
                plain.set(key, value or "")
            elif value is None:
                plain.hdel(key, field)
            else:
                plain.hset(key, field, value)
    finally:
        if not be.cluster:
            plain.close()
    workers = [s.spawn_worker(2), s.spawn_worker(2, pool="async")]
    s.settle(SETTLE_S)
    for w in workers:
        assert w.alive(), w.stderr()
        out = w.stderr()
        assert "Exception in thread" not in out and "Traceback" not in out, out
    return s.verdict("malformed Redis records (each field missing / wrong type)")


def embedded_failstop(
    s: System, n: int, kind: str, filler: Path | None = None
) -> tuple[Verdict, FailStop]:
    """Fail the embedded store's write path under a running ``dtq worker``, then restart.

    ``kind``: ``enospc`` (an injected ``OSError(ENOSPC)`` on every log write),
    ``fsync`` (an injected ``EIO`` on every fsync), or ``tmpfs``: a real full disk, the
    data directory on a small tmpfs that ``filler`` (a file on it) fills up.

    The worker must exit non-zero within seconds with one line saying why, its stop
    summary must count only outcomes the store acknowledged, and a restart (the fault
    gone, the disk freed) must recover and finish every acknowledged task.
    """
    s.send(0, n, sleep=0.01)
    s.close_client()
    arm = s.tmp / "arm"
    env = {} if kind == "tmpfs" else {"DTQ_FAULT_KIND": kind, "DTQ_FAULT_ARM": str(arm)}
    first = s.spawn_worker(2, env=env)
    until(lambda: len(s.journal.ended()) >= n // 4, SETTLE_S, "a quarter of the tasks")
    armed_at = time.monotonic()
    if kind == "tmpfs":
        assert filler is not None
        _fill(filler)
    else:
        arm.touch()
    try:
        code: int | None = first.proc.wait(FAILSTOP_WAIT_S)
    except subprocess.TimeoutExpired:
        code = None  # still up on a failed store: the bug this scenario looks for
        first.kill()
    took = time.monotonic() - armed_at
    out = first.stderr()
    stopped = FailStop(code, took, out, first.pid)
    if filler is not None:
        filler.unlink()
    arm.unlink(missing_ok=True)
    second = s.spawn_worker(2)
    s.settle(SETTLE_S, states=lambda ids: dict.fromkeys(ids))
    second.term()
    return s.verdict(f"embedded store: {FAULT_NAMES[kind]}"), stopped


FAULT_NAMES = {
    "enospc": "disk full (injected ENOSPC)",
    "tmpfs": "disk full (a full tmpfs)",
    "fsync": "fsync failure (injected EIO)",
}


@dataclass
class FailStop:
    """How the first worker of :func:`embedded_failstop` ended."""

    code: int | None
    seconds: float
    output: str
    pid: int


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until its file system is full."""
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, chunk):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


def poison(s: System, n: int, pool: str) -> Verdict:
    """A task that kills its worker process, among ``n`` innocent ones, under ``pool``.

    A supervisor (this loop) restarts the ``dtq worker`` each time it dies, as systemd
    or Kubernetes would. The poison must end dead-lettered (``worker_lost`` after
    ``max_deliveries`` when it kills the whole process; a failed attempt when only a
    process-pool child dies) and every innocent must run or, when it was always
    running beside the poison, be dead-lettered naming the poison beside it.
    """
    name = "fa.arec" if pool == "async" else "fa.rec"
    s.send(0, n, sleep=0.2, name=name)
    b = s.client()
    s.intents.add(n)
    s.acked[n] = b.send("fa.poison", [n], priority=-1).id
    worker = s.spawn_worker(2, pool=pool)
    restarts = 0

    def done() -> bool:
        nonlocal worker, restarts
        if not worker.alive():
            restarts += 1
            worker = s.spawn_worker(2, pool=pool)
        acked = s.acknowledged()
        waiting = set(acked) - s.journal.ended()
        return all(b.backend.get_state(acked[i]) is S.DEAD for i in waiting)

    until(done, SETTLE_S, "the poison to be dead-lettered and the rest to run")
    s.settle(SETTLE_S)  # and every record final (a run may have lost its ack in a crash)
    worker.term()
    v = s.verdict(f"poison task, {pool} pool ({restarts} worker restarts)")
    return v


def malformed_embedded(s: System, n: int, directory: Path) -> Verdict:
    """Malformed records appended to an embedded store's log between two runs.

    Tasks with a field missing or of the wrong type are counted as enqueued (argument
    ``n + k``): each must end dead-lettered as ``malformed record``; the ``n`` good
    tasks must all run.
    """
    import json

    from dtq_core.backends.embedded.oplog import OP_ENQ
    from dtq_core.backends.embedded.wal import WriteAheadLog

    s.send(0, n, sleep=0.005)
    s.close_client()
    good = {
        "name": "fa.rec",
        "queue": "default",
        "priority": 0,
        "payload": 'j{"v":1,"args":[0],"kwargs":{}}',
        "eta": None,
        "max_retries": 0,
        "time_limit": None,
        "dedup_key": None,
        "replayed_from": None,
        "workflow": None,
    }
    wrong = {"name": 5, "queue": ["q"], "priority": "high", "payload": 123, "eta": "soon"}
    wrong |= {"max_retries": "many", "time_limit": "forever", "dedup_key": 7}
    bodies = []
    for field in good:
        for how in ("missing", "wrong"):
            if how == "wrong" and field not in wrong:
                continue
            i = n + len(bodies)
            task = {**good, "id": f"bad-{i}"}
            if how == "missing":
                del task[field]
            else:
                task[field] = wrong[field]
            bodies.append(json.dumps([task, time.time()]).encode())
            s.intents.add(i)
            s.acked[i] = f"bad-{i}"
    wal = WriteAheadLog(directory / "wal", "always", 50, 64 * 1024 * 1024)
    try:
        for body in bodies:
            wal.append(OP_ENQ, body)
    finally:
        wal.close()
    w = s.spawn_worker(2)
    # (the store is owned by the worker: the bad ones are known dead by construction)
    s.settle(SETTLE_S, states=lambda ids: {i: S.DEAD if i >= n else None for i in ids})
    w.term()
    assert "Traceback" not in w.stderr(), w.stderr()
    return s.verdict("malformed embedded log records (each field missing / wrong type)")


def embedded_attached_sigkill(s: System, n: int) -> Verdict:
    """SIGKILL of attached workers and of a producer on one ``embedded://`` store.

    The owner is a ``dtq worker --concurrency 0`` (it owns and serves only, and is never
    killed here: the owner's SIGKILL is another scenario's); two ``dtq worker``
    processes and a producer process attach to its socket. One worker and the producer
    are killed mid-run; a fresh worker and a second producer take over.
    """
    owner, workers, p = _owner_under_load(s, n)
    workers[0].kill()
    p.kill()
    p.wait(10)
    workers.append(s.spawn_worker(2))
    rest = s.spawn_producer(n, n // 2)
    rest.wait(SETTLE_S)
    s.settle(SETTLE_S)
    v = s.verdict("embedded store: SIGKILL of an attached worker and a producer")
    for w in workers[1:]:
        w.term()
    s.close_client()
    owner.term()
    return v


def _owner_under_load(
    s: System, n: int, env: dict[str, str] | None = None
) -> tuple[Worker, list[Worker], subprocess.Popen[bytes]]:
    """An ``embedded://`` owner serving only (``-c 0``), two attached workers of 2 threads
    and a producer of ``n`` tasks, once a third are sent and a sixth have started."""
    sock = Path(s.url.removeprefix("embedded://").split("?")[0]) / "dtq.sock"
    owner = s.spawn_worker(0, env=env)
    until(lambda: sock.exists() or not owner.alive(), 30, "the owner to serve its socket")
    assert owner.alive(), owner.stderr()
    workers = [s.spawn_worker(2), s.spawn_worker(2)]
    p = s.spawn_producer(0, n, sleep=0.005)
    until(lambda: len(s.acknowledged()) >= n // 3, SETTLE_S, "a third of the sends")
    until(lambda: _started(s) >= n // 6, SETTLE_S, "work under way")
    return owner, workers, p


def embedded_owner_dies_after_a_claim(s: System, n: int, arm: Path) -> Verdict:
    """The owner of an ``embedded://`` store dies between logging a claim and replying.

    The owner (``dtq worker -c 0``: it serves only) SIGKILLs itself mid-run right after
    it logged a claim of an attached worker, which never gets those tasks. The store's
    lease is 30 s here: the new owner must requeue them at once, so that everything
    acknowledged ends well within one lease of the kill (else this raises).
    """
    from dtq_core.backends.embedded.backend import lock_holder

    s.client_may_own = False
    lease = float(s.config["lease_s"])
    directory = Path(s.url.removeprefix("embedded://").split("?")[0])
    env = {"DTQ_FAULT_ARM": str(arm), "DTQ_FAULT_KIND": "claim-reply"}
    owner, workers, p = _owner_under_load(s, n, env)
    arm.touch()
    until(lambda: not owner.alive(), 30, "the owner to die after a claim")
    killed = time.monotonic()
    p.wait(SETTLE_S)
    until(lambda: lock_holder(directory) is not None, lease / 2, "a worker to own the store")
    s.settle(max(1.0, lease * 0.6 - (time.monotonic() - killed)))
    took = time.monotonic() - killed
    v = s.verdict(
        f"embedded store: the owner dies between a claim and its reply (lease {lease:g}s); "
        f"all ended {took:.1f}s after"
    )
    for w in workers:
        w.term()
    s.close_client()
    return v


def embedded_owner_sigkill(s: System, n: int) -> Verdict:
    """SIGKILL of the owner of an ``embedded://`` store mid-run, and its restart.

    A ``dtq worker`` owns the store; a second one and a producer process attach. The
    owner is killed while tasks run and sends arrive: the attached worker takes the
    store over (recovery included; or the restarted owner does, if it comes up first),
    the producer carries on through the failover. Only a worker ever holds the lock:
    the producer, the checker in this process and the restart never take it.
    """
    from dtq_core.backends.embedded.backend import lock_holder

    s.client_may_own = False
    directory = Path(s.url.removeprefix("embedded://").split("?")[0])
    sock = directory / "dtq.sock"
    owner = s.spawn_worker(2)
    until(lambda: sock.exists() or not owner.alive(), 30, "the owner to serve its socket")
    assert owner.alive(), owner.stderr()
    attached = s.spawn_worker(2)
    p = s.spawn_producer(0, n, sleep=0.005)
    until(lambda: len(s.acknowledged()) >= n // 3, SETTLE_S, "a third of the sends")
    until(lambda: _started(s) >= n // 6, SETTLE_S, "work under way")
    owner.kill()
    restarted = s.spawn_worker(2)
    p.wait(SETTLE_S)
    # The producer may have sent everything before the kill: then nothing waited for a
    # new owner, and this process (which never owns) would find the store ownerless.
    until(lambda: lock_holder(directory) is not None, SETTLE_S, "a worker to own the store")
    s.settle(SETTLE_S)
    v = s.verdict("embedded store: SIGKILL of the owner (an attached worker takes over)")
    # The attached worker, or the restarted one if it came up first: a worker either way.
    holder = lock_holder(directory)
    assert holder in (attached.proc.pid, restarted.proc.pid), (holder, s.producers[0].pid)
    for w in (restarted, attached):
        w.term()
    s.close_client()
    return v
