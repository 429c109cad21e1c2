"""Tests for the write-ahead log, its recovery rules, its tools and checkpoint files."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtq_core.backends.embedded.checkpoint import (
    checkpoint_name,
    load_latest_checkpoint,
    prune_checkpoints,
    write_checkpoint,
)
from dtq_core.backends.embedded.framing import (
    HEADER_SIZE,
    MAX_BODY,
    RECORD_HEADER_SIZE,
    RTYPE_HOLE,
    FrameError,
    decode_header,
    decode_record,
    encode_header,
    encode_record,
    segment_name,
)
from dtq_core.backends.embedded.wal import (
    SegmentCorrupted,
    WriteAheadLog,
    inspect,
    read_log,
    repair,
    verify,
)
from dtq_core.errors import BackendError, StoreCorrupted, StoreFailed

ROOT = Path(__file__).resolve().parents[3]


def no_fsync(fd: int) -> None:
    """Skips the disk in tests that only look at bytes (the fsync paths are tested apart)."""


def body_for(lsn: int) -> bytes:
    # Varied sizes, including empty bodies and bodies longer than a record header.
    return bytes([lsn % 251]) * ((lsn * 7) % 45)


def build_log(directory: Path, count: int, **kwargs: object) -> list[tuple[int, int, bytes]]:
    written = []
    with WriteAheadLog(directory, fsync_fn=no_fsync, **kwargs) as wal:  # type: ignore[arg-type]
        for _ in range(count):
            lsn = wal.next_lsn
            rtype = 1 + lsn % 7
            assert wal.append(rtype, body_for(lsn)) == lsn
            written.append((lsn, rtype, body_for(lsn)))
    return written


def read_all(directory: Path) -> list[tuple[int, int, bytes]]:
    return [(r.lsn, r.rtype, r.body) for r in read_log(directory)]


def offsets(directory: Path) -> dict[int, tuple[str, int]]:
    return {row.lsn: (row.segment, row.offset) for row in inspect(directory)}


def last_segment(directory: Path) -> Path:
    return sorted(directory.glob("wal-*.log"))[-1]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def base_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int, bytes]]]:
    directory = tmp_path_factory.mktemp("base")
    return directory, build_log(directory, 45, segment_bytes=400)


def copy_log(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# -- codec -----------------------------------------------------------------------------

bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 2 * 1024 * 1024), st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None)
@given(
    epoch=st.integers(0, 2**64 - 1),
    lsn=st.integers(1, 2**64 - 1),
    rtype=st.integers(0, 255),
    body=bodies,
)
def test_record_codec_round_trip(epoch: int, lsn: int, rtype: int, body: bytes) -> None:
    frame = encode_record(epoch, lsn, rtype, body)
    assert len(frame) == RECORD_HEADER_SIZE + len(body)
    decoded = decode_record(b"pad" + frame, 3, epoch, lsn)
    assert (decoded.lsn, decoded.rtype, decoded.body, decoded.end) == (
        lsn,
        rtype,
        body,
        len(frame) + 3,
    )
    with pytest.raises(FrameError, match="checksum"):
        decode_record(frame, 0, epoch ^ 1, lsn)  # another epoch never validates
    with pytest.raises(FrameError, match="expected"):
        decode_record(frame, 0, epoch, lsn ^ 1)  # a valid record in the wrong place
    with pytest.raises(FrameError, match="truncated"):
        decode_record(frame[:-1] if body else frame[:-5], 0, epoch, lsn)


@given(epoch=st.integers(0, 2**64 - 1), first=st.integers(1, 2**64 - 1))
def test_segment_header_round_trip(epoch: int, first: int) -> None:
    header = decode_header(encode_header(epoch, first))
    assert (header.epoch, header.first_lsn) == (epoch, first)


def test_corrupt_length_never_allocates() -> None:
    frame = bytearray(encode_record(1, 1, 1, b"abc"))
    frame[0:4] = (0xFFFFFFF0).to_bytes(4, "little")
    with pytest.raises(FrameError, match="exceeds"):
        decode_record(bytes(frame), 0, 1, 1)


def test_append_validates_type_and_size(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        with pytest.raises(ValueError, match="type"):
            wal.append(RTYPE_HOLE, b"")
        with pytest.raises(ValueError, match="exceeds"):
            wal.append(1, bytes(MAX_BODY + 1))
        with pytest.raises(ValueError):
            wal.append_many([])
        assert wal.next_lsn == 1


# -- recovery: torn tail versus corruption ---------------------------------------------


def test_round_trip_across_segments(base_log: tuple[Path, list[tuple[int, int, bytes]]]) -> None:
    directory, written = base_log
    assert len(list(directory.glob("wal-*.log"))) > 3
    result = read_log(directory)
    assert result.tail is None
    assert read_all(directory) == written
    assert [r.lsn for r in result.records(from_lsn=42)] == [42, 43, 44, 45]
    assert verify(directory).ok


def test_truncation_at_every_offset_of_the_last_three_records(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    where = offsets(directory)
    segment_file, start = where[written[-3][0]]
    assert segment_file == last_segment(directory).name  # the three are in the last segment
    ends = {where[lsn][1]: lsn - 1 for lsn, _, _ in written[-3:]}
    full = (directory / segment_file).read_bytes()
    for cut in range(start, len(full) + 1):
        case = copy_log(directory, tmp_path / f"cut{cut}")
        (case / segment_file).write_bytes(full[:cut])
        survivors = max(lsn for off, lsn in ends.items() if off <= cut)
        if cut == len(full):
            survivors = written[-1][0]
        result = read_log(case)
        assert read_all(case) == written[:survivors]
        assert (result.tail is None) == (cut == len(full) or cut in ends)
        with WriteAheadLog(case, fsync_fn=no_fsync) as wal:
            assert wal.next_lsn == survivors + 1
            if wal.tail_cut is not None:
                assert wal.tail_cut.dropped_bytes == cut - where[survivors + 1][1]
                assert wal.tail_cut.broken_copy is not None
                assert wal.tail_cut.broken_copy.read_bytes() == full[:cut]
            wal.append(1, b"after")
        assert read_all(case) == [*written[:survivors], (survivors + 1, 1, b"after")]
        shutil.rmtree(case)


@pytest.mark.parametrize("sectors", [1, 2, 8])
def test_zero_filled_sectors_at_the_tail_are_cut(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path, sectors: int
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "zeros")
    seg = last_segment(case)
    with seg.open("ab") as fh:
        fh.write(bytes(512 * sectors))
    result = read_log(case)
    assert result.tail is not None and result.tail.dropped_bytes == 512 * sectors
    assert read_all(case) == written


def test_zeroed_last_sector_cuts_the_records_it_covers(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "zeroed")
    seg = last_segment(case)
    data = bytearray(seg.read_bytes())
    sector_start = max(HEADER_SIZE, (len(data) - 1) // 512 * 512)
    data[sector_start:] = bytes(512)  # the last sector was never written: zeros, full size
    seg.write_bytes(bytes(data))
    where = offsets(directory)
    survivors = [
        w
        for w in written
        if where[w[0]][0] != seg.name
        or where[w[0]][1] + RECORD_HEADER_SIZE + len(w[2]) <= sector_start
    ]
    assert len(survivors) < len(written)
    assert read_all(case) == survivors
    assert read_log(case).tail is not None


def test_bit_flip_in_the_last_record_is_a_torn_tail(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    last_lsn, _, body = written[-1]
    name, start = offsets(directory)[last_lsn]
    for position in range(start, start + RECORD_HEADER_SIZE + len(body)):
        case = copy_log(directory, tmp_path / f"flip{position}")
        flip_bit(case / name, position, bit=position % 8)
        result = read_log(case)
        assert result.tail is not None and result.tail.offset == start
        assert read_all(case) == written[:-1]
        shutil.rmtree(case)


def test_bit_flip_before_the_tail_is_corruption_naming_segment_and_offset(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    where = offsets(directory)
    last_name = last_segment(directory).name
    # Middle of the last segment, and the last records of earlier segments.
    targets = [written[-2][0], written[-3][0], 1, 2]
    targets += [lsn for lsn in where if where.get(lsn + 1, (last_name,))[0] != where[lsn][0]]
    for lsn in targets:
        name, start = where[lsn]
        length = RECORD_HEADER_SIZE + len(body_for(lsn))
        for position in sorted({start, start + 4, start + 5, start + 13, start + length - 1}):
            case = copy_log(directory, tmp_path / f"mid{lsn}-{position}")
            before = snapshot(case)
            flip_bit(case / name, position, bit=(position + lsn) % 8)
            damaged = snapshot(case)
            with pytest.raises(StoreCorrupted) as info:
                read_log(case)
            assert isinstance(info.value, SegmentCorrupted)
            assert info.value.segment.name == name and info.value.offset == start
            assert f"{name} is corrupted at byte offset {start}" in str(info.value)
            assert "dtq wal verify" in str(info.value) and "dtq wal repair" in str(info.value)
            with pytest.raises(StoreCorrupted):
                WriteAheadLog(case, fsync_fn=no_fsync)
            assert snapshot(case) == damaged != before  # refusing to open changes nothing
            shutil.rmtree(case)


@pytest.mark.parametrize("which", ["first", "last"])
def test_damaged_segment_header_is_corruption(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path, which: str
) -> None:
    directory, _ = base_log
    case = copy_log(directory, tmp_path / "header")
    segments = sorted(case.glob("wal-*.log"))
    target = segments[0] if which == "first" else segments[-1]
    flip_bit(target, 12)  # inside the epoch field
    with pytest.raises(SegmentCorrupted) as info:
        read_log(case)
    assert info.value.segment == target and info.value.offset == 0


def test_torn_creation_of_the_last_segment_is_a_tail(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "torn-header")
    seg = last_segment(case)
    first = int(seg.name[4:20])
    seg.write_bytes(encode_header(1, first)[:10])
    assert read_all(case) == written[: first - 1]
    with WriteAheadLog(case, fsync_fn=no_fsync) as wal:
        assert wal.next_lsn == first and wal.epoch == 2
        assert wal.append(3, b"x") == first
    assert read_all(case)[-1] == (first, 3, b"x")


def test_stale_epoch_records_never_validate(tmp_path: Path) -> None:
    seg = tmp_path / segment_name(1)
    current = [encode_record(2, lsn, 1, b"new %d" % lsn) for lsn in (1, 2, 3)]
    stale = [encode_record(1, lsn, 1, b"old %d" % lsn) for lsn in (4, 5)]
    seg.write_bytes(encode_header(2, 1) + b"".join(current + stale))
    result = read_log(tmp_path)
    assert [r.body for r in result] == [b"new 1", b"new 2", b"new 3"]
    assert result.tail is not None and result.tail.reason == "record checksum mismatch"
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        assert wal.epoch == 3  # a cut always moves to a new epoch


def test_lsn_gap_inside_a_segment_is_corruption(tmp_path: Path) -> None:
    seg = tmp_path / segment_name(1)
    frames = [encode_record(1, lsn, 1, b"r") for lsn in (1, 2, 3, 5, 6)]
    seg.write_bytes(encode_header(1, 1) + b"".join(frames))
    with pytest.raises(SegmentCorrupted, match="lsn 5, expected 4") as info:
        read_log(tmp_path)
    assert info.value.offset == HEADER_SIZE + 3 * len(frames[0])


def test_missing_middle_segment_is_corruption(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, _ = base_log
    case = copy_log(directory, tmp_path / "gap")
    sorted(case.glob("wal-*.log"))[1].unlink()
    with pytest.raises(SegmentCorrupted, match="expected"):
        read_log(case)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=st.sampled_from(["append", "overwrite", "truncate-append", "replay-old-record"]),
    back=st.integers(0, 120),
    junk=st.binary(min_size=1, max_size=300),
)
def test_fuzzed_tail_yields_only_written_records(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], action: str, back: int, junk: bytes
) -> None:
    directory, written = base_log
    with tempfile.TemporaryDirectory() as tmp:
        case = copy_log(directory, Path(tmp) / "log")
        seg = last_segment(case)
        data = bytearray(seg.read_bytes())
        at = max(HEADER_SIZE, len(data) - back)
        if action == "append":
            data += junk
        elif action == "overwrite":
            data[at : at + len(junk)] = junk
        elif action == "truncate-append":
            data[at:] = junk
        else:
            name, start = offsets(directory)[written[-1 - back % 5][0]]
            old = (directory / name).read_bytes()[start:]
            data += old[: RECORD_HEADER_SIZE + len(written[-1 - back % 5][2])]
        seg.write_bytes(bytes(data))
        try:
            records = read_all(case)
        except StoreCorrupted:
            return  # documented outcome for damage followed by a valid record
        assert records == written[: len(records)]
        with WriteAheadLog(case, fsync_fn=no_fsync) as wal:
            assert wal.next_lsn == len(records) + 1


# -- the writer ------------------------------------------------------------------------


class CountingFsync:
    """Real fsync plus a fixed device latency, so batching does not depend on the disk."""

    def __init__(self, latency: float = 0.001) -> None:
        self.calls = 0
        self.latency = latency
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        os.fsync(fd)
        time.sleep(self.latency)
        with self.lock:
            self.calls += 1


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    fsync = CountingFsync()
    wal = WriteAheadLog(tmp_path, fsync="always", fsync_fn=fsync)
    before = wal.fsync_count
    threads, per_thread = 32, 200
    acked: dict[int, list[int]] = {}

    def worker(tid: int) -> None:
        acked[tid] = [wal.append(1, f"{tid}:{i}".encode()) for i in range(per_thread)]
        assert wal.durable_lsn >= acked[tid][-1]

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    total = threads * per_thread
    lsns = sorted(lsn for values in acked.values() for lsn in values)
    assert lsns == list(range(1, total + 1))
    assert all(values == sorted(values) for values in acked.values())
    assert wal.durable_lsn == total
    fsyncs = wal.fsync_count - before
    assert fsyncs < total / 2, fsyncs
    wal.close()
    by_lsn = {r.lsn: r.body for r in read_log(tmp_path)}
    for tid, values in acked.items():
        assert [by_lsn[lsn] for lsn in values] == [f"{tid}:{i}".encode() for i in range(per_thread)]


def test_append_many_is_one_write_and_one_fsync(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        fsyncs, written = wal.fsync_count, wal.bytes_written
        last = wal.append_many([(1, b"a"), (2, b""), (3, b"ccc")])
        assert last == 3 and wal.durable_lsn == 3
        assert wal.fsync_count - fsyncs == 1
        assert wal.bytes_written - written == 3 * RECORD_HEADER_SIZE + 4
    assert read_all(tmp_path) == [(1, 1, b"a"), (2, 2, b""), (3, 3, b"ccc")]


def test_submit_then_wait_shares_one_fsync(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        fsyncs = wal.fsync_count
        lsns = [wal.submit(1, b"%d" % i) for i in range(3)]  # order fixed, nothing on disk
        assert lsns == [1, 2, 3] and wal.durable_lsn == 0
        wal.wait(lsns[-1])
        assert wal.durable_lsn == 3 and wal.fsync_count - fsyncs == 1
        wal.wait(1)  # already durable: no more I/O
        assert wal.fsync_count - fsyncs == 1


class FailingFsync:
    """Fails the ``fail_at``-th call once armed, and counts every call after that."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.armed = False
        self.calls = 0
        self.calls_after_failure = 0
        self.failed = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if not self.armed:
            return
        with self.lock:
            if self.failed.is_set():
                self.calls_after_failure += 1
                return
            self.calls += 1
            if self.calls == self.fail_at:
                self.failed.set()
                raise OSError(5, "Input/output error")


