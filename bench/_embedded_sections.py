"""Sections 1-3 of ``embedded_bench.py``: durable enqueues, recovery, memory per task."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _util import table

from dtq_core.backends.base import NewTask
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.codec import encode_message

MODES = ("always", "interval", "off")


def new_task(tid: str) -> NewTask:
    payload = encode_message(tid, "bench.noop", [], {})
    return NewTask(tid, "bench.noop", "default", 0, payload)


def fresh_dir(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"dtq-bench-{tag}-"))


# -- 1. durable enqueues ---------------------------------------------------------------


def fsync_latency(samples: int = 200) -> float:
    """Median seconds of a 100-byte append + fsync on this disk (the temp directory)."""
    d = fresh_dir("fsync")
    fd = os.open(d / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    took = []
    for _ in range(samples):
        os.write(fd, b"x" * 100)
        t0 = time.perf_counter()
        os.fsync(fd)
        took.append(time.perf_counter() - t0)
    os.close(fd)
    shutil.rmtree(d)
    return statistics.median(took)


def enqueue_run(
    mode: str, threads: int, seconds: float, serialize: bool = False, slow_fsync: float = 0.0
) -> dict[str, float]:
    """Enqueue from ``threads`` producers for ``seconds``; rate and fsyncs per enqueue.

    ``slow_fsync`` adds that many seconds to every fsync (through ``fsync_fn``), to show
    a slower disk than this one.
    """

    def fsync_fn(fd: int) -> None:
        os.fsync(fd)
        if slow_fsync:
            time.sleep(slow_fsync)

    d = fresh_dir("enq")
    url = f"embedded://{d}?fsync={mode}&checkpoint_mb=100000&checkpoint_s=1e9"
    b = EmbeddedBackend(url, fsync_fn=fsync_fn)
    b.open()
    lock = threading.Lock()
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def producer(p: int) -> None:
        start.wait()
        i = 0
        while not stop.is_set():
            t = new_task(f"p{p}-{i}")
            if serialize:
                with lock:
                    b.enqueue(t, time.time())
            else:
                b.enqueue(t, time.time())
            i += 1
        counts[p] = i

    ts = [threading.Thread(target=producer, args=(p,)) for p in range(threads)]
    for t in ts:
        t.start()
    f0 = b.info()["fsyncs"]
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    fsyncs = b.info()["fsyncs"] - f0
    b.close()
    shutil.rmtree(d)
    n = sum(counts)
    return {"rate": n / elapsed, "fsyncs_per": fsyncs / max(n, 1), "n": n}


def median_run(fn: Callable[[], dict[str, float]], runs: int) -> dict[str, float]:
    got = [fn() for _ in range(runs)]
    return {k: statistics.median(g[k] for g in got) for k in got[0]}


def bench_enqueue(args: argparse.Namespace) -> None:
    print("\n## 1. Durable enqueues/s (EmbeddedBackend.enqueue, no Broker)\n")
    rows = []
    results: dict[tuple[str, int], dict[str, float]] = {}
    for mode in MODES:
        for threads in (1, 8, 64):
            r = median_run(lambda m=mode, t=threads: enqueue_run(m, t, args.seconds), args.runs)
            results[mode, threads] = r
            rows.append([f"fsync={mode}", threads, r["rate"], f"{r['fsyncs_per']:.3f}"])
    print(table(["mode", "producers", "enqueues/s", "fsyncs/enqueue"], rows))
    base = median_run(lambda: enqueue_run("always", 64, args.seconds, True), args.runs)
    group = results["always", 64]
    rows = [
        ["group commit", group["rate"], f"{group['fsyncs_per']:.3f}"],
        ["one fsync per record (serialized)", base["rate"], f"{base['fsyncs_per']:.3f}"],
        ["ratio", f"{group['rate'] / base['rate']:.1f}x", ""],
    ]
    lat = fsync_latency()
    print(f"\nthis disk: a 100-byte append + fsync takes {lat * 1000:.2f} ms (median of 200)")
    print("\n" + table(["fsync=always, 64 producers", "enqueues/s", "fsyncs/enqueue"], rows))
    slow = 0.002
    sg = median_run(lambda: enqueue_run("always", 64, args.seconds, slow_fsync=slow), args.runs)
    sb = median_run(lambda: enqueue_run("always", 64, args.seconds, True, slow), args.runs)
    rows = [
        ["group commit", sg["rate"], f"{sg['fsyncs_per']:.3f}"],
        ["one fsync per record (serialized)", sb["rate"], f"{sb['fsyncs_per']:.3f}"],
        ["ratio", f"{sg['rate'] / sb['rate']:.1f}x", ""],
    ]
    print(
        f"\nthe same on a slower disk, simulated: every fsync + {slow * 1000:.0f} ms "
        "(os.fsync, then a sleep, through fsync_fn)"
    )
    print(table(["fsync=always, 64 producers", "enqueues/s", "fsyncs/enqueue"], rows))


# -- 2. recovery ------------------------------------------------------------------------

BUILD = r"""
import json, os, sys, time
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock
sys.path.insert(0, sys.argv[3])
from _embedded_sections import new_task
path, ops = sys.argv[1], int(sys.argv[2])
clock = FakeClock(1_700_000_000.0)
b = EmbeddedBackend(f"embedded://{path}?fsync=off&checkpoint_mb=100000&checkpoint_s=1e9", clock)
b.result_ttl = 30.0
b.open()
n = 0
i = 0
t0 = time.perf_counter()
while n < ops:
    tid = f"t{i:08d}"
    i += 1
    b.enqueue(new_task(tid), clock.now()); n += 1
    if n < ops:
        (d,) = b.claim(None, "w", 30.0, 1, clock.now()); n += 1
        if n < ops:
            b.ack(d.task_id, d.token, None, clock.now()); n += 1
        else:
            b.release(d.task_id, d.token, clock.now())
    clock.advance(0.01)
    if i % 333 == 0:
        b.expire(clock.now())
