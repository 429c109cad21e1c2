"""The write-ahead log: segmented, checksummed, group-committed, fail-stop.

The log stores ``(rtype, body)`` records under contiguous LSNs and knows nothing of what
they mean. Byte layout and the resync scanner live in :mod:`.framing`, reading and
judging a log directory in :mod:`.recovery`, the write path (segment files, group
commit, fail-stop) in :mod:`.write_path`, and the offline tools behind
``dtq wal verify|repair|inspect`` in :mod:`.salvage`; their names are re-exported here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, Self

from dtq_core.backends.embedded.disk import (
    DEFAULT_SEGMENT_BYTES,
    FsyncFn,
    fsync_directory,
    list_segments,
    write_all,
)
from dtq_core.backends.embedded.framing import HEADER_SIZE, MAX_BODY, encode_record
from dtq_core.backends.embedded.recovery import (
    Record,
    RecoveryResult,
    SegmentCorrupted,
    SegmentInfo,
    TailCut,
    read_log,
)
from dtq_core.backends.embedded.repair import RepairReport, finish_interrupted_repair, repair
from dtq_core.backends.embedded.salvage import (
    InspectRow,
    Problem,
    ProblemKind,
    SegmentReport,
    VerifyReport,
    inspect,
    inspect_bodies,
    verify,
)
from dtq_core.backends.embedded.write_path import WritePath
from dtq_core.errors import ConfigError, StoreFailed

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FsyncFn",
    "FsyncMode",
    "InspectRow",
    "Problem",
    "ProblemKind",
    "Record",
    "RecoveryResult",
    "RepairReport",
    "SegmentCorrupted",
    "SegmentInfo",
    "SegmentReport",
    "TailCut",
    "VerifyReport",
    "WriteAheadLog",
    "finish_interrupted_repair",
    "fsync_directory",
    "inspect",
    "inspect_bodies",
    "list_segments",
    "read_log",
    "repair",
    "verify",
    "write_all",
]

#: When each append is fsynced: before it returns, by a background timer, or never.
FsyncMode = Literal["always", "interval", "off"]


class WriteAheadLog(WritePath):
    """An append-only log of typed records with group commit and fail-stop semantics.

    Opening runs recovery: a torn tail is cut (a ``.broken`` copy of the segment is kept
    and a new segment with a new epoch is started), corruption before the tail raises
    :class:`SegmentCorrupted`. The caller applies :meth:`replay` after loading its
    checkpoint, then appends.

    Durability by ``fsync`` mode:

    - ``"always"``: :meth:`append` returns once the record is fsynced. Concurrent
      appenders share fsyncs (group commit): a waiting appender becomes the writer and
      writes everything buffered with one ``write()``, then the syncer and fsyncs
      everything written with one fsync, and wakes all it made durable; the others wait.
    - ``"interval"``: :meth:`append` returns once written to the OS; a background thread
      fsyncs every ``interval_ms``.
    - ``"off"``: no fsync on the append path; :meth:`sync` and :meth:`close` still do.

    Segment rotation and tail cuts fsync in every mode, so a machine crash can lose
    recent records but never leaves a torn segment before the last one.

    If a write or fsync fails, the log fails stop: that append and every later one raise
    :class:`StoreFailed`, nothing is retried, and :attr:`durable_lsn` never advances again.

    Args:
        directory: The log directory; created if missing.
        fsync: The durability mode above.
        interval_ms: Flush period in ``"interval"`` mode.
        segment_bytes: Size past which the active segment is rotated.
        fsync_fn: Called for every file and directory fsync (tests inject failures).

    Raises:
        SegmentCorrupted: Recovery found corruption before the tail.
        StoreFailed: The directory could not be opened or repaired.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fsync: FsyncMode = "always",
        interval_ms: int = 50,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_fn: FsyncFn = os.fsync,
    ) -> None:
        if fsync not in ("always", "interval", "off"):
            raise ConfigError(f"fsync must be 'always', 'interval' or 'off', not {fsync!r}")
        if interval_ms <= 0:
            raise ConfigError("interval_ms must be positive")
        if segment_bytes <= HEADER_SIZE:
            raise ConfigError(f"segment_bytes must exceed the {HEADER_SIZE} byte header")
        super().__init__(Path(directory), interval_ms / 1000, segment_bytes, fsync_fn)
        self._mode: FsyncMode = fsync
        self._flusher: threading.Thread | None = None
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            finish_interrupted_repair(self._dir, self._fsync)
            for stale in self._dir.glob("wal-*.log.tmp"):
                stale.unlink()
            #: What recovery found when the log was opened (before any tail cut).
            self.recovery = read_log(self._dir)
            #: The torn tail cut at open (with its ``.broken`` copy), or ``None``.
            self.tail_cut = self._open_active(self.recovery)
        except OSError as exc:
            if self._fd >= 0:
                os.close(self._fd)
            raise StoreFailed(f"cannot open the write-ahead log in {self._dir}: {exc}") from exc
        self._start_at(self.recovery.next_lsn)
        if fsync == "interval":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="dtq-wal-flusher", daemon=True
            )
            self._flusher.start()

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        fsync: FsyncMode = "always",
        interval_ms: int = 50,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_fn: FsyncFn = os.fsync,
    ) -> Self:
        """Open (recovering) or create the log in ``directory``; same as the constructor."""
        return cls(directory, fsync, interval_ms, segment_bytes, fsync_fn)

    # -- appending -------------------------------------------------------------------

    def append(self, rtype: int, body: bytes) -> int:
        """Append one record and return its LSN once it is as durable as the mode promises.

        Args:
            rtype: Record type, 1..255 (0 is reserved by the log).
            body: Payload, at most ``MAX_BODY`` bytes.

        Raises:
            StoreFailed: This or an earlier write or fsync failed; the record may or may
                not be on disk but was never acknowledged.
            BackendError: The log is closed.
            ValueError: Bad type or oversized body.
        """
        _check_record(rtype, body)
        with self._cond:
            self._check_writable()
            lsn = self._next_lsn
            self._buf += encode_record(self._epoch, lsn, rtype, body)
            self._next_lsn = lsn + 1
            self._await(lsn, durable=self._mode == "always")
        return lsn

    def append_many(self, records: Iterable[tuple[int, bytes]]) -> int:
        """Append records under consecutive LSNs with one write (and one fsync).

        Args:
            records: ``(rtype, body)`` pairs, at least one.

        Returns:
            The LSN of the last record.

        Raises:
            StoreFailed: As for :meth:`append`; none of the batch is acknowledged.
            BackendError: The log is closed.
            ValueError: Empty batch, bad type or oversized body.
        """
        batch = list(records)
        if not batch:
            raise ValueError("append_many needs at least one record")
        for rtype, body in batch:
            _check_record(rtype, body)
        with self._cond:
            self._check_writable()
            lsn = self._next_lsn
            for rtype, body in batch:
                self._buf += encode_record(self._epoch, lsn, rtype, body)
                lsn += 1
            self._next_lsn = lsn
            self._await(lsn - 1, durable=self._mode == "always")
        return lsn - 1

    def submit(self, rtype: int, body: bytes) -> int:
        """Give a record the next LSN and buffer it, without waiting for the disk.

        For an engine that must fix log order under its own lock but should wait for
        durability outside it, so that concurrent callers still share one fsync. The
        record is acknowledged only when :meth:`wait` returns for its LSN.

        Raises:
            StoreFailed: The log has failed.
            BackendError: The log is closed.
            ValueError: Bad type or oversized body.
        """
        _check_record(rtype, body)
        with self._cond:
            self._check_writable()
            lsn = self._next_lsn
            self._buf += encode_record(self._epoch, lsn, rtype, body)
            self._next_lsn = lsn + 1
        return lsn

    def wait(self, lsn: int) -> None:
        """Return once ``lsn`` is as durable as the mode promises (see :meth:`append`).

        Raises:
            StoreFailed: A write or fsync failed before ``lsn`` was made durable.
        """
        with self._cond:
            self._await(lsn, durable=self._mode == "always")

    def wait_written(self, lsn: int) -> None:
        """Return once ``lsn`` is written to the OS, whatever the mode.

        A written record survives a crash of this process, not of the machine.

        Raises:
            StoreFailed: A write failed before ``lsn`` was written.
        """
        with self._cond:
            self._await(lsn, durable=False)

    def sync(self) -> int:
        """Write and fsync everything appended so far, whatever the mode.

        Returns:
            The durable LSN.

        Raises:
            StoreFailed: The log has failed or this fsync failed.
            BackendError: The log is closed.
        """
        with self._cond:
            self._check_writable()
            self._await(self._next_lsn - 1, durable=True)
            return self._durable

    # -- housekeeping ----------------------------------------------------------------

    def replay(self, from_lsn: int = 0, *, include_holes: bool = False) -> Iterator[Record]:
        """Yield the records recovered at open with ``lsn >= from_lsn``, in order.

        Call it before :meth:`truncate_before` removes the segments it reads.
        """
        return self.recovery.records(from_lsn, include_holes=include_holes)

    def close(self) -> None:
        """Write and fsync what is buffered, stop the flusher and close the file.

        Closing a failed log only releases the file. Idempotent.

        Raises:
            StoreFailed: The final write or fsync failed.
        """
        with self._cond:
            if self._closing:
                return
            self._closing = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        try:
            with self._cond:
                if self._failed is None:
                    self._await(self._next_lsn - 1, durable=True)
        finally:
            with self._cond:
                while self._writing or self._syncing:
                    self._cond.wait()
                os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_record(rtype: int, body: bytes) -> None:
    if not 1 <= rtype <= 255:
        raise ValueError(f"record type must be 1..255, not {rtype}")
    if len(body) > MAX_BODY:
        raise ValueError(f"record body of {len(body)} bytes exceeds {MAX_BODY}")
