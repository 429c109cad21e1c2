"""Seals of full log segments: one checksum that stands for every record's at recovery.

When the writer rotates a segment (after fsyncing it), it writes ``wal-<first
lsn>.seal`` beside it::

    seal = magic "DTQSEAL" LF [8] | records u64 | length u64 | last u64 | holes u32
           | crc u32 | seal crc u32                                             44 bytes

``records`` frames fill the segment's first ``length`` bytes, the last at offset
``last``; ``crc`` is ``zlib.crc32`` of those bytes, and the seal's own CRC covers its
first 40 bytes. Recovery checks a sealed segment with one ``zlib.crc32`` of the file
instead of two per record (a record loop that took a fifth of a log-only recovery). A
seal is an accelerator, never the truth: one that does not match its segment exactly
(missing, torn, or stale after a repair or a cut) is ignored and the segment is read
record by record as before. Releases that know no seals ignore the files.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from dtq_core.backends.embedded.framing import (
    RECORD_HEADER_SIZE,
    SegmentBytes,
    unpack_record_header,
)

#: First bytes of every seal file.
SEAL_MAGIC = b"DTQSEAL\n"
_SEAL = struct.Struct("<8sQQQII")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Seal:
    """What a full segment holds, as its writer saw it."""

    records: int
    length: int
    #: Offset of the last record.
    last: int
    holes: int
    crc: int


def last_record(frames: bytes | bytearray) -> int:
    """The offset of the last record in ``frames``, a run of whole records."""
    offset = last = 0
    while offset < len(frames):
        last = offset
        offset += RECORD_HEADER_SIZE + unpack_record_header(frames, offset)[0]
    return last


def seal_path(segment: Path) -> Path:
    """The seal file of ``segment`` (``wal-<lsn>.log`` -> ``wal-<lsn>.seal``)."""
    return segment.with_suffix(".seal")


def write_seal(segment: Path, seal: Seal) -> None:
    """Write ``segment``'s seal; an I/O error only loses the shortcut (never raises)."""
    body = _SEAL.pack(SEAL_MAGIC, seal.records, seal.length, seal.last, seal.holes, seal.crc)
    with contextlib.suppress(OSError):
        seal_path(segment).write_bytes(body + _U32.pack(zlib.crc32(body)))


def drop_seal(segment: Path) -> None:
    """Delete ``segment``'s seal, if any."""
    with contextlib.suppress(OSError):
        seal_path(segment).unlink(missing_ok=True)


def sealed(segment: Path, data: SegmentBytes, first_lsn: int) -> Seal | None:
    """The seal of ``segment`` if it matches ``data`` (the whole file) exactly.

    Exactly: its own checksum holds, it covers every byte of the file, their checksum
    is its ``crc``, and its last record ends the file with the LSN its count gives.
    """
    try:
        raw = seal_path(segment).read_bytes()
    except OSError:
        return None
    if (
        len(raw) != _SEAL.size + _U32.size
        or zlib.crc32(raw[: _SEAL.size]) != _U32.unpack_from(raw, _SEAL.size)[0]
    ):
        return None
    magic, records, length, last, holes, crc = _SEAL.unpack_from(raw)
    if magic != SEAL_MAGIC or records < 1 or length != len(data):
        return None
    if last + RECORD_HEADER_SIZE > length or zlib.crc32(data) != crc:
        return None
    size, _, lsn, _ = unpack_record_header(data, last)
    if lsn != first_lsn + records - 1 or last + RECORD_HEADER_SIZE + size != length:
        return None
    return Seal(records, length, last, holes, crc)
