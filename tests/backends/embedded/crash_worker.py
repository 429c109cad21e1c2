"""Subprocess helper of the embedded store's crash tests: it works, reports, and gets killed.

Run as ``python crash_worker.py MODE CONFIG_JSON``. The parent test kills it with SIGKILL
(or it kills itself at a chosen instruction), then reopens the data directory and checks
what survived against what this process reported.

With ``"gate": true`` in the config the child imports everything, says ``IMPORTED`` and
waits for a line on stdin before it opens anything (the parent starts the next child
while the current one runs, so the interpreter start is not paid per cycle).

Protocol: one line per event on stdout, flushed at once. A line describing an operation
is printed only after the call returned, so it is an acknowledgement the parent may rely
on; ``B <op> ...`` lines announce the one operation in flight, whose outcome is unknown
if the process dies before its acknowledgement line.

Modes:

- ``ops``: random enqueue / claim / ack / fail / checkpoint on an ``EmbeddedBackend``.
- ``broker``: a ``Broker`` with thread workers and a producer thread.
- ``ckpt``: a fixed workload on a fake clock, then ``checkpoint()`` with a crash
  (``os._exit``) injected at one step of it.
- ``seq``: a fixed sequence of enqueues, claims and acks, then SIGKILL of itself.
- ``extras``: results, dead letters, dedup keys, cron fire times, a paused queue and a
  delayed task made through a ``Broker``, then SIGKILL of itself.
- ``recover``: open a directory on a fake clock, print its fingerprint, SIGKILL itself.
- ``hold``: open a directory (or a Broker with a process pool) and sleep.
- ``owner``: a Broker on ``embedded://`` serving the Console API, until killed.
- ``serve``: an ``EmbeddedStore`` that owns the directory and serves its socket, with no
  worker of its own, until killed.

:func:`fingerprint` is shared with the tests: everything a recovery must reproduce.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dtq_core.backends.base import Backend, NewTask
from dtq_core.backends.embedded import backend as backend_mod
from dtq_core.backends.embedded import checkpoint as checkpoint_mod
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import SYSTEM_CLOCK, Clock, FakeClock
from dtq_core.codec import encode_message
from dtq_core.filters import TaskFilter
from dtq_core.task import ErrorInfo

#: The fake time every deterministic workload starts at.
T0 = 1_700_000_000.0
#: Deliveries after which a task found RUNNING at recovery is dead-lettered.
MAX_DELIVERIES = 3
#: Steps of a checkpoint at which the ``ckpt`` mode can die.
CKPT_STEPS = (
    "before-checkpoint",
    "before-temp-write",
    "after-temp-write",
    "after-temp-fsync",
    "after-rename",
    "before-prune",
    "before-segment-deletion",
    "mid-segment-deletion",
    "after-checkpoint",
)

_out_lock = threading.Lock()


def say(*parts: Any) -> None:
    """Print one protocol line and flush it (one ``write`` of a short line: atomic)."""
    line = " ".join(str(p) for p in parts) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def die() -> None:
    """A real crash: SIGKILL this process (no atexit, no close, no flush of anything)."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def new_task(
    task_id: str, queue: str = "default", eta: float | None = None, priority: int = 0
) -> NewTask:
    """A task with a real message envelope; its argument is its id."""
    payload = encode_message(task_id, "crash.work", [task_id], {})
    return NewTask(task_id, "crash.work", queue, priority, payload, eta=eta, max_retries=3)


def open_backend(url: str, clock: Clock = SYSTEM_CLOCK, **kw: Any) -> EmbeddedBackend:
    """Open the store the way every mode and the parent do (same delivery limit)."""
    b = EmbeddedBackend(url, clock, **kw)
    b.max_deliveries = MAX_DELIVERIES
    b.open()
    return b


def fingerprint(b: Backend, now: float = T0) -> dict[str, Any]:
    """Everything a recovery must reproduce, as JSON-comparable data."""
    recs = b.list_tasks(TaskFilter(), now, 0, 10**9)
    records = {}
    for r in recs:
        d = r.to_dict(with_payload=True)
        d["lease_token"] = r.lease_token
        records[r.id] = d
    queues = [[q.name, q.ready, q.delayed, q.running, q.paused] for q in b.queue_stats()]
    keys = {k: b.get_key(k, now) for k in b.scan_keys("", now, 10**6)}
    out = {
        "counts": {s.value: n for s, n in b.count_by_state().items()},
        "records": records,
        "queues": queues,
        "ready_order": {q[0]: [r.id for r in b.peek(q[0], 10**6)] for q in queues},
        "dead": [r.id for r in b.list_dead(TaskFilter(), now, 0, 10**9)],
        "next_due": b.next_due(),
        "keys": keys,
        "names": sorted(b.known_names()),
    }
    return json.loads(json.dumps(out))


