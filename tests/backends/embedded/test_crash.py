"""Real crashes of the embedded store: SIGKILL, injected exits inside a checkpoint, torn
log tails, failed fsyncs, and a second owner.

Every crash here is a real process death (``crash_worker.py`` run as a subprocess and
killed with SIGKILL, or exiting with ``os._exit`` at an injected step); the parent then
reopens the directory in this process and checks what survived against what the child
acknowledged on its stdout.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.backends.embedded.framing import HEADER_SIZE, iter_segment
from dtq_core.backends.embedded.wal import list_segments
from dtq_core.clock import FakeClock
from dtq_core.errors import BackendUnavailable, StoreCorrupted, StoreFailed
from dtq_core.filters import TaskFilter
from dtq_core.task import TaskState
from tests.backends.embedded import crash_worker as cw
from tests.backends.embedded.crash_worker import Child

S = TaskState
WORKER = Path(cw.__file__).resolve()
MAXD = cw.MAX_DELIVERIES


# -- child processes ---------------------------------------------------------------------


def run_child(mode: str, cfg: dict[str, Any], timeout: float = 60.0) -> tuple[int, list[str]]:
    """Run a child to its end (a self-inflicted crash); return its exit code and lines."""
    child = Child(mode, cfg)
    lines = child.finish(timeout)
    code = child.proc.returncode
    if code not in (-signal.SIGKILL, 70, 71):
        raise AssertionError(f"child {mode} exited {code}; stderr:\n{child.stderr()}")
    return code, lines


def url_of(path: Path, **opts: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"fsync": "always", **opts}.items())
    return f"embedded://{path}?{query}"


def reopen(path: Path, now: float | None = None, **opts: Any) -> EmbeddedBackend:
    clock = FakeClock(now if now is not None else time.time())
    return cw.open_backend(url_of(path, **opts), clock)


def line_value(lines: list[str], tag: str) -> Any:
    for line in lines:
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise AssertionError(f"no {tag} line in {lines[-5:]}")


# -- the crash loop ------------------------------------------------------------------------


@dataclass
class OpsModel:
    """What the ``ops`` children acknowledged, over every cycle of one data directory."""

    began: set[str] = field(default_factory=set)
    enqueued: set[str] = field(default_factory=set)
    acked: dict[str, Any] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)
    etas: dict[str, float] = field(default_factory=dict)
    cycles: int = 0
    requeued: int = 0
    worker_lost: int = 0


def check_ops_cycle(model: OpsModel, lines: list[str], b: EmbeddedBackend) -> None:
    """Apply one killed child's acknowledgements to ``model`` and check the reopened store."""
    last: dict[str, tuple[str, int, bool]] = {}  # id -> (event, deliveries, claim durable)
    inflight: tuple[str, str | None] | None = None

    def durable_point() -> None:
        for tid, (ev, k, _) in list(last.items()):
            if ev == "claim":
                last[tid] = (ev, k, True)

    for line in lines:
        tag, _, rest = line.partition(" ")
        args = rest.split(" ")
        if tag == "B":
            inflight = (args[0], args[1] if len(args) > 1 else None)
            if args[0] == "enq":
                model.began.add(args[1])
            continue
        if tag == "E":
            model.enqueued.add(args[0])
            if args[1] != "-":
                model.etas[args[0]] = float(args[1])
            durable_point()
        elif tag == "C":
            last[args[0]] = ("claim", int(args[2]), False)
        elif tag == "A":
            model.acked[args[0]] = json.loads(args[1])
            last[args[0]] = ("ack", 0, True)
            durable_point()
        elif tag == "R":
            last[args[0]] = ("retry", 0, True)
            durable_point()
        elif tag == "D":
            model.dead[args[0]] = args[1]
            last[args[0]] = ("dead", 0, True)
            durable_point()
        elif tag in ("S", "K"):
            durable_point()
        inflight = None

    recs = {r.id: r for r in b.list_tasks(TaskFilter(), b.clock.now(), 0, 10**9)}
    ready = {q.name: {r.id for r in b.peek(q.name, 10**9)} for q in b.queue_stats()}
    ids = set(recs)
    # Nothing appears that the child never even began to enqueue.
    assert ids <= model.began, sorted(ids - model.began)[:5]
    # Every acknowledged enqueue is there, in some state.
    assert model.enqueued <= ids, sorted(model.enqueued - ids)[:5]
    # No acknowledged ack or dead-letter is undone.
    for tid, result in model.acked.items():
        assert recs[tid].state is S.SUCCESS, recs[tid]
        assert recs[tid].result == result
    for tid, reason in model.dead.items():
        assert recs[tid].state is S.DEAD, recs[tid]
        assert recs[tid].dead_reason == reason
    # Recovery leaves nothing RUNNING.
    assert b.count_by_state()[S.RUNNING] == 0
    assert not any(r.state is S.RUNNING for r in recs.values())
    # Delayed tasks keep their eta (they are an hour away: never promoted here).
    for tid, eta in model.etas.items():
        assert recs[tid].state is S.PENDING and recs[tid].eta == eta, recs[tid]
        assert tid not in ready.get("default", ())
    busy = inflight[1] if inflight else None
    for tid, (ev, k, durable) in last.items():
        if tid == busy:
            continue
        rec = recs[tid]
        if ev == "claim":
            # RUNNING at the crash: back to PENDING with the delivery counted, or DEAD
            # (worker_lost) once the deliveries reach the limit.
            if not durable and rec.deliveries == k - 1:
                # No acknowledged record followed the claim: it may not have been logged.
                assert rec.state is S.PENDING, rec
                continue
            assert rec.deliveries == k, rec
            if k >= MAXD:
                assert rec.state is S.DEAD and rec.dead_reason == "worker_lost", rec
                assert rec.error is not None and rec.error.type == "WorkerLost"
                model.worker_lost += 1
            else:
                assert rec.state is S.PENDING, rec
                assert rec.history[-1].outcome == "LOST", rec.history
                assert tid in ready[rec.queue]
                model.requeued += 1
        elif ev == "retry":
            assert rec.state in (S.RETRY, S.PENDING), rec
    model.cycles += 1


