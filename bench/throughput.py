"""End-to-end throughput and enqueue->start latency of no-op tasks, in memory.

    python bench/throughput.py [--n 50000] [--runs 3] [--threads 1,4,8] [--latency-runs 3]

Prints, per worker-thread count, the median of ``--runs`` runs of:
- enqueue: tasks/s for ``apply_async`` alone;
- e2e: tasks/s from the first enqueue to the last result collected (enqueue N, run N,
  every ``AsyncResult.get``);
- raw loop: tasks/s of the same flood through a bare heap + condition + threads loop
  (:func:`run_raw`), run alternately with the e2e runs, and e2e/raw: the median of
  the ratios of each pair (the figure to compare across machines and loads), and
  the CPU of the process per task of both (less sensitive to other processes);
- inline: tasks/s when the calling thread runs them (``broker.work()``), no thread handoff;
- latency: enqueue->start p50/p99 in ms at a steady paced rate (not a flood, so the figure
  is the engine's hand-off time, not time spent queued behind a backlog);
and the cost of one event publication with 0 and 3 extra subscribers, and per event in
a batch of 64 (how a pool publishes the successes it stores together).
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import median_of, percentile, table

from dtq_core import Broker, BrokerConfig, task
from dtq_core.events import EventBus
from dtq_core.registry import Registry

REG = Registry()


@task(name="noop", registry=REG)
def noop() -> None:
    return None


def config(threads: int) -> BrokerConfig:
    return BrokerConfig(
        backend="memory://", num_workers=threads, registry=REG, max_results=10_000_000
    )


def run_e2e(n: int, threads: int) -> tuple[float, float, float]:
    """Enqueue tasks/s, end-to-end tasks/s and CPU µs of the process per task."""
    with Broker(config(threads)) as b:
        c0 = time.process_time()
        t0 = time.perf_counter()
        results = [noop.apply_async((), broker=b) for _ in range(n)]
        t1 = time.perf_counter()
        for r in results:
            r.get(timeout=120)
        t2 = time.perf_counter()
        cpu = (time.process_time() - c0) / n * 1e6
    return n / (t1 - t0), n / (t2 - t0), cpu


def run_raw(n: int, threads: int) -> tuple[float, float]:
    """The floor of thread hand-off: a heap, a condition and ``threads`` threads.

    The same shape as the engine's path without the engine: the producer pushes each
    no-op call on a heap under a condition and notifies; workers pop, call it and put
    its result in a dict; the caller waits for every result. Tasks/s and CPU µs of the
    process per task.
    """
    heap: list[tuple[int, int, int, Callable[[], None]]] = []
    cond = threading.Condition()
    done = threading.Condition()
    results: dict[int, None] = {}
    stopped = False

    def work() -> None:
        while True:
            with cond:
                while not heap and not stopped:
                    cond.wait()
                if not heap:
                    return
                _, _, i, fn = heapq.heappop(heap)
            r = fn()
            with done:
                results[i] = r
                if len(results) == n:
                    done.notify_all()

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        with cond:
            heapq.heappush(heap, (0, i, i, noop.fn))
            cond.notify()
    with done:
        while len(results) < n:
            done.wait()
    dt = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / n * 1e6
    with cond:
        stopped = True
        cond.notify_all()
    for t in workers:
        t.join()
    return n / dt, cpu


def run_inline(n: int) -> float:
    b = Broker(config(0))
    for _ in range(n):
        noop.apply_async((), broker=b)
    t0 = time.perf_counter()
    ran = b.work()
    dt = time.perf_counter() - t0
    b.stop()
    assert ran == n
    return n / dt


def run_latency(threads: int, rate: float, seconds: float) -> tuple[float, float]:
    enq: dict[str, float] = {}
    lat: list[float] = []
    lock = threading.Lock()
    with Broker(config(threads)) as b:

        def on_event(ev: object) -> None:
            if ev.new == "RUNNING":  # type: ignore[attr-defined]
                with lock:
                    t = enq.get(ev.task_id)  # type: ignore[attr-defined]
                if t is not None:
                    lat.append(time.perf_counter() - t)

        b.events.subscribe(on_event)
        total = int(rate * seconds)
        start = time.perf_counter()
        results = []
        for i in range(total):
            target = start + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(0.001, target - now))
            with lock:
                tid = f"lat-{threads}-{i}-{start}"
                enq[tid] = time.perf_counter()
            results.append(noop.apply_async((), broker=b, task_id=tid))
        for r in results:
            r.get(timeout=60)
    lat.sort()
    return percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3


def publish_cost(extra_subscribers: int, batch: int = 1, n: int = 200_000) -> float:
    """Nanoseconds per event published in batches of ``batch``, as the broker does."""
    bus = EventBus()
    for _ in range(extra_subscribers):
        bus.subscribe(lambda ev: None)
    trs = [("id", "noop", "default", "PENDING", "RUNNING", None)] * batch
    many = getattr(bus, "publish_many", None)
    t0 = time.perf_counter()
    for _ in range(n // batch):
        if many is not None:
            many(0.0, trs, None)
        else:  # an engine from before batches (for comparisons)
            for t in trs:
                bus.publish(0.0, *t[:5], None, t[5])
    return (time.perf_counter() - t0) / (n // batch * batch) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", default="1,4,8")
    ap.add_argument("--rate", type=float, default=1000.0, help="paced rate for latency")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--latency-runs", type=int, default=3, help="paced runs (median p50/p99)")
    args = ap.parse_args()
    if min(args.n, args.runs, args.latency_runs) < 1 or args.rate <= 0 or args.seconds <= 0:
        sys.exit("throughput.py: --n, --runs, --latency-runs, --rate and --seconds must be > 0")
    rows = []
    for threads in [int(x) for x in args.threads.split(",")]:
        # Interleaved, so both see the same load: the machine is shared and noisy.
        runs, raws = [], []
        for _ in range(args.runs):
            runs.append(run_e2e(args.n, threads))
            raws.append(run_raw(args.n, threads))
        enq = statistics.median(r[0] for r in runs)
        e2e = statistics.median(r[1] for r in runs)
        raw = statistics.median(w[0] for w in raws)
        ratio = statistics.median(r[1] / w[0] for r, w in zip(runs, raws, strict=True))
        cpu = statistics.median(r[2] for r in runs)
        cpu_raw = statistics.median(w[1] for w in raws)
        lat = [run_latency(threads, args.rate, args.seconds) for _ in range(args.latency_runs)]
        p50 = statistics.median(x[0] for x in lat)
        p99 = statistics.median(x[1] for x in lat)
        rows.append(
            (threads, enq, e2e, raw, f"{ratio:.3f}", f"{cpu:.1f}", f"{cpu_raw:.1f}", p50, p99)
        )
        print(
            f"  threads={threads}: e2e runs {[round(r[1]) for r in runs]}, "
            f"raw runs {[round(w[0]) for w in raws]}, p99 runs {[round(x[1], 2) for x in lat]}",
            flush=True,
        )
    inline, inline_runs = median_of(args.runs, lambda: run_inline(args.n))
    print()
    print(f"no-op tasks, memory://, N={args.n}, median of {args.runs} runs")
    print(
        table(
            [
                "threads",
                "enqueue/s",
                "e2e tasks/s",
                "raw loop/s",
                "e2e/raw",
                "CPU µs/task",
                "raw CPU µs",
                f"start p50 ms @{args.rate:g}/s",
                "p99 ms",
            ],
            rows,
        )
    )
    print(
        f"inline (caller runs them, broker.work): {inline:,.0f} tasks/s "
        f"(runs {[round(v) for v in inline_runs]})"
    )
    c0, c3 = publish_cost(0), publish_cost(3)
    b0 = publish_cost(0, batch=64)
    print(
        f"event publish: {c0:,.0f} ns with no subscriber, {c3:,.0f} ns with 3 no-op "
        f"subscribers; {b0:,.0f} ns per event in batches of 64 with no subscriber"
    )


if __name__ == "__main__":
    main()
