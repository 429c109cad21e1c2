"""The embedded store: the in-memory state machine, with every change logged first.

``embedded://PATH[?fsync=always|interval|off&interval_ms=50&checkpoint_mb=64]``.
One process owns the directory (an OS file lock). Each change is applied under the
backend lock and appended to the write-ahead log under the same lock, so log order is
state order; the caller then waits, outside the lock, until its record is as durable as
the fsync mode promises (concurrent callers share one fsync: group commit). Claims,
promotions and lease reclaims are logged without waiting: a later acknowledged record
makes them durable too (the log is durable as a prefix), and losing one only means a
task recovers one step earlier.

Recovery: newest valid checkpoint, then replay of the later records, then every task
that was RUNNING is requeued with its delivery counted (dead-lettered as
``worker_lost`` past the delivery limit).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dtq_core.backends.base import Capabilities, Delivery, NewTask, Transition
from dtq_core.backends.embedded.checkpoint import (
    load_latest_checkpoint,
    prune_checkpoints,
    write_checkpoint,
)
from dtq_core.backends.embedded.state import b2s, dump_state, load_state, s2b
from dtq_core.backends.embedded.wal import FsyncFn, FsyncMode, WriteAheadLog
from dtq_core.backends.memory import MemoryBackend
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    StoreCorrupted,
    StoreFailed,
)
from dtq_core.task import ErrorInfo, TaskState

OP_ENQ, OP_CLAIM, OP_CALL, OP_PROMOTE, OP_RECLAIM, OP_KVSET, OP_KVDEL, OP_NAMES = range(1, 9)

#: Names of the log's record types (for ``dtq wal inspect``).
OP_NAMES_BY_TYPE = {
    OP_ENQ: "enqueue",
    OP_CLAIM: "claim",
    OP_CALL: "call",
    OP_PROMOTE: "promote",
    OP_RECLAIM: "reclaim",
    OP_KVSET: "key-set",
    OP_KVDEL: "key-delete",
    OP_NAMES: "names",
}

_dumps = json.JSONEncoder(separators=(",", ":")).encode

# Data directories open in this process (resolved paths).
_OPEN_DIRS: set[str] = set()
_OPEN_LOCK = threading.Lock()


def parse_url(url: str) -> tuple[Path, dict[str, Any]]:
    """``embedded://PATH?opts`` -> (directory, options)."""
    rest = url.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if not path:
        raise ConfigError("embedded:// needs a directory, e.g. embedded://./dtq-data")
    opts: dict[str, Any] = {}
    for key, vals in parse_qs(query, strict_parsing=False).items():
        val = vals[-1]
        if key == "fsync":
            if val not in ("always", "interval", "off"):
                raise ConfigError(f"fsync={val!r}: use always, interval or off")
            opts["fsync"] = val
        elif key in ("interval_ms", "checkpoint_mb", "checkpoint_s", "segment_mb"):
            try:
                opts[key] = float(val)
            except ValueError:
                raise ConfigError(f"{key}={val!r} is not a number") from None
        else:
            raise ConfigError(
                f"unknown embedded:// option {key!r}: use fsync, interval_ms, checkpoint_mb, "
                "checkpoint_s or segment_mb"
            )
    return Path(path).expanduser(), opts