def ops_crash_loop(
    root: Path,
    cycles: int,
    seed: int,
    *,
    max_run_s: float = 0.25,
    replay_twice_every: int = 4,
    log: Any = None,
) -> OpsModel:
    """Run ``cycles`` kill/reopen cycles of the ``ops`` child on one data directory."""
    rng = random.Random(seed)
    data = root / "data"
    url = url_of(data)
    model = OpsModel()

    def start(cycle: int) -> Child:
        cfg = {"url": url, "prefix": f"c{cycle:04d}-", "n_ids": 60, "gate": True}
        return Child("ops", {**cfg, "seed": rng.randrange(10**9)})

    # Children start a few cycles ahead, so their interpreter start overlaps the work.
    upcoming = deque(start(c) for c in range(min(3, cycles)))
    for cycle in range(cycles):
        child = upcoming.popleft()
        if cycle + len(upcoming) + 1 < cycles:
            upcoming.append(start(cycle + len(upcoming) + 1))
        child.go()
        child.wait_for("READY")
        time.sleep(rng.uniform(0.0, max_run_s))
        lines = child.kill()
        assert child.proc.returncode == -signal.SIGKILL, child.stderr()
        if cycle % 2:
            # Check a copy: the next child recovers the log itself, not a checkpoint.
            target = root / f"copy-{cycle}"
            shutil.copytree(data, target)
        else:
            target = data
        now = time.time()
        b = cw.open_backend(url_of(target), FakeClock(now))
        try:
            check_ops_cycle(model, lines, b)
            if replay_twice_every and cycle % replay_twice_every == 3:
                first = cw.fingerprint(b, now)
        finally:
            b.close()
        if target != data:
            if replay_twice_every and cycle % replay_twice_every == 3:
                # The same log replayed again (from a second copy) gives the same state.
                again = root / f"again-{cycle}"
                shutil.copytree(data, again)
                b2 = cw.open_backend(url_of(again), FakeClock(now))
                try:
                    assert cw.fingerprint(b2, now) == first
                finally:
                    b2.close()
                shutil.rmtree(again)
            shutil.rmtree(target)
        if log is not None:
            log(cycle, model, lines)
    return model


def test_crash_loop_sigkill_never_loses_acknowledged_work(tmp_path: Path) -> None:
    """25 SIGKILLs at random moments of a process enqueueing, claiming, acking, failing."""
    model = ops_crash_loop(tmp_path, cycles=25, seed=20240601)
    assert model.cycles == 25
    assert len(model.enqueued) > 100 and len(model.acked) > 20 and model.dead
    assert model.requeued > 0
    # The poison task is claimed and never settled in every cycle: after MAXD deliveries
    # it is dead-lettered as worker_lost, with the delivery count kept.
    b = reopen(tmp_path / "data")
    try:
        rec = b.get("poison")
        assert rec is not None
        assert rec.state is S.DEAD and rec.dead_reason == "worker_lost"
        assert rec.deliveries == MAXD
        assert rec.error is not None and rec.error.type == "WorkerLost"
        assert [a.outcome for a in rec.history] == ["LOST"] * (MAXD - 1)
        assert b.info()["worker_lost"] == 0  # already dead: nothing new to bury
    finally:
        b.close()


@pytest.mark.soak
def test_crash_loop_soak(tmp_path: Path) -> None:
    model = ops_crash_loop(tmp_path, cycles=200, seed=7, max_run_s=0.5)
    assert model.cycles == 200


