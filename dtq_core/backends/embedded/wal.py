"""The write-ahead log: segmented, checksummed, group-committed, fail-stop.

The log stores ``(rtype, body)`` records under contiguous LSNs and knows nothing of what
they mean. Byte layout and the resync scanner live in :mod:`.framing`. The module ends
with the offline tools behind ``dtq wal verify|repair|inspect``.

Recovery rule: the first bad byte of the log ends the log only if it is a torn tail, that
is, if it sits in the last segment and no valid record of the same epoch with a later LSN
can be found anywhere after it. Anything else (a bad record followed by a valid one, any
damage in an earlier segment, a damaged header, an LSN gap) is corruption: the log
refuses to open and names the segment and byte offset, because skipping it would
silently lose acknowledged records.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple, NoReturn, Self

from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    MAX_BODY,
    RTYPE_HOLE,
    SEGMENT_NAME,
    Damage,
    Frame,
    FrameError,
    decode_header,
    decode_record,
    encode_header,
    encode_record,
    find_next_record,
    iter_segment,
    segment_name,
)
from dtq_core.errors import BackendError, ConfigError, StoreCorrupted, StoreFailed

#: Default size at which the active segment is closed and a new one started.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: When each append is fsynced: before it returns, by a background timer, or never.
FsyncMode = Literal["always", "interval", "off"]
#: Signature of the injectable fsync (``os.fsync`` by default).
FsyncFn = Callable[[int], None]

_HINT = "inspect it with `dtq wal verify` and salvage it with `dtq wal repair`"


class SegmentCorrupted(StoreCorrupted):
    """A segment is damaged before the tail of the log; recovery refuses to guess."""

    def __init__(self, segment: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"WAL segment {segment} is corrupted at byte offset {offset}: {reason}; "
            f"this is not a torn tail, so the log will not open. In {segment.parent}, {_HINT}."
        )
        self.segment = segment
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Record:
    """One logged record."""

    lsn: int
    rtype: int
    body: bytes


@dataclass(frozen=True, slots=True)
class TailCut:
    """A torn or corrupt tail found (and, when opened for writing, cut) by recovery."""

    segment: Path
    offset: int
    dropped_bytes: int
    reason: str
    #: Copy of the segment as it was before the cut; set once the cut is made.
    broken_copy: Path | None = None


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What recovery found in one segment file."""

    path: Path
    epoch: int | None
    first_lsn: int
    records: int
    valid_bytes: int

    @property
    def last_lsn(self) -> int:
        """LSN of the last valid record (``first_lsn - 1`` when the segment is empty)."""
        return self.first_lsn + self.records - 1


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """The outcome of reading a log directory: valid segments, next LSN and any tail cut.

    Iterating it yields every valid record in LSN order; :meth:`records` replays from an
    LSN. Records are read again from the files, so the result stays small.
    """

    directory: Path
    segments: tuple[SegmentInfo, ...]
    next_lsn: int
    tail: TailCut | None
    holes: int

    @property
    def first_lsn(self) -> int:
        """The oldest LSN still in the log (earlier segments may have been truncated)."""
        return self.segments[0].first_lsn if self.segments else self.next_lsn

    @property
    def last_lsn(self) -> int:
        """The newest valid LSN, ``first_lsn - 1`` for an empty log."""
        return self.next_lsn - 1

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def records(self, from_lsn: int = 0, *, include_holes: bool = False) -> Iterator[Record]:
        """Yield the valid records with ``lsn >= from_lsn`` in LSN order.

        Args:
            from_lsn: First LSN wanted (typically the checkpoint's LSN + 1).
            include_holes: Also yield the ``RTYPE_HOLE`` markers a repair left for lost
                LSNs; they are skipped (and counted in ``holes``) by default.

        Raises:
            SegmentCorrupted: A segment changed on disk since recovery.
        """
        for info in self.segments:
            if info.records == 0 or info.last_lsn < from_lsn or info.epoch is None:
                continue
            with info.path.open("rb") as fh:
                data = fh.read(info.valid_bytes)
            seen = 0
            for item in iter_segment(data, info.epoch, info.first_lsn):
                if isinstance(item, Damage):
                    raise SegmentCorrupted(info.path, item.offset, "changed since recovery")
                seen += 1
                if item.lsn >= from_lsn and (include_holes or item.rtype != RTYPE_HOLE):
                    yield Record(item.lsn, item.rtype, item.body)
            if seen != info.records:
                raise SegmentCorrupted(info.path, info.valid_bytes, "changed since recovery")


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of ``directory`` as ``(first_lsn, path)``, oldest first."""
    found = []
    for path in directory.iterdir():
        match = SEGMENT_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match[1]), path))
    return sorted(found)


def fsync_directory(directory: Path, fsync_fn: FsyncFn = os.fsync) -> None:
    """Make renames, creations and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fsync_fn(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_log(directory: str | os.PathLike[str]) -> RecoveryResult:
    """Validate a log directory without changing it.

    Args:
        directory: The log directory (it may be empty or missing).

    Returns:
        The valid segments, the next LSN, and the torn tail that opening for writing will
        cut, if any.

    Raises:
        SegmentCorrupted: Damage before the tail, a damaged segment header, an LSN gap,
            or a pending interrupted repair.
    """
    root = Path(directory)
    if not root.is_dir():
        return RecoveryResult(root, (), 1, None, 0)
    pending = sorted(root.glob(".repair-*.ready"))
    if pending:
        raise StoreCorrupted(
            f"an interrupted repair of {root} is pending ({pending[0].name}); opening the "
            "log or rerunning `dtq wal repair` finishes it"
        )
    files = list_segments(root)
    infos: list[SegmentInfo] = []
    tail: TailCut | None = None
    expected: int | None = None
    last_epoch = 0
    holes = 0
    for index, (name_lsn, path) in enumerate(files):
        is_last = index == len(files) - 1
        data = path.read_bytes()
        if expected is not None and name_lsn != expected:
            raise SegmentCorrupted(path, 0, f"starts at lsn {name_lsn}, expected {expected}")
        try:
            header = decode_header(data)
        except FrameError as exc:
            if is_last and not data[HEADER_SIZE:].strip(b"\0"):
                # A segment whose creation was torn: nothing was ever acknowledged in it.
                tail = TailCut(path, 0, len(data), exc.reason)
                infos.append(SegmentInfo(path, None, name_lsn, 0, 0))
                break
            raise SegmentCorrupted(path, 0, exc.reason) from None
        if header.first_lsn != name_lsn:
            raise SegmentCorrupted(path, 0, f"header says first lsn {header.first_lsn}")
        if header.epoch < last_epoch:
            raise SegmentCorrupted(path, 0, f"epoch {header.epoch} after epoch {last_epoch}")
        last_epoch = header.epoch
        count, end = 0, HEADER_SIZE
        for item in iter_segment(data, header.epoch, name_lsn):
            if isinstance(item, Damage):
                if item.resume is not None:
                    raise SegmentCorrupted(
                        path,
                        item.offset,
                        f"{item.reason}, yet a valid record (lsn {item.resume.lsn}) "
                        f"follows at offset {item.resume.offset}",
                    )
                if not is_last:
                    raise SegmentCorrupted(
                        path, item.offset, f"{item.reason} (not the last segment)"
                    )
                tail = TailCut(path, item.offset, len(data) - item.offset, item.reason)
                break
            count += 1
            end = item.end
            holes += item.rtype == RTYPE_HOLE
        infos.append(SegmentInfo(path, header.epoch, name_lsn, count, end))
        expected = name_lsn + count
    next_lsn = expected if expected is not None else (infos[-1].first_lsn if infos else 1)
    return RecoveryResult(root, tuple(infos), next_lsn, tail, holes)


class WriteAheadLog:
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
        self._dir = Path(directory)
        self._mode: FsyncMode = fsync
        self._interval = interval_ms / 1000
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
        self._flusher: threading.Thread | None = None
        self._segments: list[tuple[int, Path]] = []
        self._fd = -1
        self._seg_size = 0
        self._epoch = 0
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
        self._next_lsn = self.recovery.next_lsn
        self._written = self._durable = self._next_lsn - 1
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
        self._fd, self._seg_size = fd, HEADER_SIZE
        self._segments.append((first_lsn, path))

    def _fsync(self, fd: int) -> None:
        self._fsync_fn(fd)
        with self._stats_lock:
            self._fsyncs += 1

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
            self._seg_size += len(data)
            if self._seg_size >= self._segment_bytes:
                self._rotate(upto)
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

    def _rotate(self, upto: int) -> None:
        """Seal the active segment (fsynced in every mode) and start the next one.

        Called by the writer; it also takes the syncer role so that no fsync is running
        on the file descriptor it closes.
        """
        while self._syncing:
            self._cond.wait()
        self._check_writable()
        self._syncing = True
        try:
            old = self._fd
            self._cond.release()
            try:
                self._fsync(old)  # the old segment is whole before the next one exists
                fd, path = self._create_segment(upto + 1)
                os.close(old)
            finally:
                self._cond.acquire()
            self._fd, self._seg_size = fd, HEADER_SIZE
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

    # -- housekeeping ----------------------------------------------------------------

    def replay(self, from_lsn: int = 0, *, include_holes: bool = False) -> Iterator[Record]:
        """Yield the records recovered at open with ``lsn >= from_lsn``, in order.

        Call it before :meth:`truncate_before` removes the segments it reads.
        """
        return self.recovery.records(from_lsn, include_holes=include_holes)

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
    def bytes_written(self) -> int:
        """Record bytes handed to the OS since open."""
        with self._cond:
            return self._bytes_written

    @property
    def fsync_count(self) -> int:
        """Successful fsync calls since open (files and directories)."""
        with self._stats_lock:
            return self._fsyncs


def _check_record(rtype: int, body: bytes) -> None:
    if not 1 <= rtype <= 255:
        raise ValueError(f"record type must be 1..255, not {rtype}")
    if len(body) > MAX_BODY:
        raise ValueError(f"record body of {len(body)} bytes exceeds {MAX_BODY}")


# -- offline tools behind `dtq wal verify | repair | inspect` -------------------------

#: Kinds of problem :func:`verify` reports; only ``torn-tail`` lets the log open as is.
ProblemKind = Literal["torn-tail", "corrupt", "gap", "bad-header"]

_READY = re.compile(r"^\.repair-(.+)-e(\d+)\.ready$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of :func:`verify`, located by segment file name and byte offset."""

    segment: str
    offset: int
    kind: ProblemKind
    detail: str


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What :func:`verify` found in one segment."""

    name: str
    size: int
    epoch: int | None
    records: int
    first_lsn: int | None
    last_lsn: int | None
    unreadable_bytes: int
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of :func:`verify` over a whole log directory."""

    directory: Path
    segments: tuple[SegmentReport, ...]

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every problem, in log order."""
        return tuple(p for seg in self.segments for p in seg.problems)

    @property
    def ok(self) -> bool:
        """No problem at all."""
        return not self.problems

    @property
    def openable(self) -> bool:
        """The log opens as is (at most a torn tail, which opening cuts)."""
        return all(p.kind == "torn-tail" for p in self.problems)

    @property
    def records(self) -> int:
        """Valid records found."""
        return sum(seg.records for seg in self.segments)


@dataclass(frozen=True, slots=True)
class RepairReport:
    """The result of :func:`repair`."""

    directory: Path
    #: False when the log had no problem and nothing was touched.
    changed: bool
    epoch: int | None
    salvaged: int
    #: Inclusive LSN ranges lost before the tail; each LSN now holds an ``RTYPE_HOLE``.
    lost: tuple[tuple[int, int], ...]
    dropped_bytes: int
    problems: tuple[Problem, ...]
    broken_dir: Path | None
    segments: tuple[Path, ...]


class InspectRow(NamedTuple):
    """One record as listed by :func:`inspect`."""

    lsn: int
    rtype: int
    length: int
    segment: str
    offset: int


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Check every segment and record of a log without modifying anything.

    Unlike recovery, verification goes on past damage (resyncing on the next valid
    record) so that it reports every problem.
    """
    walk = _walk(Path(directory))
    while True:
        try:
            next(walk)
        except StopIteration as stop:
            report: VerifyReport = stop.value
            return report


def inspect(directory: str | os.PathLike[str], limit: int | None = None) -> Iterator[InspectRow]:
    """Yield the valid records of a log (as :func:`verify` finds them), at most ``limit``."""
    if limit is not None and limit <= 0:
        return
    for count, (path, frame) in enumerate(_walk(Path(directory)), start=1):
        yield InspectRow(frame.lsn, frame.rtype, len(frame.body), path.name, frame.offset)
        if count == limit:
            return


def repair(
    directory: str | os.PathLike[str],
    *,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    fsync_fn: FsyncFn = os.fsync,
) -> RepairReport:
    """Salvage every readable record into fresh segments of a new epoch.

    LSNs are kept (a checkpoint's LSN stays meaningful); each LSN lost before the tail is
    filled with an ``RTYPE_HOLE`` marker so the log stays contiguous, and reported. The
    original segments move to ``broken-<timestamp>/``. The swap is crash-safe: the new
    log is complete in a staging folder before any original moves, and an interrupted
    swap is finished by the next :func:`repair` or open.

    Args:
        directory: The log directory.
        segment_bytes: Size of the new segments.
        fsync_fn: Used for every file and directory fsync.

    Returns:
        What was salvaged and dropped; ``changed`` is False for a log without problems.
    """
    root = Path(directory)
    if root.is_dir():
        finish_interrupted_repair(root, fsync_fn)
    before = verify(root)
    if before.ok:
        return RepairReport(root, False, None, before.records, (), 0, (), None, ())
    files = list_segments(root)
    epoch = max((s.epoch for s in before.segments if s.epoch is not None), default=0) + 1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    while (root / f"broken-{stamp}").exists():
        stamp += "+"
    staging = root / f".repair-{stamp}-e{epoch}.tmp"
    staging.mkdir()
    sink = _SegmentSink(staging, epoch, segment_bytes, fsync_fn)
    expected = files[0][0]
    lost: list[tuple[int, int]] = []
    salvaged = 0
    walk = _walk(root)
    while True:
        try:
            _, frame = next(walk)
        except StopIteration as stop:
            report: VerifyReport = stop.value
            break
        if frame.lsn > expected:
            lost.append((expected, frame.lsn - 1))
            for hole in range(expected, frame.lsn):
                sink.add(hole, RTYPE_HOLE, b"")
        sink.add(frame.lsn, frame.rtype, frame.body)
        salvaged += frame.rtype != RTYPE_HOLE
        expected = frame.lsn + 1
    names = sink.finish(expected)
    os.replace(staging, root / f".repair-{stamp}-e{epoch}.ready")
    fsync_directory(root, fsync_fn)
    finish_interrupted_repair(root, fsync_fn)
    return RepairReport(
        directory=root,
        changed=True,
        epoch=epoch,
        salvaged=salvaged,
        lost=tuple(lost),
        dropped_bytes=sum(seg.unreadable_bytes for seg in report.segments),
        problems=report.problems,
        broken_dir=root / f"broken-{stamp}",
        segments=tuple(root / name for name in names),
    )


def finish_interrupted_repair(root: Path, fsync_fn: FsyncFn = os.fsync) -> None:
    """Roll back a repair that had not finished its new log, roll forward one that had."""
    for staging in root.glob(".repair-*.tmp"):
        shutil.rmtree(staging)
    for ready in sorted(root.glob(".repair-*.ready")):
        match = _READY.match(ready.name)
        if match is None:
            continue
        broken = root / f"broken-{match[1]}"
        broken.mkdir(exist_ok=True)
        for _, path in list_segments(root):
            # New segments carry the repair's epoch; every original has a smaller one.
            if _header_epoch(path) != int(match[2]):
                os.replace(path, broken / path.name)
        fsync_directory(broken, fsync_fn)
        for path in sorted(ready.iterdir()):
            os.replace(path, root / path.name)
        fsync_directory(root, fsync_fn)
        ready.rmdir()
        fsync_directory(root, fsync_fn)


def _header_epoch(path: Path) -> int | None:
    with path.open("rb") as fh:
        head = fh.read(HEADER_SIZE)
    try:
        return decode_header(head).epoch
    except FrameError:
        return None


def _guess_epoch(data: bytes, first_lsn: int, neighbours: list[int | None]) -> int | None:
    """The epoch under which the records of a segment with a damaged header validate.

    Adjacent segments differ by at most one epoch (a cut starts the next segment at
    epoch + 1, a repair writes one epoch), so the neighbours' epochs narrow the search;
    a lone segment tries the first 256 epochs.
    """
    known = {e + step for e in neighbours if e is not None for step in (-1, 0, 1) if e + step}
    candidates = sorted(known, reverse=True) or list(range(1, 257))
    for epoch in candidates:  # the first record is usually intact
        try:
            decode_record(data, HEADER_SIZE, epoch, first_lsn)
        except FrameError:
            continue
        return epoch
    window = data[: HEADER_SIZE + (1 << 20)]
    for epoch in candidates:
        if find_next_record(window, HEADER_SIZE, epoch, first_lsn) is not None:
            return epoch
    return None


def _walk(root: Path) -> Generator[tuple[Path, Frame], None, VerifyReport]:
    """Yield every valid record in log order, resyncing past damage; return the report."""
    files = list_segments(root) if root.is_dir() else []
    epochs = [_header_epoch(path) for _, path in files]
    reports: list[SegmentReport] = []
    expected: int | None = None
    last_lsn = 0
    for index, (name_lsn, path) in enumerate(files):
        data = path.read_bytes()
        is_last = index == len(files) - 1
        problems: list[Problem] = []
        epoch: int | None = None
        try:
            header = decode_header(data)
            epoch = header.epoch
            if header.first_lsn != name_lsn:
                detail = f"header says first lsn {header.first_lsn}, file name {name_lsn}"
                problems.append(Problem(path.name, 0, "corrupt", detail))
        except FrameError as exc:
            if is_last and not data[HEADER_SIZE:].strip(b"\0"):
                detail = f"{exc.reason}; an unfinished segment without records"
                problems.append(Problem(path.name, 0, "torn-tail", detail))
                reports.append(
                    SegmentReport(
                        path.name, len(data), None, 0, None, None, len(data), tuple(problems)
                    )
                )
                continue
            problems.append(Problem(path.name, 0, "bad-header", exc.reason))
            before = [e for e in epochs[:index] if e is not None]
            after = [e for e in epochs[index + 1 :] if e is not None]
            neighbours = [before[-1] if before else None, after[0] if after else None]
            epoch = _guess_epoch(data, name_lsn, neighbours)
        if expected is not None and name_lsn != expected:
            detail = f"segment starts at lsn {name_lsn}, expected {expected}"
            problems.append(Problem(path.name, 0, "gap", detail))
        count = unreadable = 0
        first: int | None = None
        last: int | None = None
        if epoch is None:
            unreadable = len(data) - HEADER_SIZE
            detail = "no record validates under any known epoch"
            problems.append(Problem(path.name, HEADER_SIZE, "corrupt", detail))
        else:
            want = name_lsn
            for item in iter_segment(data, epoch, name_lsn, resync=True):
                if isinstance(item, Damage):
                    if item.resume is None:
                        unreadable += len(data) - item.offset
                        detail = f"{item.reason}; the last {len(data) - item.offset} bytes"
                        kind: ProblemKind = "torn-tail" if is_last else "corrupt"
                        problems.append(Problem(path.name, item.offset, kind, detail))
                    else:
                        skipped = item.resume.offset - item.offset
                        unreadable += skipped
                        detail = (
                            f"{item.reason}; {skipped} bytes skipped to lsn {item.resume.lsn} "
                            f"at offset {item.resume.offset}"
                        )
                        if item.resume.lsn > want:
                            detail += f", lsns {want}..{item.resume.lsn - 1} lost"
                        problems.append(Problem(path.name, item.offset, "corrupt", detail))
                    continue
                want = item.lsn + 1
                if item.lsn <= last_lsn:
                    detail = f"lsn {item.lsn} repeats an earlier record"
                    problems.append(Problem(path.name, item.offset, "corrupt", detail))
                    continue
                count += 1
                first = item.lsn if first is None else first
                last = last_lsn = item.lsn
                yield path, item
        expected = last + 1 if last is not None else name_lsn
        reports.append(
            SegmentReport(
                path.name, len(data), epoch, count, first, last, unreadable, tuple(problems)
            )
        )
    return VerifyReport(root, tuple(reports))


class _SegmentSink:
    """Writes salvaged records into fresh segments (offline, so plain buffered files)."""

    def __init__(self, directory: Path, epoch: int, segment_bytes: int, fsync_fn: FsyncFn):
        self._dir = directory
        self._epoch = epoch
        self._segment_bytes = segment_bytes
        self._fsync_fn = fsync_fn
        self._file: BinaryIO | None = None
        self._size = 0
        self.names: list[str] = []

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._fsync_fn(self._file.fileno())
            self._file.close()
            self._file = None

    def _start(self, first_lsn: int) -> None:
        self._close()
        name = segment_name(first_lsn)
        self._file = (self._dir / name).open("wb")
        self._file.write(encode_header(self._epoch, first_lsn))
        self._size = HEADER_SIZE
        self.names.append(name)

    def add(self, lsn: int, rtype: int, body: bytes) -> None:
        if self._file is None or self._size >= self._segment_bytes:
            self._start(lsn)
        frame = encode_record(self._epoch, lsn, rtype, body)
        assert self._file is not None
        self._file.write(frame)
        self._size += len(frame)

    def finish(self, next_lsn: int) -> list[str]:
        if self._file is None:
            self._start(next_lsn)
        self._close()
        fsync_directory(self._dir, self._fsync_fn)
        return self.names