class EmbeddedBackend(MemoryBackend):
    """The default backend: a local data directory with a write-ahead log."""

    capabilities = Capabilities(durable=True, cross_process=False, blocking_claim=True)
    reentrant = True
    #: Deliveries after which a task found RUNNING at recovery is dead-lettered.
    max_deliveries = 5

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK, fsync_fn: FsyncFn = os.fsync) -> None:
        super().__init__(url, clock)
        self.path, opts = parse_url(url)
        self.fsync: FsyncMode = opts.get("fsync", "always")
        self.interval_ms = int(opts.get("interval_ms", 50))
        self.checkpoint_bytes = int(opts.get("checkpoint_mb", 64) * 2**20)
        self.checkpoint_s = float(opts.get("checkpoint_s", 300))
        self.segment_bytes = int(opts.get("segment_mb", 16) * 2**20)
        self.fsync_fn = fsync_fn
        self._wal: WriteAheadLog | None = None
        self._replaying = False
        self._lock_fd = -1
        self._stats: dict[str, Any] = {}
        self._ckpt_at_bytes = 0
        self._ckpt_at_time = 0.0
        self._ckpt_lsn = 0
        self._stop = threading.Event()
        self._ckpt_thread: threading.Thread | None = None
        self._claim_lsn = threading.local()

    # -- ownership, recovery, checkpoints ----------------------------------------------

    def open(self) -> None:
        """Take ownership of the directory and recover its state."""
        t0 = time.perf_counter()
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_ownership()
        try:
            self._recover()
        except BaseException:
            self._release_ownership()
            raise
        self._stats["recovery_seconds"] = round(time.perf_counter() - t0, 4)
        self._ckpt_thread = threading.Thread(
            target=self._checkpointer, name="dtq-checkpointer", daemon=True
        )
        self._ckpt_thread.start()

    def _take_ownership(self) -> None:
        # POSIX record locks are per process: a second open in this process would get
        # the lock again, so this process keeps its own list of open directories.
        key = str(self.path.resolve())
        with _OPEN_LOCK:
            if key in _OPEN_DIRS:
                raise BackendUnavailable(
                    f"data directory {self.path} is owned by process {os.getpid()} (this "
                    "one): it is already open here; share that broker instead"
                )
            _OPEN_DIRS.add(key)
        try:
            self._lock_directory()
        except BaseException:
            with _OPEN_LOCK:
                _OPEN_DIRS.discard(key)
            raise

    def _lock_directory(self) -> None:
        lock_path = self.path / "LOCK"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # A POSIX record lock, not flock(): forked children (the process pool) do not
            # inherit it, so the directory is free as soon as the owner dies.
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BackendUnavailable(
                f"data directory {self.path} is owned by process {owner}; attach through it "
                "(dtq and dtq-tui use its socket) or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release_ownership(self) -> None:
        with _OPEN_LOCK:
            _OPEN_DIRS.discard(str(self.path.resolve()))
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = -1

    def _recover(self) -> None:
        if self._records or self._kv or self._names:  # reopened after close(): start clean
            MemoryBackend.__init__(self, self.url, self.clock)
            self._ckpt_lsn = 0
        ckpt = load_latest_checkpoint(self.path / "checkpoints")
        if ckpt is not None:
            load_state(self, ckpt.body)
            self._ckpt_lsn = ckpt.lsn
        self._wal = WriteAheadLog(
            self.path / "wal", self.fsync, self.interval_ms, self.segment_bytes, self.fsync_fn
        )
        first = self._wal.recovery.first_lsn
        if ckpt is not None and first > self._ckpt_lsn + 1 and self._wal.recovery.segments:
            # The segments between this checkpoint and the log were deleted after a newer
            # checkpoint that is now unreadable: replaying would skip them silently.
            self._wal.close()
            self._wal = None
            raise StoreCorrupted(
                f"{self.path}: the newest valid checkpoint is at lsn {self._ckpt_lsn} but the "
                f"log starts at lsn {first}; records in between are gone. Run `dtq wal verify "
                f"{self.path}` and restore the newer checkpoint (skipped: "
                f"{', '.join(str(p) for p in getattr(ckpt, 'skipped', ())) or 'none'})"
            )
        replayed = 0
        max_token = 0
        self._replaying = True
        try:
            for rec in self._wal.replay(self._ckpt_lsn + 1):
                max_token = max(max_token, self._apply(rec.rtype, json.loads(rec.body)))
                replayed += 1
        finally:
            self._replaying = False
        if max_token:
            self._bump_tokens(max_token)
        running = self._counts[TaskState.RUNNING]
        with self._lock:
            for task_id in list(self._leases):
                self._leases.push(task_id, float("-inf"))
        requeued = self.reclaim_expired(self.clock.now(), self.max_deliveries)
        cut = self._wal.tail_cut
        self._stats.update(
            checkpoint_lsn=self._ckpt_lsn,
            replayed_records=replayed,
            recovered_tasks=sum(self._counts[s] for s in (TaskState.PENDING, TaskState.RETRY)),
            requeued_running=running,
            worker_lost=sum(1 for t in requeued if t.new is TaskState.DEAD),
            dropped_bytes=getattr(cut, "dropped_bytes", 0) if cut else 0,
            broken_copy=str(getattr(cut, "broken_copy", "")) if cut else "",
        )
        self._ckpt_at_bytes = 0
        self._ckpt_at_time = time.monotonic()

    def _bump_tokens(self, max_token: int) -> None:
        import itertools

        nxt = next(self._tokens)
        self._tokens = itertools.count(max(nxt, max_token + 1))

    def checkpoint(self) -> int:
        """Write a checkpoint of the live state and drop the log segments it covers."""
        wal = self._require_wal()
        with self._lock:
            lsn = wal.next_lsn - 1
            body = dump_state(self)
        wal.sync()  # the log is durable up to the checkpoint before the checkpoint exists
        root = self.path / "checkpoints"
        write_checkpoint(root, lsn, body, self.fsync_fn)
        prune_checkpoints(root, keep=2)
        wal.truncate_before(lsn + 1)
        self._ckpt_lsn = lsn
        self._ckpt_at_bytes = wal.bytes_written
        self._ckpt_at_time = time.monotonic()
        self._stats["last_checkpoint_bytes"] = len(body)
        return lsn

    def _checkpointer(self) -> None:
        while not self._stop.wait(1.0):
            wal = self._wal
            if wal is None or wal.failed:
                return
            grown = wal.bytes_written - self._ckpt_at_bytes
            stale = time.monotonic() - self._ckpt_at_time > self.checkpoint_s
            if grown >= self.checkpoint_bytes or (stale and grown > 0):
                with contextlib.suppress(BackendError):
                    self.checkpoint()

    def close(self) -> None:
        """Checkpoint (so the next start replays nothing), close the log, release the lock."""
        self._stop.set()
        if self._ckpt_thread is not None:
            self._ckpt_thread.join(5)
        wal = self._wal
        try:
            if wal is not None and not wal.failed and wal.next_lsn - 1 > self._ckpt_lsn:
                self.checkpoint()
        finally:
            try:
                if wal is not None:
                    wal.close()
            finally:
                self._wal = None
                self._release_ownership()

    def info(self) -> dict[str, Any]:
        """Recovery and log figures for the snapshot."""
        wal = self._wal
        out = dict(self._stats)
        out["path"] = str(self.path)
        out["fsync"] = self.fsync
        if wal is not None:
            out.update(
                segments=len(wal.segments()),
                bytes_written=wal.bytes_written,
                fsyncs=wal.fsync_count,
                next_lsn=wal.next_lsn,
                durable_lsn=wal.durable_lsn,
                failed=wal.failed,
            )
        return out

    def socket_path(self) -> Path:
        """Where the owner serves the Console API."""
        return self.path / "dtq.sock"

    # -- logging -----------------------------------------------------------------------

    def _require_wal(self) -> WriteAheadLog:
        if self._wal is None:
            raise BackendError(f"embedded store {self.path} is not open")
        return self._wal

    def _submit(self, op: int, body: Any) -> int:
        if self._replaying:
            return 0
        return self._require_wal().submit(op, _dumps(body).encode())

    def _alive(self) -> None:
        """Fail-stop: once the log failed, nothing changes any more.

        A change is refused before it is applied, so readers never see an effect that
        was never logged; a restart recovers the logged state.
        """
        wal = self._wal
        if wal is not None and wal.failed:
            raise StoreFailed(
                f"embedded store {self.path} stopped after a write-ahead log I/O error; "
                "restart the process to recover its acknowledged state"
            )

    def _wait(self, lsn: int) -> None:
        if lsn:
            self._require_wal().wait(lsn)

    def _log_key(self, key: str) -> int:
        item = self._kv.get(key)
        if item is None:
            return self._submit(OP_KVDEL, [key])
        return self._submit(OP_KVSET, [key, item[0], item[1]])

    def _call(self, name: str, args: list[Any], wait: bool = True) -> Any:
        self._alive()
        with self._lock:
            a, kw = _decode_args(name, args)
            out = getattr(MemoryBackend, name)(self, *a, **kw)
            lsn = self._submit(OP_CALL, [name, args]) if out else 0
        if wait:
            self._wait(lsn)
        return out

    # -- replay --------------------------------------------------------------------------

    def _apply(self, op: int, body: Any) -> int:
        """Apply one logged change; return the largest lease token it names."""
        if op == OP_ENQ:
            MemoryBackend.enqueue(self, _new_task(body[0]), body[1])
        elif op == OP_CLAIM:
            tokens = [c[1] for c in body[0]]
            for task_id, token, worker, deadline in body[0]:
                rec = self._records[task_id]
                self._ready[rec.queue].remove(task_id)
                self._start(rec, worker, token, deadline, body[1])
            return max(tokens, default=0)
        elif op == OP_CALL:
            a, kw = _decode_args(body[0], body[1])
            getattr(MemoryBackend, body[0])(self, *a, **kw)
        elif op == OP_PROMOTE:
            for task_id in body[0]:
                rec = self._records[task_id]
                self._delayed.remove(task_id)
                if rec.state is TaskState.RETRY:
                    self._move(rec, TaskState.PENDING)
                self._schedule(rec, None, body[1])
        elif op == OP_RECLAIM:
            for task_id, bury in body[0]:
                with self._lock:
                    self._leases.push(task_id, float("-inf"))
                    self._reclaim_one(task_id, bool(bury), body[1])
        elif op == OP_KVSET:
            self._kv[body[0]] = (body[1], body[2])
        elif op == OP_KVDEL:
            self._kv.pop(body[0], None)
        elif op == OP_NAMES:
            self._names.update(body)
        else:
            raise BackendError(f"unknown record type {op} in the write-ahead log")
        return 0

    def _reclaim_one(self, task_id: str, bury: bool, now: float) -> Transition:
        rec = self._records[task_id]
        self._leases.remove(task_id)
        lost = ErrorInfo("WorkerLost", f"lease expired on worker {rec.worker}")
        if bury:
            return self._bury(rec, lost, "worker_lost", now)
        rec.error = lost
        rec.finished_at = now
        self._close_attempt(rec, "LOST")
        tr = self._move(rec, TaskState.PENDING, "lease expired: requeued")
        self._schedule(rec, None, now)
        return tr

    # -- logged operations ---------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task; returns once its record is durable (per the fsync mode)."""
        self._alive()
        with self._lock:
            out = super().enqueue(task, now)
            lsn = self._submit(OP_ENQ, [_task_dict(task), now])
        self._wait(lsn)
        return out

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store several tasks with one wait for durability."""
        self._alive()
        out: list[Transition] = []
        lsn = 0
        with self._lock:
            for t in tasks:
                out.extend(MemoryBackend.enqueue(self, t, now))
                lsn = self._submit(OP_ENQ, [_task_dict(t), now])
        self._wait(lsn)
        return out

    def _claim(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, limit: int, now: float
    ) -> list[Delivery]:
        out = super()._claim(queues, worker_id, lease_s, limit, now)
        if out:
            deadline = now + lease_s
            self._claim_lsn.value = self._submit(
                OP_CLAIM, [[[d.task_id, d.token, worker_id, deadline] for d in out], now]
            )
        return out

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS, durable before it returns."""
        return list(self._call("ack", [task_id, token, result, now]))

    def fail(
        self,
        task_id: str,
        token: int,
        error: ErrorInfo,
        now: float,
        *,
        retry_at: float | None = None,
        dead_reason: str | None = None,
    ) -> list[Transition]:
        """RUNNING -> FAILED -> RETRY or DEAD, durable before it returns."""
        args = [task_id, token, error.to_dict(), now, retry_at, dead_reason]
        return list(self._call("fail", args))

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD."""
        return list(self._call("bury", [task_id, token, error.to_dict(), reason, now]))

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING."""
        return list(self._call("release", [task_id, token, now, eta, note]))

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue expired leases (logged with the decision for each task)."""
        self._alive()
        out: list[Transition] = []
        with self._lock:
            due = self._leases.pop_until(now, 10_000)
            decisions = []
            for task_id in due:
                self._leases.push(task_id, float("-inf"))
                bury = self._records[task_id].deliveries >= max_deliveries
                out.append(self._reclaim_one(task_id, bury, now))
                decisions.append([task_id, int(bury)])
            if decisions:
                self._submit(OP_RECLAIM, [decisions, now])
        return out

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks into their queues (logged)."""
        self._alive()
        with self._lock:
            ids = self._delayed.pop_until(now, limit)
            out = []
            for task_id in ids:
                rec = self._records[task_id]
                if rec.state is TaskState.RETRY:
                    out.append(self._move(rec, TaskState.PENDING))
                self._schedule(rec, None, now)
            if ids:
                self._submit(OP_PROMOTE, [ids, now])
        return out

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        return list(self._call("cancel", [task_id, now]))

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (persisted)."""
        self._alive()
        with self._lock:
            super().set_paused(queue, paused)
            lsn = self._submit(OP_CALL, ["set_paused", [queue, paused]])
        self._wait(lsn)

    def replay(
        self, task_id: str, new_task: NewTask, edit: dict[str, Any] | None, now: float
    ) -> list[Transition]:
        """Enqueue the replay of a dead task (logged)."""
        return list(self._call("replay", [task_id, _task_dict(new_task), edit, now]))

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records (logged)."""
        return int(self._call("purge", [list(task_ids)]) or 0)

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set-if-absent, persisted when it sets."""
        self._alive()
        with self._lock:
            old = super().set_if_absent(key, value, ttl_s, now)
            lsn = self._log_key(key) if old is None else 0
        self._wait(lsn)
        return old

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` (persisted)."""
        self._alive()
        with self._lock:
            super().set_key(key, value, ttl_s, now)
            lsn = self._log_key(key)
        self._wait(lsn)

    def delete_key(self, key: str) -> None:
        """Remove ``key`` (persisted)."""
        self._alive()
        with self._lock:
            super().delete_key(key)
            lsn = self._submit(OP_KVDEL, [key])
        self._wait(lsn)

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Compare-and-set, persisted when it sets."""
        self._alive()
        with self._lock:
            ok = super().compare_and_set(key, expected, value, ttl_s, now)
            lsn = self._log_key(key) if ok else 0
        self._wait(lsn)
        return ok

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA reserve; the bucket state is logged without waiting."""
        self._alive()
        with self._lock:
            wait = super().reserve(key, rate, burst, now)
            self._log_key(key)
        return wait

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names (persisted, so producers can check them after a restart)."""
        self._alive()
        names = sorted(set(names) - self._names)
        if not names:
            return
        with self._lock:
            super().register_names(names)
            lsn = self._submit(OP_NAMES, names)
        self._wait(lsn)

    # -- fail-stop ---------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease tasks (refused once the log failed).

        The claim record reaches the OS before the task runs (no fsync wait): a task
        that kills its process still has its delivery counted, so it ends dead as
        ``worker_lost`` instead of looping.
        """
        self._alive()
        self._claim_lsn.value = 0
        out = super().claim(queues, worker_id, lease_s, limit, now, wait)
        lsn = self._claim_lsn.value
        if lsn:
            self._require_wal().wait_written(lsn)
        return out


def _task_dict(t: NewTask) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "queue": t.queue,
        "priority": t.priority,
        "payload": b2s(t.payload),
        "eta": t.eta,
        "max_retries": t.max_retries,
        "time_limit": t.time_limit,
        "dedup_key": t.dedup_key,
        "replayed_from": t.replayed_from,
        "workflow": t.workflow,
    }


def _new_task(d: dict[str, Any]) -> NewTask:
    return NewTask(
        d["id"],
        d["name"],
        d["queue"],
        int(d["priority"]),
        s2b(d["payload"]),
        d["eta"],
        int(d["max_retries"]),
        d["time_limit"],
        d["dedup_key"],
        d["replayed_from"],
        d["workflow"],
    )


def _decode_args(name: str, args: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Logged arguments of ``MemoryBackend.<name>`` back to a call's args and kwargs."""
    if name == "fail":
        task_id, token, err, now, retry_at, dead_reason = args
        return [task_id, token, ErrorInfo.from_dict(err), now], {
            "retry_at": retry_at,
            "dead_reason": dead_reason,
        }
    if name == "bury":
        return [args[0], args[1], ErrorInfo.from_dict(args[2]), args[3], args[4]], {}
    if name == "replay":
        return [args[0], _new_task(args[1]), args[2], args[3]], {}
    return list(args), {}