def check_broker_cycle(
    lines: list[str], began: set[str], enqueued: set[str], acked: set[str], dead: dict[str, str]
) -> None:
    for line in lines:
        tag, _, rest = line.partition(" ")
        args = rest.split(" ")
        if tag == "B" and args[0] == "enq":
            began.add(args[1])
        elif tag == "E":
            enqueued.add(args[0])
        elif tag == "A":
            acked.add(args[0])
        elif tag == "D":
            dead[args[0]] = rest.split(" ", 1)[1]


def broker_records(url: str) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    from dtq_core import Broker, BrokerConfig
    from dtq_core.registry import Registry

    broker = Broker(
        BrokerConfig(backend=url, num_workers=0, registry=Registry(), max_deliveries=MAXD, own=True)
    )
    broker.open()
    try:
        b = broker.backend
        now = broker.clock.now()
        recs = {r.id: r for r in b.list_tasks(TaskFilter(), now, 0, 10**9)}
        counts = {s.value: n for s, n in b.count_by_state().items()}
        return recs, counts, b.info()
    finally:
        broker.stop()


def test_crash_loop_broker_with_thread_workers(tmp_path: Path) -> None:
    """SIGKILL a Broker with 4 worker threads and a producer, 5 times; then drain it all."""
    from dtq_core import Broker, BrokerConfig
    from dtq_core.client import task
    from dtq_core.registry import Registry

    rng = random.Random(99)
    url = url_of(tmp_path / "data")
    began: set[str] = set()
    enqueued: set[str] = set()
    acked: set[str] = set()
    dead: dict[str, str] = {}
    cycles = 5

    def start(cycle: int) -> Child:
        cfg = {"url": url, "prefix": f"b{cycle}-", "n_ids": 3000, "seed": cycle, "gate": True}
        return Child("broker", cfg)

    upcoming = deque(start(c) for c in range(2))
    for cycle in range(cycles):
        child = upcoming.popleft()
        if cycle + 2 < cycles:
            upcoming.append(start(cycle + 2))
        child.go()
        child.wait_for("READY")
        time.sleep(rng.uniform(0.1, 0.5))
        lines = child.kill()
        check_broker_cycle(lines, began, enqueued, acked, dead)
        recs, counts, _ = broker_records(url)
        assert set(recs) <= began, sorted(set(recs) - began)[:5]
        assert enqueued <= set(recs), sorted(enqueued - set(recs))[:5]
        for tid in acked:
            assert recs[tid].state is S.SUCCESS, (tid, recs[tid].state)
            assert recs[tid].result == int(tid.rsplit("-", 1)[1]) * 2
        for tid, note in dead.items():
            assert recs[tid].state is S.DEAD and recs[tid].dead_reason == note
        assert counts["RUNNING"] == 0
    assert len(acked) > 50 and dead
    # Run everything that is left: every task ends where its function sends it.
    reg = Registry()

    @task(name="crash.ok", registry=reg)
    def ok(n: int) -> int:
        return n * 2

    @task(name="crash.flaky", registry=reg, max_retries=1)
    def flaky(n: int) -> int:
        raise ValueError(f"flaky {n}")

    cfg = BrokerConfig(
        backend=url,
        num_workers=4,
        registry=reg,
        max_deliveries=MAXD,
        retry_backoff=0.01,
        retry_max_delay=0.05,
        retry_jitter="none",
    )
    broker = Broker(cfg).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            c = broker.backend.count_by_state()
            if c[S.PENDING] + c[S.RUNNING] + c[S.RETRY] == 0:
                break
            time.sleep(0.05)
        recs = {r.id: r for r in broker.backend.list_tasks(TaskFilter(), 0.0, 0, 10**9)}
    finally:
        broker.stop()
    assert enqueued <= set(recs)
    for tid, rec in recs.items():
        n = int(tid.rsplit("-", 1)[1])
        if rec.name == "crash.ok":
            assert (rec.state, rec.result) == (S.SUCCESS, n * 2) or (
                rec.state is S.DEAD and rec.dead_reason == "worker_lost"
            ), rec
        else:
            assert rec.state is S.DEAD, rec


# -- a kill at each step of a checkpoint ----------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_crashes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One directory per step, each holding the same workload and a checkpoint killed there."""
    root = tmp_path_factory.mktemp("ckpt")
    out: dict[str, Any] = {"root": root}
    procs = {}
    for step in cw.CKPT_STEPS:
        url = url_of(root / step, segment_mb=0.002)
        procs[step] = Child("ckpt", {"url": url, "step": step})
    for step, child in procs.items():
        lines = child.finish(60)
        code = child.proc.returncode
        assert code == (71 if step == "after-checkpoint" else 70), (step, code, child.stderr())
        out[step] = lines
    return out


def ckpt_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("checkpoints/*"))


