"""Byte layout of WAL segments: the segment header, record frames and the resync scanner.

A segment is a header followed by records::

    header  = magic[8] | version u32 | epoch u64 | first_lsn u64 | crc u32   (32 bytes)
    record  = length u32 | type u8 | lsn u64 | crc u32 | body[length]      (17 + length)

All integers are little-endian. A record's CRC covers ``(epoch, lsn, type, length, body)``,
so a record left over from an earlier epoch, or a valid record copied to the wrong
position, never validates where it is read.

The checksum is CRC-32 (``zlib.crc32``, the ISO-HDLC polynomial), not CRC32C: the
standard library has no CRC32C, and the fastest pure-Python CRC32C (slicing-by-8) measured
about 8 MiB/s against about 3.4 GiB/s for ``zlib.crc32``, which would make the checksum the
bottleneck of every append and every recovery. Both detect every burst error up to 32
bits, which is what the WAL needs. The format version pins the algorithm, so a later
switch (for example to an optional C extension) is a version bump, not a silent change.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from dtq_core.errors import StoreCorrupted

#: First bytes of every segment; the CR LF pair catches a file mangled by text-mode copies.
MAGIC = b"DTQWAL\r\n"
#: Layout and checksum version written in every segment header.
FORMAT_VERSION = 1
#: Largest record body accepted, so that a corrupt length never allocates gigabytes.
MAX_BODY = 64 * 1024 * 1024
#: Record type reserved by the log for LSNs lost in a repair; callers use 1..255.
RTYPE_HOLE = 0
#: A segment's bytes as recovery holds them: read, or mapped (``disk.read_mapped``).
SegmentBytes = bytes | mmap.mmap

_HEADER = struct.Struct("<8sIQQ")
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<IBQI")
_CRC_PREFIX = struct.Struct("<QQBI")

#: Size of a segment header in bytes, its CRC included.
HEADER_SIZE = _HEADER.size + _U32.size
#: Size of a record header (length, type, LSN, CRC) in bytes.
RECORD_HEADER_SIZE = _RECORD.size
#: ``(length, type, lsn, crc)`` of the record header at an offset: ``(data, offset)``.
unpack_record_header = _RECORD.unpack_from


class FrameError(StoreCorrupted):
    """Bytes at ``offset`` are not a valid header or record (a reason is in ``reason``)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The decoded header of one segment."""

    epoch: int
    first_lsn: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One valid record as found in a segment: where it is and what it holds."""

    offset: int
    lsn: int
    rtype: int
    body: bytes

    @property
    def end(self) -> int:
        """Offset of the first byte after this record."""
        return self.offset + RECORD_HEADER_SIZE + len(self.body)


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes at ``offset`` that are not the expected record.

    ``resume`` is the first valid record found further on (same epoch, an LSN at least
    the expected one), or ``None`` when nothing valid follows: only then is the damage a
    torn tail.
    """

    offset: int
    reason: str
    resume: Frame | None


def encode_header(epoch: int, first_lsn: int) -> bytes:
    """Encode a segment header.

    Args:
        epoch: The log epoch every record in the segment is checksummed with.
        first_lsn: The LSN of the segment's first record.

    Returns:
        ``HEADER_SIZE`` bytes.
    """
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, epoch, first_lsn)
    return head + _U32.pack(zlib.crc32(head))


def decode_header(data: SegmentBytes) -> SegmentHeader:
    """Decode and check a segment header at the start of ``data``.

    Raises:
        FrameError: The header is short, has the wrong magic, version or checksum.
    """
    if len(data) < HEADER_SIZE:
        raise FrameError(0, f"segment header truncated ({len(data)} of {HEADER_SIZE} bytes)")
    magic, version, epoch, first_lsn = _HEADER.unpack_from(data)
    (crc,) = _U32.unpack_from(data, _HEADER.size)
    if magic != MAGIC:
        raise FrameError(0, "not a DTQ WAL segment (bad magic)")
    if zlib.crc32(data[: _HEADER.size]) != crc:
        raise FrameError(0, "segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise FrameError(0, f"unsupported WAL format version {version}")
    return SegmentHeader(epoch, first_lsn)


def _checksum(epoch: int, lsn: int, rtype: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(_CRC_PREFIX.pack(epoch, lsn, rtype, len(body))))


def encode_record(epoch: int, lsn: int, rtype: int, body: bytes) -> bytes:
    """Frame one record.

    Args:
        epoch: Epoch of the segment the record goes into.
        lsn: The record's log sequence number.
        rtype: Record type, 0..255 (the log reserves 0, see ``RTYPE_HOLE``).
        body: Payload, at most ``MAX_BODY`` bytes.

    Returns:
        ``RECORD_HEADER_SIZE + len(body)`` bytes.
    """
    crc = _checksum(epoch, lsn, rtype, body)
    return _RECORD.pack(len(body), rtype, lsn, crc) + body


def decode_record(data: bytes, offset: int, epoch: int, lsn: int) -> Frame:
    """Decode the record at ``offset``, which must carry ``lsn`` and validate in ``epoch``.

    Raises:
        FrameError: Truncated, oversized, checksum mismatch, or a valid record with
            another LSN (a gap or a record out of place).
    """
    if len(data) - offset < RECORD_HEADER_SIZE:
        raise FrameError(offset, f"truncated record header ({len(data) - offset} bytes)")
    length, rtype, found, crc = _RECORD.unpack_from(data, offset)
    start = offset + RECORD_HEADER_SIZE
    if length > MAX_BODY:
        raise FrameError(offset, f"record length {length} exceeds the {MAX_BODY} byte limit")
    if start + length > len(data):
        raise FrameError(offset, f"truncated record body ({len(data) - start} of {length})")
    body = data[start : start + length]
    if _checksum(epoch, found, rtype, body) != crc:
        raise FrameError(offset, "record checksum mismatch")
    if found != lsn:
        raise FrameError(offset, f"record has lsn {found}, expected {lsn}")
    return Frame(offset, found, rtype, bytes(body))


def scan_valid(data: SegmentBytes, epoch: int, first_lsn: int) -> tuple[int, int, int, bool]:
    """Check the records of a segment in order, as fast as Python allows.

    The fast path of recovery: one loop, no object per record. It stops at the first
    record that is not valid (:func:`iter_segment` then tells what is wrong there).

    Returns:
        ``(records, end offset of the last valid one, holes among them, whether every
        byte after the header was a valid record)``.
    """
    unpack, crc32, prefix = _RECORD.unpack_from, zlib.crc32, _CRC_PREFIX.pack
    size, offset, lsn, holes = len(data), HEADER_SIZE, first_lsn, 0
    view, head, last = memoryview(data), RECORD_HEADER_SIZE, len(data) - RECORD_HEADER_SIZE
    while offset <= last:
        length, rtype, found, crc = unpack(data, offset)
        start = offset + head
        end = start + length
        if found != lsn or end > size or length > MAX_BODY:
            break
        if crc32(view[start:end], crc32(prefix(epoch, lsn, rtype, length))) != crc:
            break
        if not rtype:
            holes += 1
        offset = end
        lsn += 1
    return lsn - first_lsn, offset, holes, offset == size


#: Zero blocks of 1, 2, 4 ... 64 KiB bytes, to measure zero runs with memcmp.
_ZERO_BLOCKS = [bytes(1 << i) for i in range(17)]


def _zero_run_end(data: bytes, pos: int) -> int:
    """The offset of the first non-zero byte at or after ``pos`` (``len(data)`` if none)."""
    # Gallop up with blocks of 1, 2, 4 ... bytes, then come down: O(log run) memcmps.
    rank = 0
    while data.startswith(_ZERO_BLOCKS[rank], pos):
        pos += len(_ZERO_BLOCKS[rank])
        rank = min(rank + 1, len(_ZERO_BLOCKS) - 1)
    for block in reversed(_ZERO_BLOCKS[:rank]):
        if data.startswith(block, pos):
            pos += len(block)
    return min(pos, len(data))


def _candidates(data: bytes, start: int, lsn_bytes: int) -> Iterator[int]:
    """Offsets at or after ``start`` whose LSN field fits in ``lsn_bytes`` and is not zero.

    Such a field ends in ``8 - lsn_bytes`` zero bytes right after a non-zero byte, so every
    candidate sits just before a run of zeros: ``bytes.find`` jumps from run to run at C
    speed, and a memcmp gallop crosses long zero-filled stretches, so neither random nor
    zeroed tails cost a Python step per byte. A run starting at ``a`` and ending at ``b``
    admits the offsets ``p`` with ``a - 5 - lsn_bytes <= p <= min(a - 6, b - 13)``.
    """
    if lsn_bytes >= 8:
        yield from range(start, len(data) - RECORD_HEADER_SIZE + 1)
        return
    zeros = _ZERO_BLOCKS[0] * (8 - lsn_bytes)
    pos = start
    while (found := data.find(zeros, pos)) >= 0:
        run_start = found
        while run_start > max(0, found - 16) and data[run_start - 1] == 0:
            run_start -= 1
        run_end = _zero_run_end(data, found + len(zeros))
        low = max(start, run_start - 5 - lsn_bytes)
        yield from range(low, min(run_start - 6, run_end - 13) + 1)
        if run_end >= len(data):
            return
        pos = run_end


def find_next_record(data: bytes, start: int, epoch: int, min_lsn: int) -> Frame | None:
    """Find the first valid record at or after ``start`` with an LSN of at least ``min_lsn``.

    Every record takes at least ``RECORD_HEADER_SIZE`` bytes, so a record found after
    ``start`` cannot be more than ``(len(data) - start) // RECORD_HEADER_SIZE`` LSNs ahead.
    That bound limits the offsets worth a look (see ``_candidates``) and rejects nearly
    every false candidate before a checksum is computed, so random, zeroed and text tails
    scan at hundreds of MiB/s. The slow case is a long run of well-formed records that
    all fail their checksum (another epoch's records under this header): shifted views
    of their headers pass the filter and cost a checksum each. The writer never leaves
    such a run, so only a damaged file can.

    Args:
        data: The segment bytes.
        start: First offset to try.
        epoch: Epoch the record must validate in.
        min_lsn: Smallest acceptable LSN (the one expected next).

    Returns:
        The record, or ``None`` if no valid record follows.
    """
    max_lsn = min_lsn + (len(data) - start) // RECORD_HEADER_SIZE + 1
    last = len(data) - RECORD_HEADER_SIZE
    for pos in _candidates(data, start, max(1, (max_lsn.bit_length() + 7) // 8)):
        if pos > last:
            break
        length, rtype, lsn, crc = _RECORD.unpack_from(data, pos)
        if not min_lsn <= lsn <= max_lsn or length > MAX_BODY:
            continue
        body_start = pos + RECORD_HEADER_SIZE
        if body_start + length > len(data):
            continue
        body = memoryview(data)[body_start : body_start + length]
        if _checksum(epoch, lsn, rtype, body) == crc:
            return Frame(pos, lsn, rtype, bytes(body))
    return None


def iter_segment(
    data: bytes, epoch: int, first_lsn: int, *, resync: bool = False
) -> Iterator[Frame | Damage]:
    """Walk the records of one segment in order.

    Yields each valid record; at a bad offset yields a ``Damage`` that says whether a
    valid record follows. With ``resync`` the walk goes on from that record (verify and
    repair); without it the walk stops at the first damage (recovery).

    Args:
        data: The whole segment, header included.
        epoch: The segment's epoch from its header.
        first_lsn: LSN expected at the first record.
        resync: Continue past damage instead of stopping.
    """
    offset = HEADER_SIZE
    lsn = first_lsn
    while offset < len(data):
        try:
            frame = decode_record(data, offset, epoch, lsn)
        except FrameError as exc:
            # Search from the bad offset itself: a valid record there with a larger LSN
            # (a gap) is a later record too.
            resume = find_next_record(data, offset, epoch, lsn)
            yield Damage(offset, exc.reason, resume)
            if resume is None or not resync:
                return
            offset, lsn = resume.offset, resume.lsn
            continue
        yield frame
        offset = frame.end
        lsn += 1


#: Segment file names: ``wal-`` + the first LSN, zero-padded to 16 digits, + ``.log``.
SEGMENT_NAME = re.compile(r"^wal-(\d{16})\.log$")


def segment_name(first_lsn: int) -> str:
    """The file name of the segment whose first record is ``first_lsn``."""
    return f"wal-{first_lsn:016d}.log"