# -- the parent side: a child process and its acknowledgement lines ---------------------


class Child:
    """A crash_worker subprocess whose stdout lines are collected by a reader thread."""

    def __init__(self, mode: str, cfg: dict[str, Any]) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the object
        # Cache bytecode outside the tree, even where PYTHONDONTWRITEBYTECODE is set: the
        # crash loops start dozens of interpreters, and compiling dtq_core each time
        # would cost more than the work between two kills.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "dtq-pycache"))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), mode, json.dumps(cfg)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # a torn last line: never acknowledged
            with self._cond:
                self.lines.append(raw.decode().rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        """The first line starting with ``prefix`` (fails if the child dies first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    break
                self._cond.wait(left)
        self.kill()
        raise AssertionError(f"child never said {prefix!r}; stderr:\n{self.stderr()}")

    def go(self) -> None:
        """Release a child started with ``gate``: it opens the store now."""
        self.wait_for("IMPORTED")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self, reader_timeout: float = 10.0) -> list[str]:
        """SIGKILL the child, wait for it and return every complete line it printed."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        return self.finish(reader_timeout=reader_timeout)

    def finish(self, timeout: float = 60.0, reader_timeout: float = 10.0) -> list[str]:
        """Wait for the child to end; return its complete lines."""
        self.proc.wait(timeout)
        self._reader.join(reader_timeout)
        with self._cond:
            return list(self.lines)

    def stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self._err.seek(0)
        return self._err.read().decode(errors="replace")[-4000:]


# -- ops: random operations on the backend -------------------------------------------


def mode_ops(cfg: dict[str, Any]) -> None:
    rng = random.Random(cfg["seed"])
    b = open_backend(cfg["url"])
    prefix, n_ids = cfg["prefix"], cfg["n_ids"]
    # The poison task: claimed and never settled in every cycle, so it must end DEAD
    # with reason worker_lost once its deliveries reach the limit.
    if b.get("poison") is None:
        say("B enq poison")
        b.enqueue(new_task("poison", queue="poison"), time.time())
        say("E poison -")
    got = b.claim(["poison"], "w-poison", 30.0, 1, time.time())
    for d in got:
        say("C", d.task_id, d.token, d.deliveries)
    say("B sync")
    b.set_key("sync", str(time.time()), None, time.time())  # makes the claim durable
    say("S")
    say("READY", json.dumps(b.info()))
    held: list[tuple[str, int]] = []
    made = 0
    while True:
        r = rng.random()
        now = time.time()
        if r < 0.35 and made < n_ids:
            tid = f"{prefix}{made:05d}"
            made += 1
            eta = now + 3600 if rng.random() < 0.1 else None
            say("B enq", tid)
            b.enqueue(new_task(tid, eta=eta), now)
            say("E", tid, "-" if eta is None else repr(eta))
        elif r < 0.65:
            say("B claim")
            got = b.claim(["default"], "w1", 30.0, 1, now)
            for d in got:
                say("C", d.task_id, d.token, d.deliveries)
                held.append((d.task_id, d.token))
        elif r < 0.93 and held:
            tid, token = held.pop(rng.randrange(len(held)))
            kind = rng.random()
            if kind < 0.6:
                result = {"id": tid, "n": rng.randrange(1000)}
                say("B ack", tid)
                trs = b.ack(tid, token, result, now)
                assert trs, (tid, token)
                say("A", tid, json.dumps(result, separators=(",", ":")))
            elif kind < 0.8:
                err = ErrorInfo("ValueError", f"boom {tid}")
                say("B fail", tid)
                trs = b.fail(tid, token, err, now, retry_at=now + 0.05)
                assert trs, (tid, token)
                say("R", tid)
            elif kind < 0.92:
                err = ErrorInfo("ValueError", f"fatal {tid}")
                say("B fail", tid)
                trs = b.fail(tid, token, err, now, dead_reason="failed")
                assert trs, (tid, token)
                say("D", tid, "failed")
            else:
                held.append((tid, token))  # keep holding: RUNNING at the crash
        elif r < 0.97 or not cfg.get("checkpoints", True):
            b.promote_due(now)
        else:
            say("B ckpt")
            lsn = b.checkpoint()
            say("K", lsn)


# -- broker: thread workers and a producer ----------------------------------------------


def mode_broker(cfg: dict[str, Any]) -> None:
    from dtq_core import Broker, BrokerConfig
    from dtq_core.client import task
    from dtq_core.registry import Registry

    reg = Registry()

    @task(name="crash.ok", registry=reg)
    def ok(n: int) -> int:
        time.sleep(0.002)
        return n * 2

    @task(name="crash.flaky", registry=reg, max_retries=1)
    def flaky(n: int) -> int:
        raise ValueError(f"flaky {n}")

    broker = Broker(
        BrokerConfig(
            backend=cfg["url"],
            num_workers=4,
            registry=reg,
            max_deliveries=MAX_DELIVERIES,
            retry_backoff=0.01,
            retry_max_delay=0.05,
            retry_jitter="none",
        )
    )

    def report(ev: Any) -> None:
        new = str(getattr(ev.new, "value", ev.new))
        if new == "SUCCESS":
            say("A", ev.task_id)
        elif new == "DEAD":
            say("D", ev.task_id, ev.note)
        elif new == "RETRY":
            say("R", ev.task_id)

    broker.events.subscribe(report)
    broker.start()
    say("READY", json.dumps(broker.backend.info()))
    prefix, n_ids = cfg["prefix"], cfg["n_ids"]
    rng = random.Random(cfg["seed"])
    for i in range(n_ids):
        tid = f"{prefix}{i:05d}"
        name = "crash.flaky" if rng.random() < 0.15 else "crash.ok"
        say("B enq", tid)
        broker.send(name, [i], task_id=tid)
        say("E", tid, name, i)
    time.sleep(60)


# -- ckpt: a checkpoint that dies at one step -------------------------------------------


def deterministic_workload(b: EmbeddedBackend, clock: FakeClock, n: int = 60) -> dict[str, Any]:
    """Enqueue, claim, ack, fail, bury, delay, pause and set keys on a fake clock."""
    expect: dict[str, Any] = {"success": [], "dead": [], "retry": [], "running": []}
    for i in range(n):
        eta = clock.now() + 600 if i % 10 == 9 else None
        b.enqueue(new_task(f"t{i:03d}", eta=eta, priority=i % 3), clock.now())
        clock.advance(0.5)
    for i in range(n // 2):
        (d,) = b.claim(["default"], f"w{i % 3}", 30.0, 1, clock.now())
        clock.advance(0.25)
        if i % 5 == 0:
            err = ErrorInfo("ValueError", "again")
            b.fail(d.task_id, d.token, err, clock.now(), retry_at=clock.now() + 5)
            expect["retry"].append(d.task_id)
        elif i % 7 == 0:
            err = ErrorInfo("KeyError", f"missing {i}")
            b.fail(d.task_id, d.token, err, clock.now(), dead_reason="failed")
            expect["dead"].append(d.task_id)
        elif i % 11 == 0:
            expect["running"].append(d.task_id)
        else:
            b.ack(d.task_id, d.token, {"i": i, "ok": True}, clock.now())
            expect["success"].append(d.task_id)
        clock.advance(0.25)
    b.set_if_absent("dtq:dd:key-1", "t000", 86400, clock.now())
    b.set_key("dtq:cron:last:nightly", repr(clock.now() - 30), None, clock.now())
    b.set_paused("paused-q", True)
    b.enqueue(new_task("in-paused", queue="paused-q"), clock.now())
    b.register_names(["crash.work", "crash.other"])
    return expect


def mode_ckpt(cfg: dict[str, Any]) -> None:
    step = cfg["step"]
    armed = threading.Event()

    def fd_path(fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    def fsync_fn(fd: int) -> None:
        temp = Path(fd_path(fd)).name.startswith(".checkpoint-")
        if armed.is_set() and step == "after-temp-write" and temp:
            os._exit(70)
        os.fsync(fd)

    clock = FakeClock(T0)
    b = open_backend(cfg["url"], clock, fsync_fn=fsync_fn)
    expect = deterministic_workload(b, clock)
    say("EXPECT", json.dumps(expect))
    say("SEGMENTS", len(b._log.require().segments()))

    real_write_all = checkpoint_mod.write_all
    real_replace = os.replace
    real_fsync_dir = checkpoint_mod.fsync_directory
    real_unlink = Path.unlink
    real_truncate = backend_mod.WriteAheadLog.truncate_before

    def write_all(fd: int, data: Any) -> None:
        if step == "before-temp-write":
            os._exit(70)
        real_write_all(fd, data)

    def replace(src: Any, dst: Any) -> None:
        if step == "after-temp-fsync" and Path(src).name.startswith(".checkpoint-"):
            os._exit(70)
        real_replace(src, dst)

    def fsync_dir(root: Path, fn: Any = os.fsync) -> None:
        if step == "after-rename":
            os._exit(70)
        real_fsync_dir(root, fn)

    def prune(*a: Any, **kw: Any) -> list[Path]:
        if step == "before-prune":
            os._exit(70)
        return checkpoint_mod.prune_checkpoints(*a, **kw)

    def truncate_before(self: Any, lsn: int) -> list[Path]:
        if step == "before-segment-deletion":
            os._exit(70)
        return real_truncate(self, lsn)

    deleted = []

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self, missing_ok=missing_ok)
        if step == "mid-segment-deletion" and self.name.startswith("wal-"):
            deleted.append(self.name)
            os._exit(70)

    checkpoint_mod.write_all = write_all  # type: ignore[assignment]
    os.replace = replace  # type: ignore[assignment]
    checkpoint_mod.fsync_directory = fsync_dir  # type: ignore[assignment]
    backend_mod.prune_checkpoints = prune  # type: ignore[assignment]
    backend_mod.WriteAheadLog.truncate_before = truncate_before  # type: ignore[method-assign]
    Path.unlink = unlink  # type: ignore[method-assign]
    if step == "before-checkpoint":
        os._exit(70)
    armed.set()
    b.checkpoint()
    say("CHECKPOINTED")
    os._exit(71)


# -- seq: a known sequence of operations, then a crash -----------------------------------


def mode_seq(cfg: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    b = open_backend(cfg["url"], clock)
    n = cfg["n"]
    for i in range(n):
        tid = f"s{i:04d}"
        b.enqueue(new_task(tid), clock.now())
        say("E", tid)
        if i % 3 == 2:
            (d,) = b.claim(["default"], "w1", 30.0, 1, clock.now())
            say("C", d.task_id)
            b.ack(d.task_id, d.token, {"acked": d.task_id}, clock.now())
            say("A", d.task_id)
        clock.advance(0.01)
    die()


# -- extras: everything besides tasks that must survive -------------------------------


def extras_app() -> tuple[Any, Any, Any]:
    """The registry, schedules and tasks of the ``extras`` mode (the parent uses them too)."""
    from dtq_core.client import task
    from dtq_core.registry import Registry
    from dtq_core.scheduling.periodic import ScheduleRegistry, periodic

    reg = Registry()
    schedules = ScheduleRegistry()

    @task(name="x.add", registry=reg)
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @task(name="x.bad", registry=reg, max_retries=0)
    def bad(n: int) -> None:
        raise KeyError(f"no such thing {n}")

    @periodic("* * * * *", name="x.minutely", registry=reg, schedules=schedules, missed="catch_up")
    def minutely() -> str:
        return "tick"

    return reg, schedules, (add, bad, minutely)


def extras_broker(url: str, clock: FakeClock) -> Any:
    from dtq_core import Broker, BrokerConfig
    from dtq_core.broker import default_hooks
    from dtq_core.scheduling.periodic import PeriodicHook

    reg, schedules, _ = extras_app()
    hooks = [h for h in default_hooks() if not isinstance(h, PeriodicHook)]
    hooks.append(PeriodicHook(schedules))
    return Broker(
        BrokerConfig(
            backend=url,
            num_workers=0,
            registry=reg,
            clock=clock,
            hooks=hooks,
            max_deliveries=MAX_DELIVERIES,
            own=True,
        )
    )


def mode_extras(cfg: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    broker = extras_broker(cfg["url"], clock)
    broker.open()
    facts: dict[str, Any] = {}
    ok = broker.send("x.add", [2, 3])
    bad = broker.send("x.bad", [7])
    broker.work()
    facts["ok"], facts["bad"] = ok.id, bad.id
    facts["dedup"] = broker.send("x.add", [1, 1], dedup_key="order-42").id
    facts["delayed"] = broker.send("x.add", [4, 4], countdown=3600).id
    facts["eta"] = broker.backend.get(facts["delayed"]).eta
    broker.backend.set_paused("paused-q", True)
    facts["in_paused"] = broker.send("x.add", [5, 5], queue="paused-q").id
    clock.advance(61)
    broker.tick()  # fires the minutely schedule once
    facts["cron_last"] = broker.backend.get_key("dtq:cron:last:x.minutely", clock.now())
    facts["now"] = clock.now()
    facts["set_if_absent"] = broker.backend.set_if_absent("raw-key", "v1", 3600, clock.now())
    say("FACTS", json.dumps(facts))
    die()


# -- recover, hold, owner ------------------------------------------------------------------


def mode_recover(cfg: dict[str, Any]) -> None:
    b = open_backend(cfg["url"], FakeClock(cfg["now"]))
    say("FP", json.dumps(fingerprint(b, cfg["now"])))
    die()


def mode_hold(cfg: dict[str, Any]) -> None:
    if cfg.get("pool"):
        from dtq_core import Broker, BrokerConfig
        from dtq_core.registry import Registry

        broker = Broker(
            BrokerConfig(backend=cfg["url"], num_workers=2, pool=cfg["pool"], registry=Registry())
        )
        broker.start()
    else:
        open_backend(cfg["url"])
    say("READY", os.getpid())
    time.sleep(120)


def owner_app() -> Any:
    from dtq_core.client import task
    from dtq_core.registry import Registry

    reg = Registry()

    @task(name="app.echo", registry=reg)
    def echo(x: Any) -> Any:
        return x

    @task(name="app.fragile", registry=reg, max_retries=0)
    def fragile(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative input {x}")
        return x * 10

    @task(name="app.sleep", registry=reg)
    def sleep(s: float) -> float:
        time.sleep(s)
        return s

    return reg


def mode_owner(cfg: dict[str, Any]) -> None:
    from dtq_core import Broker, BrokerConfig

    broker = Broker(
        BrokerConfig(backend=cfg["url"], num_workers=2, registry=owner_app(), lease_s=30.0)
    )
    broker.start()
    say("READY", os.getpid())
    time.sleep(300)


def mode_serve(cfg: dict[str, Any]) -> None:
    from dtq_core.backends.embedded.store import EmbeddedStore

    store = EmbeddedStore(cfg["url"])
    store.may_own = True
    store.max_deliveries = MAX_DELIVERIES
    store.open()
    assert store.role == "owner", "the directory was owned already"
    say("READY", os.getpid())
    time.sleep(300)


def mode_poison(cfg: dict[str, Any]) -> None:
    """A Broker whose only task kills the whole process the moment it runs."""
    from dtq_core import Broker, BrokerConfig
    from dtq_core.client import task
    from dtq_core.registry import Registry

    reg = Registry()

    @task(name="app.poison", registry=reg)
    def poison() -> None:
        die()  # a segfault, an OOM kill...

    broker = Broker(
        BrokerConfig(backend=cfg["url"], num_workers=1, registry=reg, max_deliveries=MAX_DELIVERIES)
    )
    broker.open()
    if cfg.get("enqueue"):
        broker.send("app.poison", task_id="poison")
        say("E poison")
    say("READY", json.dumps(broker.backend.info()))
    broker.start()
    time.sleep(10)
    say("SURVIVED")


MODES = {
    "ops": mode_ops,
    "broker": mode_broker,
    "ckpt": mode_ckpt,
    "seq": mode_seq,
    "extras": mode_extras,
    "recover": mode_recover,
    "hold": mode_hold,
    "owner": mode_owner,
    "serve": mode_serve,
    "poison": mode_poison,
}


if __name__ == "__main__":
    config = json.loads(sys.argv[2])
    if config.get("gate"):
        say("IMPORTED")
        sys.stdin.readline()  # started ahead of time: wait until the parent says go
    MODES[sys.argv[1]](config)