b.set_key("built", str(n), None, clock.now())  # waits until every record is written
records = b.info()["next_lsn"] - 1
live = sum(b.count_by_state().values())
seconds = time.perf_counter() - t0
import shutil
shutil.copytree(path, sys.argv[4])  # the log alone, as a crash would leave it
b.checkpoint()  # and this directory gets one checkpoint of the live state
os.sync()  # so no recovery below waits for the copy's writeback in its fsyncs
print(json.dumps({"ops": n, "records": records, "seconds": seconds, "live": live}), flush=True)
os._exit(0)  # no close
"""

OPEN = r"""
import json, os, sys, time
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
path = sys.argv[1]
url = f"embedded://{path}?checkpoint_mb=100000&checkpoint_s=1e9"
b = EmbeddedBackend(url, FakeClock(1_800_000_000.0))
before = rss()
t0 = time.perf_counter()
b.open()
wall = time.perf_counter() - t0
info = b.info()
import gc; gc.collect()
live = sum(b.count_by_state().values())
print(json.dumps({"wall": wall, "recovery_seconds": info["recovery_seconds"],
                  "replayed": info["replayed_records"], "checkpoint_lsn": info["checkpoint_lsn"],
                  "live": live, "rss_delta": rss() - before}), flush=True)
if len(sys.argv) > 2 and sys.argv[2] == "close":
    b.close()
os._exit(0)
"""


def run_py(code: str, *argv: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def bench_recovery(args: argparse.Namespace) -> None:
    print(f"\n## 2. Recovery of {args.ops:,} logged operations\n")
    base = fresh_dir("rec")
    log_only = base / "log-only"
    ckpt = base / "checkpointed"
    here = str(Path(__file__).resolve().parent)
    built = run_py(BUILD, str(ckpt), str(args.ops), here, str(log_only))
    rows = []
    for name, d in (("log only (no checkpoint)", log_only), ("after a checkpoint", ckpt)):
        runs = [run_py(OPEN, str(d))]
        if runs[0]["recovery_seconds"] < 10:  # medians of 3 where cheap
            runs += [run_py(OPEN, str(d)) for _ in range(args.runs - 1)]
        rec = statistics.median(r["recovery_seconds"] for r in runs)
        rate = runs[0]["replayed"] / rec if runs[0]["replayed"] else 0
        rows.append(
            [
                name,
                runs[0]["replayed"],
                runs[0]["live"],
                f"{dir_size(d) / 2**20:.1f} MiB",
                f"{rec:.2f} s" + (f" (median of {len(runs)})" if len(runs) > 1 else ""),
                f"{rate:,.0f}" if rate else "-",
            ]
        )
    print(
        f"built: {built['ops']:,} operations = {built['records']:,} log records in "
        f"{built['seconds']:.1f} s; live state at the end: {built['live']:,} records"
    )
    headers = ["directory", "records replayed", "live records", "on disk", "recovery"]
    print(table([*headers, "records/s"], rows))
    shutil.rmtree(base)


# -- 3. memory per queued task -----------------------------------------------------------

MEMORY = r"""
import gc, json, os, sys, time
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock
sys.path.insert(0, sys.argv[3])
from _embedded_sections import new_task
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
path, n = sys.argv[1], int(sys.argv[2])
clock = FakeClock(1_700_000_000.0)
b = EmbeddedBackend(f"embedded://{path}?fsync=off&checkpoint_mb=100000&checkpoint_s=1e9", clock)
b.open()
gc.collect()
before = rss()
payload = 0
t0 = time.perf_counter()
for start in range(0, n, 1000):
    batch = [new_task(f"q{i:08d}") for i in range(start, min(n, start + 1000))]
    payload += sum(len(t.payload) for t in batch)
    b.enqueue_many(batch, clock.now())
    del batch
gc.collect()
after = rss()
print(json.dumps({"n": n, "rss_delta": after - before, "payload": payload,
                  "seconds": time.perf_counter() - t0, "pending": b.count_by_state()}, default=str),
      flush=True)
os._exit(0)
"""


def bench_memory(args: argparse.Namespace) -> None:
    n = args.queued
    print(f"\n## 3. Memory per queued task, {n:,} queued (fsync=off, enqueue_many batches)\n")
    d = fresh_dir("mem") / "data"
    here = str(Path(__file__).resolve().parent)
    m = run_py(MEMORY, str(d), str(n), here)
    rec = run_py(OPEN, str(d))
    run_py(OPEN, str(d), "close")  # recovers again, then closes: a checkpoint of them all
    ckpt = run_py(OPEN, str(d))
    if ckpt["replayed"] or not ckpt["checkpoint_lsn"]:
        raise RuntimeError(f"expected a checkpoint load alone, got {ckpt}")
    per_payload = m["payload"] / n
    rows = [
        [name, f"{rss / n:.0f}", f"{per_payload:.0f}", f"{rss / n - per_payload:.0f}"]
        for name, rss in (
            ("while enqueueing", m["rss_delta"]),
            (f"after recovery from the log ({rec['recovery_seconds']:.1f} s)", rec["rss_delta"]),
            (f"after loading a checkpoint ({ckpt['recovery_seconds']:.1f} s)", ckpt["rss_delta"]),
        )
    ]
    print(table(["measured", "RSS bytes/task", "payload bytes", "over the payload"], rows))
    shutil.rmtree(d.parent)
