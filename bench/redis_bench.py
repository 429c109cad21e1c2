"""DTQ on Redis against Celery, Dramatiq, RQ, Huey and arq on the same Redis.

    python bench/redis_bench.py [--n 2000] [--runs 3] [--rate 200] [--seconds 3]
                                [--concurrency 8] [--only dtq,huey,...]

Starts its own ``redis-server`` on a free port (``--save '' --appendonly no``), then for
each system runs ``--runs`` rounds of, with one worker process (``--concurrency``
threads, or the peer's equivalent):

- enqueue: tasks/s of ``N`` single enqueues from this process (the system's usual call:
  ``apply_async``, ``delay``, ``send``, ``Queue.enqueue``, calling a Huey task,
  ``enqueue_job``), with no worker running;
- drain: the worker is started on those ``N`` queued no-op tasks; tasks/s from the first
  task start to the last one (start-up excluded; every task records its start);
- latency: with the worker warm, tasks enqueued at a steady ``--rate`` per second for
  ``--seconds``; enqueue->start p50 and p99 (the task records its start; same clock);
- round trips per task, counted client-side by wrapping redis-py's sync and asyncio
  ``send_packed_command`` in the producer and the worker (one call = one request on the
  wire; a pipeline is one); enqueue side over the ``N`` enqueues, worker side over the
  drain window (from the first task start to the last).

Each figure is the median of the runs. Ratios are DTQ's figure over the peer's (for
latency and round trips, the peer's over DTQ's: above 1 means DTQ is better).

Peers are the optional ``bench`` extra (``pip install 'dtq[bench]'``); a peer that is not
installed, or whose worker fails, is reported as such. Run the script with an interpreter
where they are installed (a separate virtualenv is best: the peers pin redis-py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import percentile, table

from bench.peers import _probe

ROOT = Path(__file__).resolve().parents[1]

Enqueue = Callable[[int], None]


# -- the Redis server --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A redis-server this script starts and stops."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            sys.exit("redis-server not found: install it to run this benchmark")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dtq-bench-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = self.client.info("server")["redis_version"]

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- systems -----------------------------------------------------------------------------


@dataclass
class System:
    """One task queue: how to enqueue from here and how to start its worker."""

    name: str
    module: str
    worker: Callable[[int], list[str]]
    producer: Callable[[], tuple[Enqueue, Callable[[], None]]]
    env: dict[str, str] = field(default_factory=dict)
    n_max: int = 10**9
    note: str = ""


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def dtq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.dtq_app import config, noop
    from dtq_core import Broker

    b = Broker(config(0))
    b.open()

    def enq(i: int) -> None:
        noop.apply_async((i,), broker=b)

    return enq, b.stop


def celery_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.celery_app import app, noop

    def enq(i: int) -> None:
        noop.delay(i)

    return enq, app.close


def dramatiq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.dramatiq_app import broker, noop

    def enq(i: int) -> None:
        noop.send(i)

    return enq, broker.close


def rq_producer() -> tuple[Enqueue, Callable[[], None]]:
    import redis
    from rq import Queue

    from bench.peers.rq_app import noop

    conn = redis.Redis.from_url(_probe.url())
    q = Queue("bench", connection=conn)

    def enq(i: int) -> None:
        q.enqueue(noop, i, result_ttl=0)

    return enq, conn.close


def huey_producer() -> tuple[Enqueue, Callable[[], None]]:
    from bench.peers.huey_app import noop

    def enq(i: int) -> None:
        noop(i)

    return enq, lambda: None


def arq_producer() -> tuple[Enqueue, Callable[[], None]]:
    from arq import create_pool

    from bench.peers.arq_app import WorkerSettings

    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(WorkerSettings.redis_settings))

    def enq(i: int) -> None:
        loop.run_until_complete(pool.enqueue_job("noop", i))

    def close() -> None:
        loop.run_until_complete(pool.aclose())
        loop.close()

    return enq, close


SYSTEMS = [
    System(
        "dtq",
        "dtq_core",
        lambda c: [sys.executable, "-m", "bench.peers.dtq_app"],
        dtq_producer,
        note="thread pool, prefetch 1, results kept",
    ),
    System(
        "dtq-prefetch16",
        "dtq_core",
        lambda c: [sys.executable, "-m", "bench.peers.dtq_app"],
        dtq_producer,
        env={"BENCH_PREFETCH": "16"},
        note="prefetch 16",
    ),
    System(
        "celery",
        "celery",
        lambda c: [
            _bin("celery"),
            "-A",
            "bench.peers.celery_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(c),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ],
        celery_producer,
        note="threads pool, ignore_result",
    ),
    System(
        "dramatiq",
        "dramatiq",
        lambda c: [_bin("dramatiq"), "bench.peers.dramatiq_app", "-p", "1", "-t", str(c)],
        dramatiq_producer,
        note="1 process, threads",
    ),
    System(
        "rq",
        "rq",
        lambda c: [
            sys.executable,
            "-c",
            "import bench.peers.rq_app; from rq.cli import main; main()",
            "worker",
            "-u",
            _probe.url(),
            "-q",
            "bench",
        ],
        rq_producer,
        n_max=300,
        note="default worker (forks a work horse per job), result_ttl=0; N capped at 300",
    ),
    System(
        "huey",
        "huey",
        lambda c: [
            _bin("huey_consumer"),
            "bench.peers.huey_app.huey",
            "-w",
            str(c),
            "-k",
            "thread",
            "-q",
        ],
        huey_producer,
        note="RedisHuey, threads, results off",
    ),
    System(
        "arq",
        "arq",
        lambda c: [_bin("arq"), "bench.peers.arq_app.WorkerSettings"],
        arq_producer,
        note="max_jobs = concurrency, keep_result 0",
    ),
]


# -- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    enqueue: float
    drain: float
    p50_ms: float
    p99_ms: float
    rtt_enqueue: float
    rtt_worker: float


class WorkerFailed(RuntimeError):
    pass


def start_worker(sys_: System, args: argparse.Namespace, out: str, log: Path) -> Any:
    env = {
        **os.environ,
        **sys_.env,
        "BENCH_OUT": out,
        "BENCH_REDIS_URL": _probe.url(),
        "BENCH_CONCURRENCY": str(args.concurrency),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("DTQ_BACKEND", None)
    with open(log, "ab") as err:
        return subprocess.Popen(
            sys_.worker(args.concurrency),
            cwd=ROOT,
            env=env,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )


def stop_worker(proc: Any) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # forked children (work horses, pools)


def wait_records(out: str, want: int, proc: Any, log: Path, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        recs = _probe.read(out)
        if len(recs) >= want:
            return recs
        if proc.poll() is not None:
            raise WorkerFailed(f"worker exited {proc.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise WorkerFailed(f"only {len(recs)}/{want} tasks ran in {timeout:.0f}s: {_tail(log)}")
        time.sleep(0.002)


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-3:])[-400:]


def one_run(sys_: System, args: argparse.Namespace, server: Server, tmp: Path) -> Run:
    server.flush()
    out = str(tmp / f"{sys_.name}.rec")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out)
    log = tmp / f"{sys_.name}.log"
    n = min(args.n, sys_.n_max)
    enq, close = sys_.producer()
    try:
        enq(-1)  # warm the connection up (and let the worker's first task go first)
        c0 = _probe.count()
        t0 = time.perf_counter()
        for i in range(n):
            enq(i)
        t1 = time.perf_counter()
        rtt_enq = (_probe.count() - c0) / n
        proc = start_worker(sys_, args, out, log)
        try:
            recs = [r for r in wait_records(out, n + 1, proc, log, args.timeout) if r[0] >= 0]
            starts = sorted(r[1] for r in recs)
            drain = (len(starts) - 1) / (starts[-1] - starts[0])
            rtts = [r[2] for r in recs]
            rtt_worker = (max(rtts) - min(rtts)) / (len(rtts) - 1)

            time.sleep(0.5)  # idle, as a worker usually is between tasks
            # Below half the rate the figure would only be the backlog: not measured.
            k = int(args.rate * args.seconds) if drain >= args.rate / 2 else 0
            sent: dict[int, float] = {}
            base = time.perf_counter() + 0.05
            for j in range(k):
                slot = base + j / args.rate
                while True:
                    left = slot - time.perf_counter()
                    if left <= 0:
                        break
                    time.sleep(left - 0.001 if left > 0.002 else 0)
                i = n + j
                sent[i] = time.time()
                enq(i)
            recs = wait_records(out, n + 1 + k, proc, log, args.timeout)
            lat = sorted((t - sent[i]) * 1000 for i, t, _ in recs if i in sent)
            if not lat:
                lat = [math.nan]
        finally:
            stop_worker(proc)
    finally:
        close()
    return Run(n / (t1 - t0), drain, percentile(lat, 50), percentile(lat, 99), rtt_enq, rtt_worker)


# -- the table ----------------------------------------------------------------------------


def _median(vals: list[float]) -> float:
    """The median of the values that are numbers (NaN when none is)."""
    nums = [v for v in vals if not math.isnan(v)]
    return statistics.median(nums) if nums else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="tasks per enqueue/drain run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200.0, help="tasks/s of the latency phase")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the latency phase")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=60.0, help="per phase, seconds")
    ap.add_argument("--only", default="", help="comma-separated system names")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    load = os.getloadavg()
    server = Server()
    os.environ["BENCH_REDIS_URL"] = server.url
    _probe.install()
    tmp = Path(tempfile.mkdtemp(prefix="dtq-bench-"))
    results: dict[str, Run | str] = {}
    notes: dict[str, str] = {}
    t_all = time.perf_counter()
    try:
        for s in SYSTEMS:
            if only and s.name not in only:
                continue
            notes[s.name] = s.note
            try:
                importlib.import_module(s.module)
            except Exception as exc:
                results[s.name] = f"not installed ({type(exc).__name__}: {exc})"
                print(f"{s.name}: {results[s.name]}", file=sys.stderr)
                continue
            runs: list[Run] = []
            try:
                for r in range(args.runs):
                    runs.append(one_run(s, args, server, tmp))
                    print(f"{s.name} run {r + 1}: {runs[-1]}", file=sys.stderr)
            except Exception as exc:
                results[s.name] = f"failed: {type(exc).__name__}: {exc}"
                print(f"{s.name}: {results[s.name]}", file=sys.stderr)
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
                continue
            results[s.name] = Run(
                *(_median([getattr(x, f) for x in runs]) for f in Run.__dataclass_fields__)
            )
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"redis-server {server.version} on loopback; one worker process, concurrency "
        f"{args.concurrency}; N={args.n}; latency at {args.rate:g}/s for {args.seconds:g}s; "
        f"median of {args.runs} runs; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{time.perf_counter() - t_all:.0f}s in all"
    )
    ref = results.get("dtq")
    headers = [
        "system",
        "enqueue/s",
        "drain/s",
        "p50 ms",
        "p99 ms",
        "RT/task enq",
        "RT/task wrk",
        "RT/task",
        "DTQ x enq",
        "DTQ x drain",
        "DTQ x p99",
        "DTQ x RT",
    ]
    rows: list[list[object]] = []
    failures: list[str] = []
    for name, r in results.items():
        if isinstance(r, str):
            rows.append([name, "(see below)", *["-"] * (len(headers) - 2)])
            failures.append(f"  {name}: {r}")
            continue
        rt = r.rtt_enqueue + r.rtt_worker
        overloaded = math.isnan(r.p99_ms)
        flag = "*" if r.drain < args.rate else ""
        row: list[object] = [
            name,
            r.enqueue,
            r.drain,
            "n/a*" if overloaded else f"{r.p50_ms:.3g}{flag}",
            "n/a*" if overloaded else f"{r.p99_ms:.3g}{flag}",
            r.rtt_enqueue,
            r.rtt_worker,
            rt,
        ]
        if isinstance(ref, Run):
            ref_rt = ref.rtt_enqueue + ref.rtt_worker
            row += [
                f"{ref.enqueue / r.enqueue:.2f}",
                f"{ref.drain / r.drain:.2f}",
                "" if overloaded else f"{r.p99_ms / ref.p99_ms:.2f}",
                f"{rt / ref_rt:.2f}",
            ]
        else:
            row += ["", "", "", ""]
        rows.append(row)
    print(table(headers, rows))
    print(
        f"* drains slower than {args.rate:g}/s: its latency includes a growing backlog "
        f"(n/a: below half that rate, not measured)."
    )
    print("RT = Redis round trips counted client-side (redis-py send_packed_command calls).")
    print(
        "Ratios: DTQ's rate / the system's; for p99 and RT the system's / DTQ's (>1: DTQ better)."
    )
    for name, note in notes.items():
        print(f"  {name}: {note}")
    if failures:
        print("Not measured:")
        print("\n".join(failures))


if __name__ == "__main__":
    main()
