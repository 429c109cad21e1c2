"""Figures of the embedded store: durable enqueues, group commit, recovery, memory, drain.

    python bench/embedded_bench.py [--quick] [--only enqueue,recovery,memory,drain]
                                   [--ops 1000000] [--queued 1000000] [--drain 3000]

Prints tables:

1. Durable enqueues/s with 1, 8 and 64 producer threads calling
   ``EmbeddedBackend.enqueue`` directly (no Broker), in each fsync mode, and fsyncs per
   enqueue (the log's own fsync counter); then group commit against one fsync per record
   at 64 producers (the baseline serializes the producers with a lock around each
   enqueue, in ``fsync=always``), on this disk and on a simulated slower one (every fsync
   followed by a 2 ms sleep). Median of 3 runs of ``--seconds`` each.
2. Recovery time of ``--ops`` logged operations (enqueue, claim and ack, in thirds; the
   broker's expiry of finished results every 1,000 operations, 30 s result TTL on a fake
   clock) without a checkpoint (the log alone is replayed) and with one (taken at the
   end). The log is built once; the directory is copied before the checkpoint; the
   builder exits without closing. Each figure is a fresh process opening a directory
   (``info()['recovery_seconds']``), median of 3 when one takes under 10 s. Expiry is
   not logged, so the log-only recovery brings back the expired results (the next
   expiry pass drops them).
3. Memory per queued task with ``--queued`` tasks queued: RSS delta over the enqueues
   divided by N, minus the payload bytes; also after recovering them from the log.
4. End-to-end drain of ``--drain`` no-op tasks in one process: a Broker with 8 worker
   threads (thread pool), 8 producer threads enqueueing first, then the drain timed until
   the last durable ack (its SUCCESS event); ``fsync=always``, ``interval`` and ``off``.
   Huey's ``SqliteHuey`` runs the same workload in the same run when ``import huey``
   works (``pip install huey``, in the optional ``bench`` extra): 8 consumer worker
   threads, ``fsync=True`` (``PRAGMA synchronous=FULL``, WAL journal: a commit is on disk
   when it returns, as ``fsync=always``) and ``fsync=False`` (``synchronous=OFF``: never
   fsynced, as ``fsync=off``). Ratios compare equal durability.
"""

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

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
from embedded_bench import new_task
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
        rows.append(
            [
                name,
                runs[0]["replayed"],
                runs[0]["live"],
                f"{dir_size(d) / 2**20:.1f} MiB",
                f"{rec:.2f} s" + (f" (median of {len(runs)})" if len(runs) > 1 else ""),
            ]
        )
    print(
        f"built: {built['ops']:,} operations = {built['records']:,} log records in "
        f"{built['seconds']:.1f} s; live state at the end: {built['live']:,} records"
    )
    print(table(["directory", "records replayed", "live records", "on disk", "recovery"], rows))
    shutil.rmtree(base)


# -- 3. memory per queued task -----------------------------------------------------------

