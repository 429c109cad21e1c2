"""The write path of the log: segment files, group commit, rotation and fail-stop."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import zlib
from pathlib import Path
from typing import NoReturn

from dtq_core.backends.embedded.disk import FsyncFn, fsync_directory, write_all
from dtq_core.backends.embedded.framing import HEADER_SIZE, encode_header, segment_name
from dtq_core.backends.embedded.recovery import RecoveryResult, TailCut
from dtq_core.backends.embedded.seal import Seal, drop_seal, last_record, write_seal
from dtq_core.errors import BackendError, StoreFailed


class WritePath:
    """The I/O machinery behind :class:`~dtq_core.backends.embedded.wal.WriteAheadLog`.

    It opens the active segment after recovery (cutting a torn tail), creates and
    rotates segments atomically, runs group commit with its writer and syncer roles and
    fail-stop, deletes segments a checkpoint covers, and reports the log's figures.

    Args:
        directory: The log directory.
        interval_s: Flush period of the ``interval`` fsync mode.
        segment_bytes: Size past which the active segment is rotated.
        fsync_fn: Called for every file and directory fsync.
    """

    def __init__(
        self, directory: Path, interval_s: float, segment_bytes: int, fsync_fn: FsyncFn
    ) -> None:
        self._dir = directory
        self._interval = interval_s
        self._segment_bytes = segment_bytes
        self._fsync_fn = fsync_fn
        self._cond = threading.Condition(threading.Lock())
        self._stats_lock = threading.Lock()
        self._fsyncs = 0
        self._bytes_written = 0
        self._buf = bytearray()
        self._writing = False
        self._syncing = False
        self._failed: BaseException | None = None
        self._closing = False
        self._stop = threading.Event()
        self._segments: list[tuple[int, Path]] = []
        self._fd = -1
        self._seg_size = 0
        # The active segment's first LSN, holes and CRC so far: its seal's, at rotation.
        self._seg_first = self._seg_holes = self._seg_crc = 0
        self._epoch = 0
        # Set once recovery has read the log (see :meth:`_start_at`).
        self._next_lsn = self._written = self._durable = 0

    def _start_at(self, next_lsn: int) -> None:
        """Appends continue at ``next_lsn``; everything before it is on disk."""
        self._next_lsn = next_lsn
        self._written = self._durable = next_lsn - 1

    # -- opening ---------------------------------------------------------------------

    def _open_active(self, result: RecoveryResult) -> TailCut | None:
        self._segments = [(info.first_lsn, info.path) for info in result.segments]
        epochs = [info.epoch for info in result.segments if info.epoch is not None]
        tail = result.tail
        if tail is None and result.segments:
            last = result.segments[-1]
            assert last.epoch is not None  # only a torn tail has an unreadable header
            self._epoch = last.epoch
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
            self._seg_size = os.fstat(self._fd).st_size
            self._seg_first, self._seg_holes, self._seg_crc = last.first_lsn, last.holes, last.crc
            # The previous owner may have died before fsyncing what it wrote.
            self._fsync(self._fd)
            return None
        # A fresh log, or one whose tail was cut: new records go to a segment of a new epoch
        # so that no byte left from the old one can ever validate in it.
        self._epoch = max(epochs, default=0) + 1
        if tail is None:
            self._install_segment(1)
            return None
        broken = self._keep_broken_copy(tail.segment)
        last = result.segments[-1]
        if last.records:
            with last.path.open("r+b") as fh:
                fh.truncate(tail.offset)
                fh.flush()
                self._fsync(fh.fileno())
            self._install_segment(result.next_lsn)
        else:
            self._segments.pop()
            self._install_segment(last.first_lsn)  # atomically replaces the torn file
        return dataclasses.replace(tail, broken_copy=broken)

    def _keep_broken_copy(self, segment: Path) -> Path:
        target = segment.with_name(segment.name + ".broken")
        suffix = 0
        while target.exists():
            suffix += 1
            target = segment.with_name(f"{segment.name}.broken.{suffix}")
        shutil.copyfile(segment, target)
        with target.open("rb") as fh:
            self._fsync(fh.fileno())
        fsync_directory(self._dir, self._fsync)
        return target

    def _create_segment(self, first_lsn: int) -> tuple[int, Path]:
        """Create the segment starting at ``first_lsn`` atomically; return its fd and path.

        The header is written and fsynced under a temp name, then renamed into place
        (replacing a torn segment of the same name, if any) and the directory fsynced.
        """
        path = self._dir / segment_name(first_lsn)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            write_all(fd, encode_header(self._epoch, first_lsn))
            self._fsync(fd)
            os.replace(tmp, path)
            fsync_directory(self._dir, self._fsync)
        except BaseException:
            os.close(fd)
            raise
        return fd, path

    def _install_segment(self, first_lsn: int) -> None:
        fd, path = self._create_segment(first_lsn)
        self._started(fd, first_lsn)
        self._segments.append((first_lsn, path))

    def _started(self, fd: int, first_lsn: int) -> None:
        self._fd, self._seg_size, self._seg_first, self._seg_holes = fd, HEADER_SIZE, first_lsn, 0
        self._seg_crc = zlib.crc32(encode_header(self._epoch, first_lsn))

    def _fsync(self, fd: int) -> None:
        self._fsync_fn(fd)
        with self._stats_lock:
            self._fsyncs += 1

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise StoreFailed(
                f"the write-ahead log in {self._dir} failed earlier ({self._failed!r}) "
                "and accepts no more writes; restart to recover"
            ) from self._failed
        if self._closing:
            raise BackendError(f"the write-ahead log in {self._dir} is closed")

    def _await(self, lsn: int, *, durable: bool) -> None:
        """With the lock held, return once ``lsn`` is written (or durable).

        A waiter takes whichever role is free and needed: the writer writes the whole
        buffer with one ``write()``, the syncer fsyncs everything written so far. One
        thread holds each role at a time; the I/O runs without the lock, so followers
        keep filling the next batch, and a batch can be written while the previous one
        is being fsynced.
        """
        while self._durable < lsn and (durable or self._written < lsn):
            if self._failed is not None:
                self._check_writable()
            if self._written < lsn:
                if self._writing:
                    self._cond.wait()
                else:
                    self._write_batch()
            elif self._syncing:
                self._cond.wait()
            else:
                self._sync_written()

    def _write_batch(self) -> None:
        self._writing = True
        data, self._buf = self._buf, bytearray()
        upto = self._next_lsn - 1
        try:
            self._cond.release()
            try:
                write_all(self._fd, data)
            finally:
                self._cond.acquire()
            self._written = upto
            self._bytes_written += len(data)
            start, self._seg_size = self._seg_size, self._seg_size + len(data)
            self._seg_crc = zlib.crc32(data, self._seg_crc)
            if self._seg_size >= self._segment_bytes:
                records, last = upto - self._seg_first + 1, start + last_record(data)
                self._rotate(
                    upto, Seal(records, self._seg_size, last, self._seg_holes, self._seg_crc)
                )
        except BaseException as exc:  # fail-stop, whatever it was: nothing is retried
            self._fail(exc)
        finally:
            self._writing = False
            self._cond.notify_all()

    def _sync_written(self) -> None:
        self._syncing = True
        upto, fd = self._written, self._fd
        try:
            self._cond.release()
            try:
                self._fsync(fd)
            finally:
                self._cond.acquire()
            self._durable = max(self._durable, upto)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._syncing = False
            self._cond.notify_all()

    def _rotate(self, upto: int, seal: Seal) -> None:
        """Seal the active segment (fsynced in every mode) and start the next one.

        Called by the writer; it also takes the syncer role so that no fsync is running
        on the file descriptor it closes.
        """
        while self._syncing:
            self._cond.wait()
        self._check_writable()
        self._syncing = True
        try:
            old, old_path = self._fd, self._segments[-1][1]
            self._cond.release()
            try:
                self._fsync(old)  # the old segment is whole before the next one exists
                write_seal(old_path, seal)  # after the fsync: a seal never outlives its bytes
                fd, path = self._create_segment(upto + 1)
                os.close(old)
            finally:
                self._cond.acquire()
            self._started(fd, upto + 1)
            self._segments.append((upto + 1, path))
            self._durable = max(self._durable, upto)
        finally:
            self._syncing = False

    def _fail(self, exc: BaseException) -> NoReturn:
        if self._failed is None:
            self._failed = exc
        raise StoreFailed(
            f"write-ahead log I/O failed in {self._dir}: {exc!r}; records after lsn "
            f"{self._durable} are not acknowledged and the log accepts no more writes"
        ) from exc

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._cond:
                if self._failed is not None or self._closing:
                    return
                if self._durable < self._next_lsn - 1:
                    try:
                        self._await(self._next_lsn - 1, durable=True)
                    except StoreFailed:
                        return  # recorded in self._failed; the next append reports it

    # -- segments and figures -------------------------------------------------------

    def truncate_before(self, lsn: int) -> list[Path]:
        """Delete the segments whose records all have LSNs below ``lsn``.

        Used after a checkpoint covering everything before ``lsn``. The active segment
        is never deleted.

        Returns:
            The deleted segment files.

        Raises:
            StoreFailed: The directory fsync failed (the log fails stop).
        """
        with self._cond:
            self._check_writable()
            doomed: list[Path] = []
            while len(self._segments) > 1 and self._segments[1][0] <= lsn:
                doomed.append(self._segments.pop(0)[1])
        if not doomed:
            return doomed
        try:
            for path in doomed:
                path.unlink(missing_ok=True)
                drop_seal(path)
            fsync_directory(self._dir, self._fsync)
        except OSError as exc:
            with self._cond:
                self._failed = self._failed or exc
            raise StoreFailed(f"could not remove old WAL segments: {exc}") from exc
        return doomed

    def segments(self) -> list[Path]:
        """The segment files of the log, oldest first; the last one is active."""
        with self._cond:
            return [path for _, path in self._segments]

    @property
    def directory(self) -> Path:
        """The log directory."""
        return self._dir

    @property
    def epoch(self) -> int:
        """The epoch new records are written in."""
        return self._epoch

    @property
    def next_lsn(self) -> int:
        """The LSN the next append will get."""
        with self._cond:
            return self._next_lsn

    @property
    def durable_lsn(self) -> int:
        """The highest LSN known fsynced; never advances once the log has failed."""
        with self._cond:
            return self._durable

    @property
    def failed(self) -> bool:
        """Whether the log has failed stop."""
        with self._cond:
            return self._failed is not None

    @property
    def failure(self) -> str | None:
        """The I/O error the log failed stop on (``None`` while it works)."""
        with self._cond:
            exc = self._failed
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.strerror:
            return f"{type(exc).__name__}: {exc.strerror}"
        return f"{type(exc).__name__}: {exc}"

    @property
    def bytes_written(self) -> int:
        """Record bytes handed to the OS since open."""
        with self._cond:
            return self._bytes_written

    @property
    def fsync_count(self) -> int:
        """Successful fsync calls since open (files and directories)."""
        with self._stats_lock:
            return self._fsyncs
