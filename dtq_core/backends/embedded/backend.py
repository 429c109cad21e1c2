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

The backend composes the in-memory state machine and the log: it is a
:class:`~dtq_core.backends.local.LocalBackend` (the same state machine as ``memory://``)
whose journal is the write-ahead log (:mod:`.journal`). This module owns the directory
(lock, recovery, checkpoints); replay is in :mod:`.replay`, the record codec in
:mod:`.oplog`, version-1 data in :mod:`.legacy`, and the format in ``FORMAT.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dtq_core.backends.base import Capabilities, Transition
from dtq_core.backends.embedded.checkpoint import (
    load_latest_checkpoint,
    prune_checkpoints,
    write_checkpoint,
)
from dtq_core.backends.embedded.deliveries import Received
from dtq_core.backends.embedded.holders import keep_lease, lock_holder
from dtq_core.backends.embedded.journal import WalJournal
from dtq_core.backends.embedded.oplog import LOG_FORMAT
from dtq_core.backends.embedded.replay import Replayer
from dtq_core.backends.embedded.state import dump_state, load_state
from dtq_core.backends.embedded.wal import FsyncFn, FsyncMode, WriteAheadLog
from dtq_core.backends.local import LocalBackend
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import BackendError, ConfigError, StoreCorrupted, StoreLocked
from dtq_core.task import TaskState

# Data directories open in this process (resolved paths).
_OPEN_DIRS: set[str] = set()
_OPEN_LOCK = threading.Lock()


def parse_url(url: str) -> tuple[Path, dict[str, Any]]:
    """``embedded://PATH?opts`` -> (directory, options).

    Raises:
        ConfigError: No path, a path that is a file, or a bad option (naming the fix).
    """
    rest = url.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if not path:
        raise ConfigError("embedded:// needs a directory, e.g. embedded://./dtq-data")
    if Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise ConfigError(
            f"bad embedded URL {url!r}: {path} is a file; the store needs a directory, "
            "e.g. embedded://./dtq-data"
        )
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


class EmbeddedBackend(LocalBackend):
    """The default backend: a local data directory with a write-ahead log."""

    capabilities = Capabilities(
        durable=True, cross_process=False, blocking_claim=True, batch_acks=True
    )
    #: Deliveries after which a task found RUNNING at recovery is dead-lettered.
    max_deliveries = 5
    #: Set before :meth:`open` by a process that takes the store over from a dead owner
    #: while its own workers run: recovery keeps this process's leases...
    took_over = False
    #: ...but those of its workers that claimed through the old owner's socket only if
    #: they received them (a lease whose claim reply died with the owner is requeued).
    received: Received | None = None

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK, fsync_fn: FsyncFn = os.fsync) -> None:
        path, opts = parse_url(url)
        self._log = WalJournal(path)
        super().__init__(url, clock, self._log)
        self.path = path
        self.fsync: FsyncMode = opts.get("fsync", "always")
        self.interval_ms = int(opts.get("interval_ms", 50))
        self.checkpoint_bytes = int(opts.get("checkpoint_mb", 64) * 2**20)
        self.checkpoint_s = float(opts.get("checkpoint_s", 300))
        self.segment_bytes = int(opts.get("segment_mb", 16) * 2**20)
        self.fsync_fn = fsync_fn
        self._lock_fd = -1
        self._stats: dict[str, Any] = {}
        self._ckpt_at_bytes = 0
        self._ckpt_at_time = 0.0
        self._ckpt_lsn = 0
        self._stop = threading.Event()
        self._ckpt_thread: threading.Thread | None = None

    @property
    def _wal(self) -> WriteAheadLog | None:
        """The open log (``None`` while the store is closed)."""
        return self._log.wal

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
                raise StoreLocked(
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
            raise StoreLocked(
                f"data directory {self.path} is owned by process {owner}; brokers in other "
                "processes attach to it through its socket"
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
        if self._state.tasks.records or self._state.keys.kv or self._state.keys.names:
            # Reopened after close(): start from a clean state machine (same settings).
            ttl, most = self.result_ttl, self.max_results
            LocalBackend.__init__(self, self.url, self.clock, self._log)
            self.result_ttl, self.max_results = ttl, most
        self._ckpt_lsn = 0
        ckpt = load_latest_checkpoint(self.path / "checkpoints")
        if ckpt is not None:
            load_state(self._state, ckpt.body, ckpt.version)
            self._ckpt_lsn = ckpt.lsn
        wal = WriteAheadLog(
            self.path / "wal", self.fsync, self.interval_ms, self.segment_bytes, self.fsync_fn
        )
        first = wal.recovery.first_lsn
        if ckpt is not None and first > self._ckpt_lsn + 1 and wal.recovery.segments:
            # The segments between this checkpoint and the log were deleted after a newer
            # checkpoint that is now unreadable: replaying would skip them silently.
            wal.close()
            raise StoreCorrupted(
                f"{self.path}: the newest valid checkpoint is at lsn {self._ckpt_lsn} but the "
                f"log starts at lsn {first}; records in between are gone. Run `dtq wal verify "
                f"{self.path}` and restore the newer checkpoint (skipped: "
                f"{', '.join(str(p) for p in ckpt.skipped) or 'none'})"
            )
        replayer = Replayer(self._state, self.path)
        try:
            replayer.replay(wal.recovery.chunks(self._ckpt_lsn + 1))
        except BaseException:
            wal.close()
            raise
        self._log.wal = wal
        running = self._state.tasks.counts[TaskState.RUNNING]
        requeued = self._requeue_running()
        cut = wal.tail_cut
        found = 1 if replayer.v1_records or (ckpt is not None and ckpt.version == 1) else 2
        self._stats.update(
            checkpoint_lsn=self._ckpt_lsn,
            replayed_records=replayer.records,
            recovered_tasks=sum(
                self._state.tasks.counts[s] for s in (TaskState.PENDING, TaskState.RETRY)
            ),
            requeued_running=running,
            worker_lost=sum(1 for t in requeued if t.new is TaskState.DEAD),
            dropped_bytes=cut.dropped_bytes if cut else 0,
            broken_copy=str(cut.broken_copy or "") if cut else "",
            format_found=found,
            format_version=LOG_FORMAT,
            converted_records=replayer.v1_records,
            converted_checkpoint=ckpt is not None and ckpt.version == 1,
        )
        if replayer.malformed:
            self._stats["malformed_records"] = replayer.malformed
        self._ckpt_at_bytes = 0
        self._ckpt_at_time = time.monotonic()
        if found < LOG_FORMAT:
            # The conversion: the state goes to a version-2 checkpoint, and what recovery
            # reads from now on is version 2 only.
            self._stats["converted_at_lsn"] = self.checkpoint()

    def _requeue_running(self) -> list[Transition]:
        """Requeue every task found RUNNING that no live worker has, logged.

        A lease of a live process (an attached worker, or this process's own after a
        takeover) is kept: requeueing it would run the task twice.
        """
        keep = functools.partial(keep_lease, this_process=self.took_over, received=self.received)
        return self._leases.reclaim_all(self.clock.now(), self.max_deliveries, keep=keep)

    def reclaim_unreceived(
        self, workers: Sequence[str], received: Sequence[tuple[str, int]], now: float
    ) -> list[Transition]:
        """Requeue the leases of ``workers`` (another process's) that they never received.

        That process reattached after its owner stopped answering: what it names is what
        its workers hold; a lease of theirs besides is a claim whose reply was lost. Not
        a worker of this process: a store here has no say over this store's own workers,
        whose ids it may share.
        """
        mine = f"{socket.gethostname()}:{os.getpid()}:"
        named = frozenset(w for w in workers if not w.startswith(mine))
        got = Received(named, frozenset((i, t) for i, t in received))
        return self._leases.reclaim_where(now, self.max_deliveries, got.lost)

    def checkpoint(self) -> int:
        """Write a checkpoint of the live state and drop the log segments it covers."""
        wal = self._log.require()
        with self._lock:
            lsn = wal.next_lsn - 1
            body = dump_state(self._state)
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
                self._log.wal = None
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
                failure=wal.failure,
            )
        return out

    def socket_path(self) -> Path:
        """Where the owner serves the Console API."""
        return self.path / "dtq.sock"


__all__ = ["EmbeddedBackend", "lock_holder", "parse_url"]
