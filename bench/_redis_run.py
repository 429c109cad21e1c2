"""One measured run of ``redis_bench.py``: the Redis server, the worker process, the phases."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _redis_systems import System
from _util import percentile

from bench.peers import _probe

ROOT = Path(__file__).resolve().parents[1]


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
        wait_ping(self.client, 10, 0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.version = self.client.info("server")["redis_version"]

    def flush(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- one run ------------------------------------------------------------------------------


def wait_ping(client: Any, timeout: float, step: float) -> None:
    """Wait until a starting redis-server answers PING; re-raise after ``timeout`` s."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(step)


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
        flush = getattr(enq, "flush", None)
        enq(-1)  # warm the connection up (and let the worker's first task go first)
        if flush is not None:
            flush()
        c0 = _probe.count()
        t0 = time.perf_counter()
        for i in range(n):
            enq(i)
        if flush is not None:
            flush()
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
                if flush is not None:
                    flush()
            recs = wait_records(out, n + 1 + k, proc, log, args.timeout)
            lat = sorted((t - sent[i]) * 1000 for i, t, _ in recs if i in sent)
            if not lat:
                lat = [math.nan]
        finally:
            stop_worker(proc)
    finally:
        close()
    return Run(n / (t1 - t0), drain, percentile(lat, 50), percentile(lat, 99), rtt_enq, rtt_worker)