@pytest.mark.parametrize("step", cw.CKPT_STEPS)
def test_kill_during_each_checkpoint_step_loses_nothing(
    checkpoint_crashes: dict[str, Any], step: str
) -> None:
    root: Path = checkpoint_crashes["root"]
    expect = line_value(checkpoint_crashes[step], "EXPECT")
    segments_before = line_value(checkpoint_crashes[step], "SEGMENTS")
    assert segments_before >= 3  # so that the checkpoint has segments to delete
    d = root / step
    files = ckpt_files(d)
    if step in ("before-checkpoint", "before-temp-write", "after-temp-write", "after-temp-fsync"):
        assert not [f for f in files if f.endswith(".ckpt")], files  # the crash came first
    else:
        assert [f for f in files if f.endswith(".ckpt")], files
    if step == "mid-segment-deletion":
        assert len(list_segments(d / "wal")) < segments_before
    reference = root / "before-checkpoint"
    now = cw.T0 + 10_000
    # Reopen a copy of the reference and of this step's directory on the same clock.
    fps = []
    for src in (reference, d):
        copy = src.parent / f"{src.name}-open-{step}"
        shutil.copytree(src, copy)
        b = reopen(copy, now, segment_mb=0.002)
        try:
            fps.append(cw.fingerprint(b, now))
            info = b.info()
        finally:
            b.close()
        # And once more after that clean close (which checkpoints): still the same.
        b = reopen(copy, now, segment_mb=0.002)
        try:
            assert cw.fingerprint(b, now) == fps[-1]
        finally:
            b.close()
        shutil.rmtree(copy)
    ref, got = fps
    assert got == ref
    # The reference itself is the workload's state, so "equal" means "nothing lost".
    recs = ref["records"]
    assert len(recs) == 61
    for tid in expect["success"]:
        assert recs[tid]["state"] == "SUCCESS" and recs[tid]["result"]["ok"] is True
    for tid in expect["dead"]:
        assert recs[tid]["state"] == "DEAD" and recs[tid]["dead_reason"] == "failed"
    for tid in expect["retry"]:
        assert recs[tid]["state"] == "RETRY" and recs[tid]["eta"] is not None
    for tid in expect["running"]:
        assert recs[tid]["state"] == "PENDING" and recs[tid]["deliveries"] == 1
        assert recs[tid]["history"][-1]["outcome"] == "LOST"
    assert ref["keys"]["dtq:dd:key-1"] == "t000"
    assert "dtq:cron:last:nightly" in ref["keys"]
    assert ["paused-q", 1, 0, 0, True] in ref["queues"]
    assert ref["names"] == ["crash.other", "crash.work"]
    if step == "after-checkpoint":
        assert info["checkpoint_lsn"] > 0
        assert info["replayed_records"] == 0


# -- replaying the same log twice ------------------------------------------------------------


def test_replaying_the_same_log_twice_gives_the_same_state(tmp_path: Path) -> None:
    """Open after a crash, crash again right after recovery, open again: same state."""
    data = tmp_path / "data"
    cfg = {"url": url_of(data), "prefix": "r-", "n_ids": 300, "seed": 5, "checkpoints": False}
    child = Child("ops", cfg)
    child.wait_for("READY")
    time.sleep(0.3)
    child.kill()
    copies = []
    for name in ("a", "b"):
        copies.append(tmp_path / name)
        shutil.copytree(data, copies[-1])
    now = time.time() + 1
    # First replay in a process that dies (SIGKILL) right after its recovery...
    _, lines = run_child("recover", {"url": url_of(copies[0]), "now": now})
    first = line_value(lines, "FP")
    # ...then the same directory replayed again, and the untouched copy replayed once.
    fps = []
    for d in copies:
        b = reopen(d, now)
        try:
            fps.append(cw.fingerprint(b, now))
            assert b.info()["checkpoint_lsn"] == 0  # no checkpoint involved: pure replay
        finally:
            b.close()
    assert fps[0] == first
    assert fps[1] == first
    assert first["counts"]["SUCCESS"] > 0 and first["counts"]["PENDING"] > 0


@pytest.mark.parametrize("mode", ["interval", "off"])
def test_process_crash_loses_nothing_acknowledged_in_any_fsync_mode(
    tmp_path: Path, mode: str
) -> None:
    """interval/off only risk a machine crash: a write() happens before the return, so
    a killed process (the OS survives) loses nothing it acknowledged."""
    url = f"embedded://{tmp_path / 'data'}?fsync={mode}&interval_ms=1000"
    _, lines = run_child("seq", {"url": url, "n": 300})
    b = reopen(tmp_path / "data", cw.T0 + 100, fsync=mode)
    try:
        ops = [tuple(line.split(" ", 1)) for line in lines]
        assert len(ops) == 500
        assert all(present_flags(b, ops))  # type: ignore[arg-type]
    finally:
        b.close()


