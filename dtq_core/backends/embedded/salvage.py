"""Offline tools behind ``dtq wal verify|inspect``: find and list every readable record.

``dtq wal repair`` salvages what they find (:mod:`.repair`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from dtq_core.backends.embedded.disk import (
    list_segments,
)
from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    Damage,
    Frame,
    FrameError,
    decode_header,
    decode_record,
    find_next_record,
    iter_segment,
)

#: Kinds of problem :func:`verify` reports; only ``torn-tail`` lets the log open as is.
ProblemKind = Literal["torn-tail", "corrupt", "gap", "bad-header"]


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
    walk = walk_log(Path(directory))
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
    for count, (path, frame) in enumerate(walk_log(Path(directory)), start=1):
        yield (
            InspectRow(frame.lsn, frame.rtype, len(frame.body), path.name, frame.offset),
            frame.body,
        )
        if count == limit:
            return


def header_epoch(path: Path) -> int | None:
    """The epoch in a segment's header, or ``None`` when the header is damaged."""
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


def walk_log(root: Path) -> Generator[tuple[Path, Frame], None, VerifyReport]:
    """Yield every valid record in log order, resyncing past damage; return the report."""
    files = list_segments(root) if root.is_dir() else []
    epochs = [header_epoch(path) for _, path in files]
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