MEMORY = r"""
import gc, json, os, sys, time
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock
sys.path.insert(0, sys.argv[3])
from embedded_bench import new_task
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
    per_payload = m["payload"] / n
    rows = [
        [
            "while enqueueing",
            f"{m['rss_delta'] / n:.0f}",
            f"{per_payload:.0f}",
            f"{m['rss_delta'] / n - per_payload:.0f}",
        ],
        [
            f"after recovery from the log ({rec['recovery_seconds']:.1f} s)",
            f"{rec['rss_delta'] / n:.0f}",
            f"{per_payload:.0f}",
            f"{rec['rss_delta'] / n - per_payload:.0f}",
        ],
    ]
    print(table(["measured", "RSS bytes/task", "payload bytes", "over the payload"], rows))
    shutil.rmtree(d.parent)


# -- 4. drain -------------------------------------------------------------------------


def dtq_drain(mode: str, n: int, workers: int = 8, producers: int = 8) -> dict[str, float]:
    from dtq_core import Broker, BrokerConfig
    from dtq_core.client import task
    from dtq_core.registry import Registry

    reg = Registry()

    @task(name="bench.noop", registry=reg)
    def noop() -> None:
        return None

    d = fresh_dir("drain")
    broker = Broker(
        BrokerConfig(
            backend=f"embedded://{d}?fsync={mode}",
            num_workers=workers,
            registry=reg,  # the default hook chain, as users get it
        )
    )
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    def on_event(ev: Any) -> None:
        if ev.new == "SUCCESS" or getattr(ev.new, "value", None) == "SUCCESS":
            with lock:
                count[0] += 1
                if count[0] == n:
                    done.set()

    broker.events.subscribe(on_event)
    broker.open()
    t0 = time.perf_counter()

    def produce(p: int) -> None:
        for _ in range(p, n, producers):
            broker.send("bench.noop")

    ts = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1 = time.perf_counter()
    broker.start()
    if not done.wait(300):
        raise RuntimeError(f"drained only {count[0]} of {n}")
    t2 = time.perf_counter()
    broker.stop()
    shutil.rmtree(d)
    return {"enqueue": n / (t1 - t0), "drain": n / (t2 - t1), "e2e": n / (t2 - t0)}


def huey_drain(fsync: bool, n: int, workers: int = 8, producers: int = 8) -> dict[str, float]:
    import logging

    from huey import SqliteHuey
    from huey.signals import SIGNAL_COMPLETE

    logging.getLogger("huey").setLevel(logging.ERROR)
    d = fresh_dir("huey")
    h = SqliteHuey(filename=str(d / "huey.db"), fsync=fsync)
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    @h.task()
    def noop() -> None:
        return None

    @h.signal(SIGNAL_COMPLETE)
    def completed(signal: Any, task: Any, *a: Any) -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                done.set()

    t0 = time.perf_counter()

    def produce(p: int) -> None:
        for _ in range(p, n, producers):
            noop()

    ts = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1 = time.perf_counter()
    consumer = h.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        check_worker_health=False,
    )
    consumer.start()
    if not done.wait(600):
        raise RuntimeError(f"huey drained only {count[0]} of {n}")
    t2 = time.perf_counter()
    consumer.stop(graceful=True)
    h.storage.close()
    shutil.rmtree(d)
    return {"enqueue": n / (t1 - t0), "drain": n / (t2 - t1), "e2e": n / (t2 - t0)}


def bench_drain(args: argparse.Namespace) -> None:
    n = args.drain
    print(f"\n## 4. End-to-end drain of {n:,} no-op tasks, one process, 8 worker threads\n")
    rows = []
    dtq: dict[str, dict[str, float]] = {}
    for mode in MODES:
        r = median_run(lambda m=mode: dtq_drain(m, n), args.runs)
        dtq[mode] = r
        label = {
            "always": "an enqueue/ack returns once fsynced (group commit)",
            "interval": "fsync every 50 ms in the background",
            "off": "never fsynced on the hot path",
        }[mode]
        rows.append([f"DTQ embedded fsync={mode}", label, r["enqueue"], r["drain"], r["e2e"]])
    try:
        import huey

        have_huey = True
    except ImportError:
        have_huey = False
        print("(huey is not installed: pip install huey, or the project's bench extra)")
    hy: dict[bool, dict[str, float]] = {}
    if have_huey:
        for fsync in (True, False):
            r = median_run(lambda f=fsync: huey_drain(f, n), args.runs)
            hy[fsync] = r
            label = (
                "PRAGMA synchronous=FULL, WAL: a commit returns once fsynced"
                if fsync
                else "PRAGMA synchronous=OFF: never fsynced"
            )
            rows.append(
                [
                    f"SqliteHuey {huey.__version__} fsync={fsync}",
                    label,
                    r["enqueue"],
                    r["drain"],
                    r["e2e"],
                ]
            )
    print(table(["system", "durability", "enqueue/s", "drain/s", "end-to-end/s"], rows))
    if hy:
        print(
            "\n"
            + table(
                ["equal durability", "drain ratio", "end-to-end ratio"],
                [
                    [
                        "DTQ fsync=always / SqliteHuey fsync=True",
                        f"{dtq['always']['drain'] / hy[True]['drain']:.1f}x",
                        f"{dtq['always']['e2e'] / hy[True]['e2e']:.1f}x",
                    ],
                    [
                        "DTQ fsync=off / SqliteHuey fsync=False",
                        f"{dtq['off']['drain'] / hy[False]['drain']:.1f}x",
                        f"{dtq['off']['e2e'] / hy[False]['e2e']:.1f}x",
                    ],
                    [
                        "DTQ fsync=interval / SqliteHuey fsync=False (weaker)",
                        f"{dtq['interval']['drain'] / hy[False]['drain']:.1f}x",
                        f"{dtq['interval']['e2e'] / hy[False]['e2e']:.1f}x",
                    ],
                ],
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each")
    ap.add_argument("--only", default="enqueue,recovery,memory,drain")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one enqueue run")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--queued", type=int, default=1_000_000)
    ap.add_argument("--drain", type=int, default=3000)
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds, args.ops, args.queued, args.drain = 1, 0.5, 30_000, 30_000, 500
    print(f"# embedded store figures (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    parts = {
        "enqueue": bench_enqueue,
        "recovery": bench_recovery,
        "memory": bench_memory,
        "drain": bench_drain,
    }
    for name in args.only.split(","):
        parts[name.strip()](args)


if __name__ == "__main__":
    main()
