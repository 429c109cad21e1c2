"""``dtq wal repair``: salvage every readable record of a log into fresh segments."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dtq_core.backends.embedded.disk import (
    DEFAULT_SEGMENT_BYTES,
    FsyncFn,
    fsync_directory,
    list_segments,
)
from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    RTYPE_HOLE,
    encode_header,
    encode_record,
    segment_name,
)
from dtq_core.backends.embedded.salvage import (
    Problem,
    VerifyReport,
    header_epoch,
    verify,
    walk_log,
)
from dtq_core.backends.embedded.seal import seal_path

_READY = re.compile(r"^\.repair-(.+)-e(\d+)\.ready$")


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
    walk = walk_log(root)
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
            if header_epoch(path) != int(match[2]):
                os.replace(path, broken / path.name)
                if (seal := seal_path(path)).exists():  # it goes with its segment
                    os.replace(seal, broken / seal.name)
        fsync_directory(broken, fsync_fn)
        for path in sorted(ready.iterdir()):
            os.replace(path, root / path.name)
        fsync_directory(root, fsync_fn)
        ready.rmdir()
        fsync_directory(root, fsync_fn)


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
