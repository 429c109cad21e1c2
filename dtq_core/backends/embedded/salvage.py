"""Offline tools behind ``dtq wal verify|repair|inspect``: find, list and salvage records."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from dtq_core.backends.embedded.disk import (
    DEFAULT_SEGMENT_BYTES,
    FsyncFn,
    fsync_directory,
    list_segments,
)
from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    RTYPE_HOLE,
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
    for row, _ in inspect_bodies(directory, limit):
        yield row


def inspect_bodies(
    directory: str | os.PathLike[str], limit: int | None = None
) -> Iterator[tuple[InspectRow, bytes]]:
    """As :func:`inspect`, each row with the record's body."""
    if limit is not None and limit <= 0:
        return
    for count, (path, frame) in enumerate(_walk(Path(directory)), start=1):
        yield (
            InspectRow(frame.lsn, frame.rtype, len(frame.body), path.name, frame.offset),
            frame.body,
        )
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
