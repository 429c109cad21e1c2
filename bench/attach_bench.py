"""Several processes on one embedded store: what attaching costs, as ratios in one run.

    python bench/attach_bench.py [--runs 3] [--n 3000] [--burn-ms 20] [--only ...]

Every figure is measured with real processes on one ``embedded://`` directory
(``fsync=always``), medians of ``--runs``:

1. ``enqueue``: one ``apply_async`` at a time from one thread, in the owner process
   (the owner's own rate) and in a producer process attached to it; the ratio.
2. ``many``: ``apply_many`` of 1,000-task batches from an attached producer, tasks/s.
3. ``drain``: ``--n`` no-op tasks queued, then drained by the owner's own 8 worker
   threads, and (with a fresh store) by an attached worker process with 8 threads while
   the owner runs none; the ratio (attached / owner).
4. ``cpu``: ``--n``/10 tasks that each burn ``--burn-ms`` of CPU, drained by one
   worker process, then by two (1 thread each: pure Python holds the GIL, so one
   process is one core); the speed-up. Twice: with the owner running tasks as one of
   the two, and with a dedicated owner (0 workers) serving two attached workers.

Targets (issue 11): 1 >= 0.5, 2 >= 20,000/s, 3 >= 0.5, 4 >= 1.7.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import table  # noqa: E402

APP = """
from dtq_core import task

@task(name="b.noop", max_retries=0)
def noop(i):
    return None

@task(name="b.burn", max_retries=0)
def burn(ms):
    import time
    end = time.thread_time() + ms / 1000
    x = 0
    while time.thread_time() < end:
        x += 1
    return x
"""

#: A process holding the store: ``own URL WORKERS`` (0 workers: it only serves).
ROLE = """
import sys, time
from dtq_core import Broker, BrokerConfig
import benchapp
url, workers, own = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "own"
b = Broker(BrokerConfig(backend=url, num_workers=workers, own=own, attach_timeout=60)).start()
print("READY", b.backend.info()["role"], flush=True)
sys.stdin.readline()
b.stop(drain_timeout=5)
"""

#: A producer: ``URL MODE N`` prints the enqueue rate.
PRODUCER = """
import sys, time
from dtq_core import Broker, BrokerConfig, set_default_broker
import benchapp
url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = Broker(BrokerConfig(backend=url, num_workers=0, attach_timeout=60))
b.open()
t0 = time.perf_counter()
if mode == "one":
    for i in range(n):
        benchapp.noop.apply_async((i,), broker=b)
else:
    for k in range(0, n, 1000):
        benchapp.noop.apply_many([(i,) for i in range(k, min(n, k + 1000))], broker=b)
print(n / (time.perf_counter() - t0), flush=True)
b.stop()
"""


class Site:
    """A temp dir with the app, and the processes started there."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dtq-attach-bench-"))
        (self.dir / "benchapp.py").write_text(APP)
        (self.dir / "role.py").write_text(ROLE)
        (self.dir / "producer.py").write_text(PRODUCER)
        self.env = dict(os.environ, PYTHONPATH=f"{self.dir}{os.pathsep}{REPO}")
        self.procs: list[subprocess.Popen[str]] = []
        self.n = 0

    def url(self) -> str:
        self.n += 1
        return f"embedded://{self.dir / f'data{self.n}'}?fsync=always"

    def role(self, url: str, workers: int, own: bool) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "role.py", url, str(workers), "own" if own else "attach"],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"a role process did not start: {line!r}")
        self.procs.append(p)
        return p

    def producer(self, url: str, mode: str, n: int) -> float:
        out = subprocess.run(
            [sys.executable, "producer.py", url, mode, str(n)],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip())

    def stop_all(self) -> None:
        for p in reversed(self.procs):  # attached processes first, the owner last
            if p.poll() is None:
                assert p.stdin is not None
                p.stdin.write("\n")
                p.stdin.flush()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    def close(self) -> None:
        self.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)


def owner_enqueue_rate(url: str, n: int) -> float:
    """Single enqueues/s in the owner process itself (this process owns the store)."""
    import benchapp  # type: ignore[import-not-found]

    from dtq_core import Broker, BrokerConfig

    b = Broker(BrokerConfig(backend=url, num_workers=0, own=True))
    b.open()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            benchapp.noop.apply_async((i,), broker=b)
        return n / (time.perf_counter() - t0)
    finally:
        b.stop(drain_timeout=0)


