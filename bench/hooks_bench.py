"""Cost of the hook chain and of the monitoring primitives.

    python bench/hooks_bench.py [--n 20000] [--runs 5]

Prints (medians of ``--runs``):
- engine throughput of no-op tasks (enqueue N, then run them inline with
  ``broker.work()``, so thread hand-offs do not blur the comparison) with the default
  hook chain (dedup, breaker, rate limit, retry, dead-letter, DAG, cron, latency) versus
  no hooks at all, and the ratio (target: >= 70%);
- the same with the thread pool (4 workers, results collected);
- ns per ``Histogram.record`` and per ``CronExpression.next``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dtq_core import Broker, BrokerConfig, task
from dtq_core.monitoring.histogram import Histogram
from dtq_core.registry import Registry
from dtq_core.scheduling.cron import CronExpression

REG = Registry()


@task(name="noop", registry=REG)
def noop() -> None:
    return None


def inline(n: int, hooks: bool) -> float:
    cfg = BrokerConfig(
        backend="memory://",
        num_workers=0,
        registry=REG,
        max_results=10_000_000,
        hooks=None if hooks else [],
    )
    b = Broker(cfg)
    b.open()
    t0 = time.perf_counter()
    for _ in range(n):
        noop.apply_async((), broker=b)
    ran = b.work()
    dt = time.perf_counter() - t0
    b.stop()
    assert ran == n
    return n / dt


def pooled(n: int, hooks: bool) -> float:
    cfg = BrokerConfig(
        backend="memory://",
        num_workers=4,
        registry=REG,
        max_results=10_000_000,
        hooks=None if hooks else [],
    )
    with Broker(cfg) as b:
        t0 = time.perf_counter()
        rs = [noop.apply_async((), broker=b) for _ in range(n)]
        for r in rs:
            r.get(timeout=120)
        return n / (time.perf_counter() - t0)


def med(runs: int, fn, *args) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    vals = [fn(*args) for _ in range(runs)]
    return statistics.median(vals), vals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"no-op tasks, memory://, N={args.n}, medians of {args.runs} runs (alternating)")
    for label, fn in (("inline (broker.work)", inline), ("thread pool x4, results", pooled)):
        on_vals, off_vals = [], []
        for _ in range(args.runs):  # alternate so machine noise hits both alike
            off_vals.append(fn(args.n, False))
            on_vals.append(fn(args.n, True))
        on, off = statistics.median(on_vals), statistics.median(off_vals)
        print(
            f"  {label:26s} hooks off {off:>9,.0f}/s   all hooks on {on:>9,.0f}/s   "
            f"ratio {on / off:.0%}"
        )
    h = Histogram()
    vals = [0.000123 * (1 + i % 997) for i in range(1000)]
    per = min(timeit.repeat(lambda: [h.record(v) for v in vals], number=100, repeat=5))
    print(f"  Histogram.record: {per / 100_000 * 1e9:,.0f} ns")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for expr, tz in (
        ("*/15 * * * *", None),
        ("30 9 * * mon-fri", "Europe/Berlin"),
        ("0 0 29 2 *", None),
    ):
        c = CronExpression(expr, tz)
        per = min(timeit.repeat(lambda c=c: c.next(start), number=2000, repeat=5)) / 2000
        print(f"  CronExpression({expr!r}{', ' + tz if tz else ''}).next: {per * 1e6:,.1f} us")


if __name__ == "__main__":
    main()
