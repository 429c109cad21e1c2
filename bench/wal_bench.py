"""WAL throughput: appends/s and fsyncs per record by fsync mode and thread count.

Run: ``python bench/wal_bench.py [--seconds 1.0] [--body 100] [--dir PATH]``. The log
lives in a temp directory on the filesystem of ``--dir`` (default: the system temp dir),
and real ``os.fsync`` is used, so the figures are those of that disk. Also measures
recovery speed and why the checksum is ``zlib.crc32`` rather than a pure-Python CRC32C.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dtq_core.backends.embedded.wal import WriteAheadLog, read_log


def run_cell(
    base: Path, mode: str, threads: int, seconds: float, body: bytes
) -> tuple[int, int, float]:
    directory = Path(tempfile.mkdtemp(prefix=f"{mode}-{threads}-", dir=base))
    wal = WriteAheadLog(directory, fsync=mode)  # type: ignore[arg-type]
    fsyncs_before = wal.fsync_count
    stop = threading.Event()
    counts = [0] * threads

    def worker(index: int) -> None:
        n = 0
        while not stop.is_set():
            wal.append(1, body)
            n += 1
        counts[index] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    fsyncs = wal.fsync_count - fsyncs_before
    wal.close()
    return sum(counts), fsyncs, elapsed


def crc32c_py(data: bytes) -> int:
    """Slicing-by-8 CRC32C, the fastest pure-Python form tried."""
    crc = 0xFFFFFFFF
    n = len(data) // 8 * 8
    t0, t1, t2, t3, t4, t5, t6, t7 = _TABLES
    for (q,) in struct.iter_unpack("<Q", data[:n]):
        x = q ^ crc
        crc = (
            t7[x & 0xFF]
            ^ t6[(x >> 8) & 0xFF]
            ^ t5[(x >> 16) & 0xFF]
            ^ t4[(x >> 24) & 0xFF]
            ^ t3[(x >> 32) & 0xFF]
            ^ t2[(x >> 40) & 0xFF]
            ^ t1[(x >> 48) & 0xFF]
            ^ t0[x >> 56]
        )
    for b in data[n:]:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _tables() -> list[list[int]]:
    base = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        base.append(c)
    tables = [base]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ base[prev[i] & 0xFF] for i in range(256)])
    return tables


_TABLES = _tables()


def checksum_speed() -> None:
    data = os.urandom(1 << 20)
    assert crc32c_py(b"123456789") == 0xE3069283
    start = time.perf_counter()
    crc32c_py(data)
    py = 1 / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(200):
        zlib.crc32(data)
    c = 200 / (time.perf_counter() - start)
    print(f"\nchecksum: pure-Python CRC32C {py:,.1f} MiB/s, zlib.crc32 {c:,.0f} MiB/s")


def recovery_speed(base: Path, body: bytes) -> None:
    directory = Path(tempfile.mkdtemp(prefix="recovery-", dir=base))
    with WriteAheadLog(directory, fsync="off") as wal:
        for _ in range(200):
            wal.append_many([(1, body)] * 1000)
    start = time.perf_counter()
    result = read_log(directory)
    scanned = time.perf_counter() - start
    start = time.perf_counter()
    replayed = sum(1 for _ in result)
    replay = time.perf_counter() - start
    print(
        f"recovery: validate {result.last_lsn:,} records in {scanned:.2f} s "
        f"({result.last_lsn / scanned:,.0f}/s), replay {replayed:,} in {replay:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of each cell")
    parser.add_argument("--body", type=int, default=100, help="record body size in bytes")
    parser.add_argument("--dir", default=None, help="where to put the logs")
    args = parser.parse_args()
    body = b"x" * args.body
    with tempfile.TemporaryDirectory(prefix="wal-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        print(f"{args.body}-byte bodies, {args.seconds:.1f} s per cell, logs in {base}")
        print(
            f"{'mode':<9}{'threads':>8}{'appends/s':>12}{'fsyncs':>9}{'fsync/rec':>11}{'rec/fsync':>11}"
        )
        for mode in ("always", "interval", "off"):
            for threads in (1, 8, 64):
                appends, fsyncs, elapsed = run_cell(base, mode, threads, args.seconds, body)
                per = fsyncs / appends if appends else 0.0
                ratio = f"{appends / fsyncs:,.1f}" if fsyncs else "-"
                print(
                    f"{mode:<9}{threads:>8}{appends / elapsed:>12,.0f}{fsyncs:>9}"
                    f"{per:>11.4f}{ratio:>11}"
                )
        recovery_speed(base, body)
    checksum_speed()


if __name__ == "__main__":
    main()