def test_fsync_failure_is_fail_stop(tmp_path: Path) -> None:
    fsync = FailingFsync(fail_at=4)
    wal = WriteAheadLog(tmp_path, fsync_fn=fsync)
    fsync.armed = True
    assert [wal.append(1, b"ok") for _ in range(3)] == [1, 2, 3]
    with pytest.raises(StoreFailed, match="Input/output error"):
        wal.append(1, b"lost")
    assert wal.failed and wal.durable_lsn == 3
    for attempt in (
        lambda: wal.append(1, b"later"),
        lambda: wal.append_many([(1, b"later")]),
        wal.sync,
        lambda: wal.truncate_before(10),
    ):
        with pytest.raises(StoreFailed):
            attempt()
    assert wal.durable_lsn == 3
    wal.close()  # releases the file without trying to write or fsync again
    assert fsync.calls_after_failure == 0
    assert read_all(tmp_path)[:3] == [(1, 1, b"ok"), (2, 1, b"ok"), (3, 1, b"ok")]


def test_fsync_failure_under_concurrency_acknowledges_nothing_unsynced(tmp_path: Path) -> None:
    fsync = FailingFsync(fail_at=6)
    wal = WriteAheadLog(tmp_path, fsync_fn=fsync)
    fsync.armed = True
    acked: list[int] = []
    errors: list[BaseException] = []
    later_successes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            try:
                lsn = wal.append(1, b"x" * 50)
            except StoreFailed as exc:
                with lock:
                    errors.append(exc)
                try:
                    wal.append(1, b"y")  # every append after the failure fails too
                except StoreFailed:
                    pass
                else:
                    with lock:
                        later_successes.append(1)
                return
            with lock:
                acked.append(lsn)

    pool = [threading.Thread(target=worker) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert len(errors) == 8 and wal.failed and not later_successes
    durable = wal.durable_lsn
    assert acked and max(acked) <= durable < wal.next_lsn - 1
    wal.close()
    assert fsync.calls_after_failure == 0
    recovered = {r.lsn for r in read_log(tmp_path)}
    assert set(acked) <= recovered


def test_interval_mode_flushes_in_the_background(tmp_path: Path) -> None:
    flushed = threading.Event()

    def fsync(fd: int) -> None:
        os.fsync(fd)
        flushed.set()

    with WriteAheadLog(tmp_path, fsync="interval", interval_ms=5, fsync_fn=fsync) as wal:
        flushed.clear()
        before = wal.fsync_count
        lsn = wal.append(1, b"soon durable")
        assert flushed.wait(timeout=10), "the flusher never ran"
        assert wal.sync() >= lsn
        assert wal.fsync_count - before >= 1


def test_interval_mode_fsync_failure_fails_later_appends(tmp_path: Path) -> None:
    fsync = FailingFsync(fail_at=1)
    wal = WriteAheadLog(tmp_path, fsync="interval", interval_ms=5, fsync_fn=fsync)
    fsync.armed = True
    wal.append(1, b"x")
    assert fsync.failed.wait(timeout=10)
    with pytest.raises(StoreFailed):
        wal.sync()  # waits for the flusher's fsync to end, then sees the failure
    with pytest.raises(StoreFailed):
        wal.append(1, b"y")
    assert wal.durable_lsn == 0
    wal.close()


def test_off_mode_fsyncs_only_on_close(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="off")
    before = wal.fsync_count
    for i in range(50):
        wal.append(1, b"%d" % i)
    assert wal.fsync_count == before and wal.durable_lsn == 0
    wal.close()
    assert wal.fsync_count == before + 1
    assert len(read_all(tmp_path)) == 50
    with pytest.raises(BackendError, match="closed"):
        wal.append(1, b"after close")


def test_rotation_truncation_and_replay(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_bytes=200, fsync_fn=no_fsync) as wal:
        for i in range(1, 61):
            wal.append(1, b"r%03d" % i)
        segments = wal.segments()
        assert len(segments) > 5
        firsts = [int(p.name[4:20]) for p in segments]
        assert firsts[0] == 1 and firsts == sorted(firsts)
        assert segments == sorted(tmp_path.glob("wal-*.log"))
        removed = wal.truncate_before(30)
        assert removed and removed == segments[: len(removed)]
        assert all(not p.exists() for p in removed)
        assert int(wal.segments()[0].name[4:20]) <= 30 < int(wal.segments()[1].name[4:20])
    with WriteAheadLog(tmp_path, segment_bytes=200, fsync_fn=no_fsync) as wal:
        assert wal.next_lsn == 61 and wal.recovery.first_lsn > 1
        replayed = list(wal.replay(28))
        assert [(r.lsn, r.body) for r in replayed] == [(i, b"r%03d" % i) for i in range(28, 61)]
        wal.truncate_before(10**9)
        assert wal.segments() == sorted(tmp_path.glob("wal-*.log"))[-1:]  # never the active one


CHILD = textwrap.dedent(
    """
    import sys, threading
    from dtq_core.backends.embedded.wal import WriteAheadLog
    wal = WriteAheadLog(sys.argv[1], fsync="always", segment_bytes=8192)
    out = threading.Lock()
    def run(tid):
        for i in range(10**9):
            body = f"{tid}:{i}"
            lsn = wal.append(1, body.encode())
            with out:
                sys.stdout.write(f"{lsn} {body}\\n")
                sys.stdout.flush()
    for tid in range(4):
        threading.Thread(target=run, args=(tid,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(7)
    acknowledged: dict[int, bytes] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _cycle in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the child is appending
        time.sleep(rng.uniform(0.005, 0.15))  # the crash point, not a wait for a state
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        for line in (first + rest).decode().splitlines(keepends=True):
            if line.endswith("\n"):
                lsn, body = line.split()
                acknowledged[int(lsn)] = body.encode()
        recovered = {r.lsn: r.body for r in read_log(tmp_path)}
        missing = [lsn for lsn, body in acknowledged.items() if recovered.get(lsn) != body]
        assert not missing
    assert len(acknowledged) > 5
    with WriteAheadLog(tmp_path) as wal:
        assert wal.next_lsn > max(acknowledged)


# -- verify, repair, inspect -----------------------------------------------------------


def test_verify_reports_without_modifying(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "verify")
    name, start = offsets(directory)[5]
    flip_bit(case / name, start + RECORD_HEADER_SIZE + 1)
    with last_segment(case).open("ab") as fh:
        fh.write(b"\x00" * 100)
    before = snapshot(case)
    report = verify(case)
    assert snapshot(case) == before
    kinds = [(p.segment, p.offset, p.kind) for p in report.problems]
    assert kinds == [(name, start, "corrupt"), (last_segment(case).name, kinds[-1][1], "torn-tail")]
    assert "lsns 5..5 lost" in report.problems[0].detail
    assert not report.ok and not report.openable
    assert report.records == len(written) - 1


def test_repair_salvages_around_middle_corruption(
    base_log: tuple[Path, list[tuple[int, int, bytes]]], tmp_path: Path
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "repair")
    where = offsets(directory)
    name, start = where[10]
    assert where[11][0] != name  # the last record of its segment: the loss spans segments
    flip_bit(case / name, start + 2)
    first_segment = sorted(case.glob("wal-*.log"))[0]
    flip_bit(first_segment, 9)  # damaged header: the epoch is guessed from its records
    originals = snapshot(case)
    report = repair(case, segment_bytes=400)
    assert report.changed and report.lost == ((10, 10),) and report.salvaged == len(written) - 1
    assert report.broken_dir is not None
    assert {f"{report.broken_dir.name}/{k}": v for k, v in originals.items()} == {
        k: v for k, v in snapshot(case).items() if k.startswith(report.broken_dir.name)
    }
    assert verify(case).ok
    with WriteAheadLog(case, fsync_fn=no_fsync) as wal:
        assert wal.epoch == report.epoch and wal.recovery.holes == 1
        assert [(r.lsn, r.rtype, r.body) for r in wal.replay()] == [
            w for w in written if w[0] != 10
        ]
        assert next(r.rtype for r in wal.replay(10, include_holes=True)) == RTYPE_HOLE
        assert wal.append(1, b"next") == len(written) + 1
    assert not repair(case).changed


def test_interrupted_repair_is_finished_by_open(
    base_log: tuple[Path, list[tuple[int, int, bytes]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, written = base_log
    case = copy_log(directory, tmp_path / "interrupted")
    name, start = offsets(directory)[5]
    flip_bit(case / name, start + 2)
    real_replace = os.replace
    moves = {"n": 0}

    class Crash(BaseException):
        pass

    def crash_on_third_move(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if "broken-" in str(dst):
            moves["n"] += 1
            if moves["n"] == 3:
                raise Crash  # stands in for a crash in the middle of the swap
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_third_move)
    with pytest.raises(Crash):
        repair(case)
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(StoreCorrupted, match="interrupted repair"):
        read_log(case)
    with WriteAheadLog(case, fsync_fn=no_fsync) as wal:
        assert [r.lsn for r in wal.replay()] == [w[0] for w in written if w[0] != 5]


def test_inspect_lists_records(base_log: tuple[Path, list[tuple[int, int, bytes]]]) -> None:
    directory, written = base_log
    rows = list(inspect(directory, limit=5))
    assert [(r.lsn, r.rtype, r.length) for r in rows] == [
        (w[0], w[1], len(w[2])) for w in written[:5]
    ]
    assert rows[0].offset == HEADER_SIZE and rows[0].segment == segment_name(1)
    assert len(list(inspect(directory))) == len(written)


# -- checkpoints -----------------------------------------------------------------------


def test_checkpoint_round_trip_and_fallback(tmp_path: Path) -> None:
    calls: list[int] = []
    assert load_latest_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path, 10, b"state at 10", fsync_fn=calls.append)
    assert len(calls) == 2  # the file, then the directory
    newest = write_checkpoint(tmp_path, 20, b"state at 20")
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded is not None and (loaded.lsn, loaded.body, loaded.skipped) == (
        20,
        b"state at 20",
        (),
    )
    flip_bit(newest, 40)
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded is not None and (loaded.lsn, loaded.body) == (10, b"state at 10")
    assert [s.path for s in loaded.skipped] == [newest]
    flip_bit(tmp_path / checkpoint_name(10), 3)
    with pytest.raises(StoreCorrupted, match="no valid checkpoint"):
        load_latest_checkpoint(tmp_path)


def test_checkpoint_crash_before_rename_keeps_the_old_one(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 5, b"old")
    script = textwrap.dedent(
        f"""
        import os
        from dtq_core.backends.embedded.checkpoint import write_checkpoint
        def crash(fd):
            os.fsync(fd)
            os._exit(9)  # dies after the temp file is written, before the rename
        write_checkpoint({str(tmp_path)!r}, 6, b"new" * 1000, fsync_fn=crash)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", script], env=env, check=False).returncode == 9
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded is not None and (loaded.lsn, loaded.body) == (5, b"old")
    assert prune_checkpoints(tmp_path) == leftovers


def test_checkpoint_fsync_failure_raises_and_leaves_no_temp(tmp_path: Path) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(StoreFailed):
        write_checkpoint(tmp_path, 1, b"x", fsync_fn=broken)
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_newest_valid(tmp_path: Path) -> None:
    for lsn in (1, 2, 3, 4):
        write_checkpoint(tmp_path, lsn, b"%d" % lsn)
    flip_bit(tmp_path / checkpoint_name(4), 32)
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [checkpoint_name(1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(n) for n in (2, 3, 4)]
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded is not None and loaded.lsn == 3
