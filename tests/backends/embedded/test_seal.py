"""Seals of full log segments: written at rotation, trusted only when they match."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from dtq_core.backends.embedded.seal import SEAL_MAGIC, Seal, seal_path, sealed, write_seal
from dtq_core.backends.embedded.wal import SegmentCorrupted, WriteAheadLog, read_log


def no_fsync(fd: int) -> None:
    """Skips the disk: these tests look at bytes."""


def build(directory: Path, count: int) -> list[tuple[int, int, bytes]]:
    written = []
    with WriteAheadLog(directory, fsync_fn=no_fsync, segment_bytes=600) as wal:
        for _ in range(count):
            lsn = wal.next_lsn
            body = bytes([lsn % 251]) * ((lsn * 7) % 45)
            wal.append(1 + lsn % 7, body)
            written.append((lsn, 1 + lsn % 7, body))
    return written


def found(directory: Path) -> tuple[list[tuple[int, int, int, int, int]], list[object]]:
    result = read_log(directory)
    infos = [(s.first_lsn, s.records, s.valid_bytes, s.crc, s.holes) for s in result.segments]
    return infos, [(r.lsn, r.rtype, r.body) for r in result]


def test_rotated_segments_are_sealed_and_read_as_scanned(tmp_path: Path) -> None:
    written = build(tmp_path / "log", 120)
    segments = sorted((tmp_path / "log").glob("wal-*.log"))
    assert len(segments) > 3
    assert all(seal_path(s).exists() for s in segments[:-1])
    assert not seal_path(segments[-1]).exists()  # the active one
    with_seals = found(tmp_path / "log")
    shutil.copytree(tmp_path / "log", tmp_path / "bare")
    for seal in (tmp_path / "bare").glob("*.seal"):
        seal.unlink()
    assert found(tmp_path / "bare") == with_seals
    assert with_seals[1] == written


def test_a_sealed_segment_with_a_flipped_bit_is_still_refused(tmp_path: Path) -> None:
    build(tmp_path, 120)
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 1
    first.write_bytes(bytes(data))
    with pytest.raises(SegmentCorrupted):  # the seal no longer matches: scanned, refused
        read_log(tmp_path)


def test_a_seal_that_does_not_match_its_segment_is_ignored(tmp_path: Path) -> None:
    build(tmp_path, 120)
    expected = found(tmp_path)
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    data = first.read_bytes()
    good = sealed(first, data, 1)
    assert good is not None
    for wrong in (
        Seal(good.records + 1, good.length, good.last, good.holes, good.crc),  # count
        Seal(good.records, good.length, good.last - 1, good.holes, good.crc),  # last
        Seal(good.records, good.length - 1, good.last, good.holes, good.crc),  # length
        Seal(good.records, good.length, good.last, good.holes, good.crc ^ 1),  # crc
    ):
        write_seal(first, wrong)
        assert sealed(first, data, 1) is None
        assert found(tmp_path) == expected
    raw = struct.pack("<8sQQQII", SEAL_MAGIC, good.records, good.length, good.last, 0, good.crc)
    seal_path(first).write_bytes(raw + struct.pack("<I", zlib.crc32(raw) ^ 1))  # torn
    assert sealed(first, data, 1) is None
    seal_path(first).write_bytes(b"")
    assert sealed(first, data, 1) is None
    assert found(tmp_path) == expected


def test_truncation_deletes_the_seals_with_their_segments(tmp_path: Path) -> None:
    build(tmp_path, 120)
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync, segment_bytes=600) as wal:
        removed = wal.truncate_before(60)
        assert removed
        assert not any(seal_path(p).exists() for p in removed)
        assert all(seal_path(p).exists() for p in wal.segments()[:-1])


def test_a_reopened_segment_is_sealed_with_what_it_held_before(tmp_path: Path) -> None:
    build(tmp_path, 3)  # the first segment, not full
    written = build(tmp_path, 120)  # appends to it until it rotates
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    assert sealed(first, first.read_bytes(), 1) is not None
    assert found(tmp_path)[1][-len(written) :] == written
