"""Recovery of the write-ahead log: reading a log directory and judging its damage.

Recovery rule: the first bad byte of the log ends the log only if it is a torn tail, that
is, if it sits in the last segment and no valid record of the same epoch with a later LSN
can be found anywhere after it. Anything else (a bad record followed by a valid one, any
damage in an earlier segment, a damaged header, an LSN gap) is corruption: the log
refuses to open and names the segment and byte offset, because skipping it would
silently lose acknowledged records.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dtq_core.backends.embedded.disk import list_segments, read_mapped
from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    RECORD_HEADER_SIZE,
    RTYPE_HOLE,
    Damage,
    FrameError,
    SegmentBytes,
    decode_header,
    iter_segment,
    scan_valid,
    unpack_record_header,
)
from dtq_core.backends.embedded.seal import sealed
from dtq_core.errors import StoreCorrupted

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
    #: ``zlib.crc32`` of the segment's first ``valid_bytes``: replay reads them again
    #: and checks this one sum instead of every record's.
    crc: int = 0
    #: Holes among its records.
    holes: int = 0

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
        for lsn, rtype, body in self.raw(from_lsn, include_holes=include_holes):
            yield Record(lsn, rtype, body)

    def raw(
        self, from_lsn: int = 0, *, include_holes: bool = False
    ) -> Iterator[tuple[int, int, bytes]]:
        """As :meth:`records`, each record as a ``(lsn, type, body)`` tuple."""
        for data, offset, lsn, end_lsn in self.chunks(from_lsn):
            bodies = iter_bodies(data, offset, lsn, end_lsn)
            if include_holes:
                yield from bodies
            else:
                yield from (item for item in bodies if item[1] != RTYPE_HOLE)

    def chunks(self, from_lsn: int = 0) -> Iterator[tuple[SegmentBytes, int, int, int]]:
        """Per segment with records from ``from_lsn``: ``(bytes, offset, lsn, end lsn)``.

        The segment's valid bytes (checked against the sum recovery took), the offset of
        its first record with ``lsn >= from_lsn``, that LSN, and the LSN past its last
        record: replay reads the frames itself (see :func:`iter_bodies`).

        Raises:
            SegmentCorrupted: A segment changed on disk since recovery.
        """
        for info in self.segments:
            if info.records == 0 or info.last_lsn < from_lsn or info.epoch is None:
                continue
            data = read_mapped(info.path, info.valid_bytes)
            if len(data) != info.valid_bytes or zlib.crc32(data) != info.crc:
                raise SegmentCorrupted(info.path, 0, "changed since recovery")
            offset, lsn = skip_records(data, info.first_lsn, info.records, from_lsn)
            yield data, offset, lsn, info.first_lsn + info.records


def skip_records(data: SegmentBytes, first_lsn: int, count: int, from_lsn: int) -> tuple[int, int]:
    """``(offset, lsn)`` of the first record with ``lsn >= from_lsn`` of a checked segment.

    ``count`` records from ``first_lsn``; past the last one when none is that new.
    """
    unpack = unpack_record_header
    offset, lsn = HEADER_SIZE, first_lsn
    while lsn < from_lsn and lsn < first_lsn + count:  # a checkpoint has them
        offset += RECORD_HEADER_SIZE + unpack(data, offset)[0]
        lsn += 1
    return offset, lsn


def iter_bodies(
    data: SegmentBytes, offset: int, lsn: int, end_lsn: int
) -> Iterator[tuple[int, int, bytes]]:
    """``(lsn, type, body)`` of the records of a segment already checked.

    From the record at ``offset`` (its LSN is ``lsn``) up to ``end_lsn``. No checksum is
    computed: the caller proved the bytes are those :func:`scan_valid` accepted
    (recovery compares a checksum of the whole valid region first).
    """
    unpack = unpack_record_header
    for n in range(lsn, end_lsn):
        length, rtype, _, _ = unpack(data, offset)
        start = offset + RECORD_HEADER_SIZE
        offset = start + length
        yield n, rtype, data[start:offset]


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
        data = read_mapped(path)
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
        seal = sealed(path, data, name_lsn)
        if seal is not None:  # a full segment as its writer sealed it: one checksum
            holes += seal.holes
            infos.append(
                SegmentInfo(
                    path, header.epoch, name_lsn, seal.records, seal.length, seal.crc, seal.holes
                )
            )
            expected = name_lsn + seal.records
            continue
        count, end, seg_holes, whole = scan_valid(data, header.epoch, name_lsn)
        if whole:  # the common case: every record valid, checked in one fast loop
            holes += seg_holes
            crc = zlib.crc32(memoryview(data)[:end])
            infos.append(SegmentInfo(path, header.epoch, name_lsn, count, end, crc, seg_holes))
            expected = name_lsn + count
            continue
        count, end, seg_holes = 0, HEADER_SIZE, 0
        data = data[:]  # as bytes: the careful walk searches them
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
            seg_holes += item.rtype == RTYPE_HOLE
        holes += seg_holes
        crc = zlib.crc32(memoryview(data)[:end])
        infos.append(SegmentInfo(path, header.epoch, name_lsn, count, end, crc, seg_holes))
        expected = name_lsn + count
    next_lsn = expected if expected is not None else (infos[-1].first_lsn if infos else 1)
    return RecoveryResult(root, tuple(infos), next_lsn, tail, holes)