def _time_until_done(b: object, n: int) -> float:
    from dtq_core.task import TaskState

    backend = b.backend  # type: ignore[attr-defined]
    # Paused while queueing, so the clock starts with everything queued.
    t0 = time.perf_counter()
    for q in backend.queue_stats():
        backend.set_paused(q.name, False)
    while backend.count_by_state()[TaskState.SUCCESS] < n:
        time.sleep(0.005)
    return time.perf_counter() - t0


def paused_fill(url: str, n: int, task: str, arg: int) -> None:
    from dtq_core import Broker, BrokerConfig

    b = Broker(BrokerConfig(backend=url, num_workers=0, attach_timeout=60))
    b.open()
    try:
        b.backend.set_paused("default", True)
        for k in range(0, n, 1000):
            b.send_many(task, [(arg,)] * (min(n, k + 1000) - k))
    finally:
        b.stop(drain_timeout=0)


def timed_drain(url: str, n: int) -> float:
    from dtq_core import Broker, BrokerConfig

    b = Broker(BrokerConfig(backend=url, num_workers=0, attach_timeout=60))
    b.open()
    try:
        return _time_until_done(b, n)
    finally:
        b.stop(drain_timeout=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--burn-ms", type=float, default=20.0)
    ap.add_argument("--only", default="enqueue,many,drain,cpu")
    args = ap.parse_args()
    only = set(args.only.split(","))
    site = Site()
    sys.path.insert(0, str(site.dir))
    import benchapp  # noqa: F401  (registers the tasks this process sends)

    rows: list[list[object]] = []
    try:
        if "enqueue" in only:
            own, rem = [], []
            for _ in range(args.runs):
                url = site.url()
                own.append(owner_enqueue_rate(url, args.n // 3))
                site.role(url, 0, own=True)
                rem.append(site.producer(url, "one", args.n // 3))
                site.stop_all()
            o, r = statistics.median(own), statistics.median(rem)
            rows.append(["single enqueue/s: owner / attached producer", o, r, r / o, ">= 0.5"])
        if "many" in only:
            many = []
            for _ in range(args.runs):
                url = site.url()
                site.role(url, 0, own=True)
                many.append(site.producer(url, "many", args.n * 5))
                site.stop_all()
            m = statistics.median(many)
            rows.append(["apply_many tasks/s from an attached producer", "", m, "", ">= 20,000"])
        if "drain" in only:
            own_s, att_s = [], []
            for _ in range(args.runs):
                url = site.url()
                site.role(url, 0, own=True)
                paused_fill(url, args.n, "b.noop", 0)
                site.stop_all()
                site.role(url, 8, own=True)  # the owner's own threads drain
                own_s.append(args.n / timed_drain(url, args.n))
                site.stop_all()
                url = site.url()
                site.role(url, 0, own=True)
                paused_fill(url, args.n, "b.noop", 0)
                site.role(url, 8, own=False)  # an attached worker drains
                att_s.append(args.n / timed_drain(url, args.n))
                site.stop_all()
            o, a = statistics.median(own_s), statistics.median(att_s)
            rows.append(["drain tasks/s: owner threads / attached worker", o, a, a / o, ">= 0.5"])
        if "cpu" in only:
            n = max(20, args.n // 10)
            burn = int(args.burn_ms)
            # (a) the owner runs tasks too; (b) a dedicated owner serves two workers.
            for label, dedicated in (("owner + attached", False), ("2 attached", True)):
                one, two = [], []
                for _ in range(args.runs):
                    for count, out in ((1, one), (2, two)):
                        url = site.url()
                        site.role(url, 0, own=True)
                        paused_fill(url, n, "b.burn", burn)
                        attached = count
                        if not dedicated:
                            site.stop_all()
                            site.role(url, 1, own=True)
                            attached -= 1
                        for _ in range(attached):
                            site.role(url, 1, own=False)
                        out.append(n / timed_drain(url, n))
                        site.stop_all()
                a, b = statistics.median(one), statistics.median(two)
                rows.append(
                    [f"CPU-bound tasks/s: 1 worker process / 2 ({label})", a, b, b / a, ">= 1.7"]
                )
    finally:
        site.close()
    print(table(["figure", "baseline", "measured", "ratio", "target"], rows))


if __name__ == "__main__":
    main()