# -- torn tails and corruption at the backend level -------------------------------------------


@pytest.fixture(scope="module")
def seq_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    """A directory killed after a known sequence of enqueues, claims and acks."""
    root = tmp_path_factory.mktemp("seq")
    _, lines = run_child("seq", {"url": url_of(root / "data", segment_mb=0.008), "n": 90})
    ops = [tuple(line.split(" ", 1)) for line in lines]
    assert len(ops) == 90 + 2 * 30
    return root / "data", ops  # type: ignore[return-value]


def frame_ends(segment: Path) -> list[int]:
    from dtq_core.backends.embedded.framing import decode_header

    data = segment.read_bytes()
    header = decode_header(data)
    return [f.end for f in iter_segment(data, header.epoch, int(segment.name[4:20]))]  # type: ignore[union-attr]


def present_flags(b: EmbeddedBackend, ops: list[tuple[str, str]]) -> list[bool]:
    flags = []
    for tag, tid in ops:
        rec = b.get(tid)
        if tag == "E":
            flags.append(rec is not None)
        elif tag == "C":
            flags.append(rec is not None and rec.deliveries >= 1)
        else:
            flags.append(rec is not None and rec.state is S.SUCCESS)
    return flags


def test_torn_tail_at_random_offsets_recovers_a_prefix(
    tmp_path: Path, seq_log: tuple[Path, list[tuple[str, str]]]
) -> None:
    data, ops = seq_log
    segs = list_segments(data / "wal")
    assert len(segs) >= 2
    last = segs[-1][1]
    ends = frame_ends(last)
    size = last.stat().st_size
    assert ends[-1] == size
    rng = random.Random(3)
    offsets = {HEADER_SIZE, size - 1, ends[-2], ends[-2] + 1}
    offsets |= {rng.randrange(HEADER_SIZE, size) for _ in range(24)}
    seen_prefixes = set()
    for off in sorted(offsets):
        d = tmp_path / f"cut-{off}"
        shutil.copytree(data, d)
        seg = d / "wal" / last.name
        with seg.open("r+b") as fh:
            fh.truncate(off)
        kept = [e for e in ends if e <= off]
        b = reopen(d, cw.T0 + 100, segment_mb=0.008)
        try:
            flags = present_flags(b, ops)
            k = flags.index(False) if False in flags else len(flags)
            # A prefix of the operations survives: nothing later without everything earlier.
            assert flags == [True] * k + [False] * (len(flags) - k), (off, flags)
            seen_prefixes.add(k)
            info = b.info()
            torn = off - (kept[-1] if kept else HEADER_SIZE)
            assert info["dropped_bytes"] == torn, (off, info)
            if torn:
                broken = Path(info["broken_copy"])
                assert broken.exists() and broken.name == last.name + ".broken"
                assert broken.stat().st_size == off  # the segment as found, before the cut
            else:
                assert info["broken_copy"] == ""
            # The store goes on: a new enqueue after the cut survives a reopen.
            b.enqueue(cw.new_task("after-cut"), cw.T0 + 101)
        finally:
            b.close()
        b = reopen(d, cw.T0 + 200, segment_mb=0.008)
        try:
            assert b.get("after-cut") is not None
            assert present_flags(b, ops) == flags
        finally:
            b.close()
        shutil.rmtree(d)
    assert len(seen_prefixes) > 5


def test_untouched_log_recovers_everything(
    tmp_path: Path, seq_log: tuple[Path, list[tuple[str, str]]]
) -> None:
    data, ops = seq_log
    d = tmp_path / "d"
    shutil.copytree(data, d)
    b = reopen(d, cw.T0 + 100, segment_mb=0.008)
    try:
        assert all(present_flags(b, ops))
        info = b.info()
        assert info["dropped_bytes"] == 0 and info["broken_copy"] == ""
        assert info["replayed_records"] == len(ops)
        assert b.count_by_state()[S.SUCCESS] == 30
        assert b.count_by_state()[S.PENDING] == 60
    finally:
        b.close()


@pytest.mark.parametrize("where", ["last-segment", "earlier-segment"])
def test_corruption_before_the_tail_refuses_to_start(
    tmp_path: Path, seq_log: tuple[Path, list[tuple[str, str]]], where: str
) -> None:
    data, _ = seq_log
    d = tmp_path / "d"
    shutil.copytree(data, d)
    segs = list_segments(d / "wal")
    seg = segs[-1][1] if where == "last-segment" else segs[0][1]
    ends = frame_ends(seg)
    assert len(ends) >= 4
    at = ends[1] + 20  # inside the third record's body, valid records follow
    raw = bytearray(seg.read_bytes())
    raw[at] ^= 0x40
    seg.write_bytes(bytes(raw))
    for _ in range(2):  # the refusal is stable, and the lock is released each time
        with pytest.raises(StoreCorrupted) as err:
            reopen(d, segment_mb=0.008)
        msg = str(err.value)
        assert str(seg) in msg
        assert f"offset {ends[1]}" in msg
        assert "dtq wal verify" in msg and "dtq wal repair" in msg
    assert seg.read_bytes() == bytes(raw)  # nothing was cut or "fixed"
    assert not list((d / "wal").glob("*.broken"))


# -- fsync failure --------------------------------------------------------------------------


class FlakyDisk:
    """An fsync that fails from the ``fail_at``-th call on, remembering what was synced.

    After a failure the test throws away what was written but never synced (as the kernel
    may after a failed fsync), so an acknowledgement without a successful fsync shows.
    ``delay`` makes each fsync take at least that long, as a real disk's does.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.fail_at: int | None = None
        self.synced: dict[str, int] = {}
        self.failed_at: float | None = None
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.calls += 1
            failing = self.fail_at is not None and self.calls >= self.fail_at
        if failing:
            with self.lock:
                if self.failed_at is None:
                    self.failed_at = time.monotonic()
            raise OSError(errno.EIO, "injected fsync failure")
        time.sleep(self.delay)
        path = os.readlink(f"/proc/self/fd/{fd}")
        size = os.fstat(fd).st_size
        os.fsync(fd)
        with self.lock:
            self.synced[path] = max(size, self.synced.get(path, 0))

    def lose_unsynced(self, wal_dir: Path) -> None:
        for _, seg in list_segments(wal_dir):
            keep = self.synced.get(os.path.realpath(seg))
            if keep is not None and seg.stat().st_size > keep:
                with seg.open("r+b") as fh:
                    fh.truncate(keep)


def test_fsync_failure_stops_the_store_and_acknowledges_nothing_after(tmp_path: Path) -> None:
    disk = FlakyDisk()
    d = tmp_path / "data"
    clock = FakeClock(cw.T0)
    b = EmbeddedBackend(url_of(d), clock, fsync_fn=disk)
    b.open()
    acked = []
    for i in range(10):
        b.enqueue(cw.new_task(f"ok{i}"), clock.now())
        acked.append(f"ok{i}")
    (dl,) = b.claim(None, "w", 30, 1, clock.now())
    b.ack(dl.task_id, dl.token, "done", clock.now())
    b.set_key("before", "1", None, clock.now())
    disk.fail_at = disk.calls + 1
    with pytest.raises(StoreFailed):
        b.enqueue(cw.new_task("failing"), clock.now())
    assert b.info()["failed"] is True
    disk.fail_at = None  # even once the disk "works" again: nothing is retried
    # Fail-stop: every later mutating call raises; none is ever acknowledged.
    later = {
        "enqueue": lambda: b.enqueue(cw.new_task("later"), clock.now()),
        "claim": lambda: b.claim(None, "w", 30, 1, clock.now()),
        "set_key": lambda: b.set_key("k", "v", None, clock.now()),
        "set_if_absent": lambda: b.set_if_absent("k2", "v", 60, clock.now()),
        "set_paused": lambda: b.set_paused("q", True),
        "cancel": lambda: b.cancel("ok9", clock.now()),
        "checkpoint": b.checkpoint,
    }
    for name, call in later.items():
        with pytest.raises(StoreFailed):
            call()
            pytest.fail(f"{name} was acknowledged after the fsync failure")
    b.close()  # releases the directory, without a checkpoint of the failed state
    assert not list(d.glob("checkpoints/*.ckpt"))
    disk.lose_unsynced(d / "wal")
    b = reopen(d, cw.T0 + 1)
    try:
        for tid in acked:
            assert b.get(tid) is not None
        assert b.get_state(dl.task_id) is S.SUCCESS
        assert b.get_key("before", cw.T0 + 1) == "1"
        assert b.get("failing") is None  # never synced, so thrown away with the page cache
        assert b.get("later") is None
        assert b.get_key("k", cw.T0 + 1) is None
        assert b.get_key("k2", cw.T0 + 1) is None
        assert b.get_state("ok9") is S.PENDING
        assert not any(q.paused for q in b.queue_stats())
    finally:
        b.close()


def test_fsync_failure_under_concurrent_producers(tmp_path: Path) -> None:
    """16 producers share fsyncs (group commit); an fsync fails mid-way. Every enqueue
    that returned survives even when the unsynced tail is thrown away, no call begun
    after the failure succeeds, and every call after it raises."""
    # A slow fsync: the other producers write while it runs and share the next one,
    # however the threads happen to be scheduled on a loaded machine.
    disk = FlakyDisk(delay=0.005)
    d = tmp_path / "data"
    b = EmbeddedBackend(url_of(d), FakeClock(cw.T0), fsync_fn=disk)
    b.open()
    disk.fail_at = disk.calls + 30
    acked: list[tuple[str, float]] = []
    failed = 0
    lock = threading.Lock()

    def producer(p: int) -> None:
        nonlocal failed
        for i in range(150):
            tid = f"p{p}-{i}"
            started = time.monotonic()
            try:
                b.enqueue(cw.new_task(tid), cw.T0)
            except StoreFailed:
                with lock:
                    failed += 1
                continue
            with lock:
                acked.append((tid, started))

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert acked and failed
    assert len(acked) + failed == 16 * 150
    assert disk.failed_at is not None
    assert all(started < disk.failed_at for _, started in acked)
    assert b.info()["fsyncs"] < len(acked)  # group commit did share fsyncs
    b.close()
    disk.lose_unsynced(d / "wal")
    b = reopen(d, cw.T0 + 1)
    try:
        missing = [t for t, _ in acked if b.get(t) is None]
        assert not missing, missing[:5]
    finally:
        b.close()


def test_after_fail_stop_rejected_changes_are_not_visible(tmp_path: Path) -> None:
    disk = FlakyDisk()
    clock = FakeClock(cw.T0)
    b = EmbeddedBackend(url_of(tmp_path / "data"), clock, fsync_fn=disk)
    b.open()
    try:
        b.enqueue(cw.new_task("a"), clock.now())
        (dl,) = b.claim(None, "w", 30, 1, clock.now())
        disk.fail_at = disk.calls + 1
        with pytest.raises(StoreFailed):
            b.set_key("trigger", "x", None, clock.now())
        with pytest.raises(StoreFailed):
            b.enqueue(cw.new_task("never-logged"), clock.now())
        with pytest.raises(StoreFailed):
            b.ack(dl.task_id, dl.token, "never-logged", clock.now())
        assert b.get("never-logged") is None
        assert b.get_state(dl.task_id) is S.RUNNING
    finally:
        b.close()


# -- ownership ----------------------------------------------------------------------------


def test_second_process_gets_backend_unavailable_naming_the_owner(tmp_path: Path) -> None:
    d = tmp_path / "data"
    owner = Child("hold", {"url": url_of(d)})
    try:
        pid = int(owner.wait_for("READY").split()[1])
        assert pid == owner.proc.pid
        b = EmbeddedBackend(url_of(d), FakeClock(cw.T0))
        with pytest.raises(BackendUnavailable) as err:
            b.open()
        assert f"process {pid}" in str(err.value)
        assert str(d) in str(err.value)
        # The broker reports the same, without touching the log.
        from dtq_core import Broker, BrokerConfig
        from dtq_core.registry import Registry

        broker = Broker(
            BrokerConfig(
                backend=url_of(d), num_workers=0, registry=Registry(), own=True, attach_timeout=0.5
            )
        )
        with pytest.raises(BackendUnavailable, match=f"locked by process {pid}"):
            broker.open()
        assert (d / "wal").exists()
    finally:
        owner.kill()
    # The lock dies with its owner.
    b = reopen(d)
    b.close()


def test_lock_is_free_after_owner_with_process_pool_is_killed(tmp_path: Path) -> None:
    d = tmp_path / "data"
    owner = Child("hold", {"url": url_of(d), "pool": "process"})
    owner.wait_for("READY")
    pids = descendants(owner.proc.pid)
    assert len(pids) >= 3  # the pool's two children and the fork server they come from
    owner.kill(reader_timeout=0.1)  # orphans keep our stdout pipe open
    try:
        deadline = time.monotonic() + 1
        while True:
            try:
                b = reopen(d)
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            b.close()
            break
    finally:
        for pid in pids:  # our own orphans, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, theirs, ...)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        todo += kids
    return out


def crons(b: EmbeddedBackend, now: float) -> list[str]:
    return sorted(r.id for r in b.list_tasks(TaskFilter(), now, 0, 1000) if r.name == "x.minutely")


def test_a_task_that_kills_its_process_ends_dead_as_worker_lost(tmp_path: Path) -> None:
    url = url_of(tmp_path / "data")
    for run in range(MAXD):  # each run claims it once and dies of it
        _, lines = run_child("poison", {"url": url, "enqueue": run == 0}, timeout=30)
        assert "SURVIVED" not in lines
        if run == 0:
            assert "E poison" in lines
    b = reopen(tmp_path / "data")
    try:
        rec = b.get("poison")
        assert rec is not None
        assert rec.state is S.DEAD and rec.dead_reason == "worker_lost", rec
        assert rec.deliveries == MAXD
    finally:
        b.close()


# -- everything besides tasks survives a crash ------------------------------------------------


def test_dedup_key_still_deduplicates_after_a_crash(tmp_path: Path) -> None:
    url = url_of(tmp_path / "data")
    _, lines = run_child("extras", {"url": url})
    facts = line_value(lines, "FACTS")
    clock = FakeClock(facts["now"])
    broker = cw.extras_broker(url, clock)
    broker.open()
    try:
        again = broker.send("x.add", [1, 1], dedup_key="order-42")
        assert again.id == facts["dedup"]
    finally:
        broker.stop()


def test_restart_after_dedup_keys_expired(tmp_path: Path) -> None:
    url = url_of(tmp_path / "data")
    _, lines = run_child("extras", {"url": url})
    facts = line_value(lines, "FACTS")
    clock = FakeClock(facts["now"] + 2 * 3600)  # every dedup key (1 h) has expired
    broker = cw.extras_broker(url, clock)
    try:
        broker.open()
        fresh = broker.send("x.add", [1, 1], dedup_key="order-42")
        assert fresh.id != facts["dedup"]  # the window is over: a new task
    finally:
        broker.stop()


def test_results_dead_letters_keys_cron_and_paused_queues_survive_a_crash(
    tmp_path: Path,
) -> None:
    url = url_of(tmp_path / "data")
    code, lines = run_child("extras", {"url": url})
    assert code == -signal.SIGKILL
    facts = line_value(lines, "FACTS")
    # Restart 44 s later: past the next minute tick, which is still on time.
    clock = FakeClock(facts["now"] + 44)
    broker = cw.extras_broker(url, clock)
    broker.open()
    try:
        b = broker.backend
        now = clock.now()
        # Results.
        ok = b.get(facts["ok"])
        assert ok is not None and ok.state is S.SUCCESS and ok.result == {"sum": 5}
        assert broker.result(facts["ok"]).get(timeout=1) == {"sum": 5}
        # Dead letters, with their error and reason, grouped and replayable.
        bad = b.get(facts["bad"])
        assert bad is not None and bad.state is S.DEAD
        assert bad.error is not None and "no such thing" in bad.error.message
        assert [r.id for r in broker.dlq.list()] == [facts["bad"]]
        (group,) = broker.dlq.groups()
        assert group.task_ids == (facts["bad"],)
        # Dedup keys (the exact map) and raw set-if-absent keys.
        assert b.get_key("dtq:dd:order-42", now) == facts["dedup"]
        assert b.set_if_absent("raw-key", "v2", 60, now) == "v1"
        # Cron fire times: the last fire is remembered, so the tick that fell due while
        # the process was down fires once, and the tick before it does not fire again.
        assert b.get_key("dtq:cron:last:x.minutely", now) == facts["cron_last"]
        last_tick = float(facts["cron_last"])
        assert crons(b, now) == [f"cron-x.minutely-{int(last_tick)}"]
        broker.tick()
        assert crons(b, now) == sorted(
            [f"cron-x.minutely-{int(last_tick)}", f"cron-x.minutely-{int(last_tick) + 60}"]
        )
        broker.tick()
        assert len(crons(b, now)) == 2
        # Paused queues stay paused.
        stats = {q.name: q for q in b.queue_stats()}
        assert stats["paused-q"].paused and stats["paused-q"].ready == 1
        assert b.claim(["paused-q"], "w", 30, 1, clock.now()) == []
        # Delayed tasks keep their eta.
        delayed = b.get(facts["delayed"])
        assert delayed is not None and delayed.state is S.PENDING
        assert delayed.eta == facts["eta"]
        assert b.next_due() == facts["eta"]
        b.promote_due(facts["eta"] - 1)
        assert facts["delayed"] not in [r.id for r in b.peek("default", 100)]
        b.promote_due(facts["eta"])
        assert facts["delayed"] in [r.id for r in b.peek("default", 100)]
    finally:
        broker.stop()


# -- recovery guards ----------------------------------------------------------------------


def test_fallback_to_an_older_checkpoint_never_skips_log_silently(tmp_path: Path) -> None:
    d = tmp_path / "data"
    clock = FakeClock(cw.T0)
    b = cw.open_backend(url_of(d, segment_mb=0.002), clock)
    for i in range(20):
        b.enqueue(cw.new_task(f"a{i}"), clock.now())
    b.checkpoint()
    for i in range(60):
        b.enqueue(cw.new_task(f"b{i}"), clock.now())
    b.checkpoint()
    b.close()
    ckpts = sorted((d / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 2
    newest = ckpts[-1]
    raw = bytearray(newest.read_bytes())
    raw[-5] ^= 0xFF
    newest.write_bytes(bytes(raw))
    try:
        b = reopen(d, segment_mb=0.002)
    except StoreCorrupted:
        return  # refusing is correct
    try:
        missing = [f"b{i}" for i in range(60) if b.get(f"b{i}") is None]
        assert not missing, f"{len(missing)} acknowledged tasks silently lost"
    finally:
        b.close()
