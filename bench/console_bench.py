"""The console under load: key response, its CPU share, and what it costs the engine.

    python bench/console_bench.py [--backlog 1000000] [--rate 5000] [--seconds 15]

Sets up an in-process engine on memory:// with ``--backlog`` tasks queued on a paused
queue (they stay queued: the depth the console must not scan) and a producer feeding
no-op tasks to a second queue at ``--rate`` per second, served by worker threads. Then:

1. engine throughput for ``--seconds`` with no console;
2. the same with the console attached (headless, real refresh interval), measuring the
   console's CPU: the UI thread's own CPU time plus the CPU spent inside Console API
   calls made by the feed's worker threads, as a share of one core;
3. key response with the console attached: for screen switches, the help dialog and
   cursor moves, the time from the key event to the first frame that shows its effect
   (first visit to a screen and warm visits are reported apart).

Before that, the tasks list at scale: ``--pages`` tasks (default 1,000,000) in a fresh
memory:// backend and a fresh embedded:// store (``fsync=off`` to fill it quickly), then
the time of a first page and of the next one (keyset cursor) for every sort key and
for filters (``Backend.task_page``, the call behind the console's Tasks screen), and the
bytes per task the sort index holds. ``--pages-only`` stops there; ``--pages 0`` skips it.

Everything is one Python process, so the console and the engine share the GIL: the
throughput difference is the console's real cost in that setting. Machine load from
other processes shows up in every figure; the script prints the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _pages import fill, index_bytes, time_pages
from _util import percentile, table

from dtq_core import Broker, BrokerConfig, task
from dtq_core.backends.base import NewTask
from dtq_core.codec import encode_message
from dtq_core.ids import new_id
from dtq_core.registry import Registry
from dtq_tui.app import DTQApp
from dtq_tui.dialogs.help import HelpDialog

REG = Registry()


@task(name="noop", registry=REG, queue="flow", max_retries=0)
def noop() -> None:
    return None


@task(name="bulk", registry=REG, queue="backlog", max_retries=0)
def bulk(i: int) -> int:
    return i


class MeteredConsole:
    """Wraps a Console API and adds up the CPU time spent inside its calls (any thread)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cpu = 0.0
        self.calls = 0
        self.by_method: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                with self._lock:
                    self.cpu += spent
                    self.calls += 1
                    self.by_method.setdefault(name, []).append(spent)

        call.__name__ = name
        return call


def fill_backlog(broker: Broker, n: int) -> float:
    """Queue ``n`` tasks on the paused ``backlog`` queue; return the seconds it took."""
    t0 = time.perf_counter()
    broker.control.pause_queue("backlog")
    backend = broker.backend
    chunk = 20_000
    for start in range(0, n, chunk):
        batch = []
        for i in range(start, min(n, start + chunk)):
            tid = new_id()
            batch.append(NewTask(tid, "bulk", "backlog", 0, encode_message(tid, "bulk", [i], {})))
        backend.enqueue_many(batch, broker.clock.now())
    return time.perf_counter() - t0


class Producer(threading.Thread):
    """Enqueues no-op tasks at a target rate, in small paced batches."""

    def __init__(self, broker: Broker, rate: float) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.broker = broker
        self.rate = rate
        self.stop_flag = threading.Event()
        self.sent = 0

    def run(self) -> None:
        tick = 0.01
        per_tick = self.rate * tick
        owed = 0.0
        next_t = time.perf_counter()
        send = self.broker.send
        while not self.stop_flag.is_set():
            owed += per_tick
            while owed >= 1:
                # Keep the flow queue from growing without bound if workers fall behind.
                send("noop")
                self.sent += 1
                owed -= 1
            next_t += tick
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.perf_counter()


def succeeded(broker: Broker) -> int:
    """Tasks finished successfully so far (the engine's own counter)."""
    return int(broker.metrics.counters().get("succeeded", 0))


def measure_engine(broker: Broker, seconds: float) -> float:
    """Tasks/s completed over ``seconds`` (blocking)."""
    c0, t0 = succeeded(broker), time.perf_counter()
    time.sleep(seconds)
    return (succeeded(broker) - c0) / (time.perf_counter() - t0)


async def with_console(
    broker: Broker, seconds: float, refresh: float, size: tuple[int, int], prewarm: bool
) -> dict[str, Any]:
    """Attach the console; measure throughput, CPU and key response."""
    console = MeteredConsole(broker.control)
    # As in a terminal: the other screens are built in the background after start.
    app = DTQApp(console, refresh_s=refresh, prewarm=prewarm)
    frames: list[tuple[float, Any, int | None]] = []
    out: dict[str, Any] = {}
    async with app.run_test(size=size):
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            if renderable is not None:
                focused = app.focused
                row = getattr(focused, "cursor_row", None)
                frames.append((time.perf_counter(), screen, row))
            original(screen, renderable)

        app._display = display  # type: ignore[method-assign]
        while app.snapshot is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(6.0 if prewarm else 1.0)  # let the background build finish

        # 1. Throughput and CPU with the console on the overview, nobody typing.
        ui0, api0 = time.thread_time(), console.cpu
        c0, t0 = succeeded(broker), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        out["rate"] = (succeeded(broker) - c0) / wall
        out["ui_cpu"] = (time.thread_time() - ui0) / wall
        out["api_cpu"] = (console.cpu - api0) / wall
        out["polls"] = app.feed.polls
        out["poll_ms"] = app.feed.last_poll_s * 1000

        # 2. Key response.
        async def press(key: str, done: Any, timeout: float = 5.0) -> float:
            start = time.perf_counter()
            n = len(frames)
            await app._press_keys([key])
            while True:
                for ts, screen, row in frames[n:]:
                    if ts >= start and done(screen, row):
                        return (ts - start) * 1000
                if time.perf_counter() - start > timeout:
                    return float("nan")
                await asyncio.sleep(0.001)

        first: dict[str, float] = {}
        warm: list[float] = []
        cursor: list[float] = []
        dialogs: list[float] = []
        names = [
            "latency",
            "tasks",
            "dead",
            "workflows",
            "schedules",
            "limits",
            "workers",
            "overview",
        ]
        for i, name in enumerate(names, start=2):
            key = str(i if i <= 8 else 1)
            ms = await press(key, lambda s, r, n=name: app.current_mode == n and s is app.screen)
            first[name] = ms
            await asyncio.sleep(0.3)
        for _ in range(3):
            for i, name in enumerate(names, start=2):
                key = str(i if i <= 8 else 1)
                ms = await press(
                    key, lambda s, r, n=name: app.current_mode == n and s is app.screen
                )
                warm.append(ms)
                await asyncio.sleep(0.2)
        await press("3", lambda s, r: app.current_mode == "tasks")
        await asyncio.sleep(2.5)  # the first page is in
        for _ in range(20):
            table = app.screen.query_one("#tasks").table  # type: ignore[attr-defined]
            want = table.cursor_row + 1
            cursor.append(await press("down", lambda s, r, w=want: r == w))
            await asyncio.sleep(0.1)
        for _ in range(5):
            dialogs.append(await press("question_mark", lambda s, r: isinstance(s, HelpDialog)))
            await asyncio.sleep(0.2)
            dialogs.append(await press("escape", lambda s, r: not isinstance(s, HelpDialog)))
            await asyncio.sleep(0.2)
        out["first"] = first
        out["warm"] = warm
        out["cursor"] = cursor
        out["dialogs"] = dialogs

        # 3. Throughput while someone browses the tasks screen (it re-reads its page).
        await press("3", lambda s, r: app.current_mode == "tasks")
        ui0, api0 = time.thread_time(), console.cpu
        c0, t0 = succeeded(broker), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        out["rate_tasks_screen"] = (succeeded(broker) - c0) / wall
        out["ui_cpu_tasks"] = (time.thread_time() - ui0) / wall
        out["api_cpu_tasks"] = (console.cpu - api0) / wall
        out["methods"] = {
            k: (len(v), statistics.median(v) * 1000, max(v) * 1000)
            for k, v in console.by_method.items()
        }
    return out


def stats(vals: list[float]) -> str:
    good = sorted(v for v in vals if v == v)
    if not good:
        return "n/a"
    lost = len(vals) - len(good)
    text = (
        f"median {statistics.median(good):.0f} ms, p95 {percentile(good, 95):.0f} ms, "
        f"max {good[-1]:.0f} ms (n={len(good)})"
    )
    return text + (f", {lost} timed out" if lost else "")


def page_figures(n: int) -> None:
    """Time first pages on memory and embedded with ``n`` tasks; print the tables.

    On embedded, also through the owner's socket, as ``dtq-tui --backend`` reads them.
    """
    import tempfile

    from dtq_core.control import connect

    for label in ("memory", "embedded"):
        with tempfile.TemporaryDirectory(prefix="dtq-pages-") as tmp:
            url = "memory://" if label == "memory" else f"embedded://{tmp}?fsync=off"
            # The process owns the store, as a worker does, and serves its console.
            owner = Broker(BrokerConfig(backend=url, num_workers=0, own=True, registry=REG))
            owner.open()
            backend = owner.backend
            try:
                now = time.time()
                took = fill(backend, n, now)
                size = index_bytes(backend)
                per = f"{size / n:.1f} bytes per task" if size is not None and n else "n/a"
                print(f"{label}: {n:,} tasks stored in {took:.1f}s; sort index {per}")
                rows = time_pages(backend, now + n)
                print(table(["first page of 50", "ms", "next page ms", "rows", "total"], rows))
                if label == "embedded":
                    remote = connect(url)
                    try:
                        for spec, sort in (("", "enqueued"), ("state:dead", "name")):
                            flt = spec or None
                            remote.task_page(flt, sort, True, None, 0, 50)
                            t0 = time.perf_counter()
                            for _ in range(5):
                                remote.task_page(flt, sort, True, None, 0, 50)
                            ms = (time.perf_counter() - t0) / 5 * 1000
                            what = f"{spec or 'no filter'}, sort {sort}"
                            print(f"  through the owner's socket ({what}): {ms:.1f} ms")
                    finally:
                        remote.close()
                print()
            finally:
                owner.stop(drain_timeout=0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=1_000_000, help="tasks for the page timings")
    p.add_argument("--pages-only", action="store_true", help="only the page timings")
    p.add_argument("--backlog", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=5000.0, help="target tasks/s of the flow")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each measurement")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--refresh", type=float, default=0.33)
    p.add_argument("--size", default="120x40")
    p.add_argument(
        "--no-prewarm",
        action="store_true",
        help="build each screen on its first visit (as in tests) instead of in the background",
    )
    args = p.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.pages:
        page_figures(args.pages)
    if args.pages_only:
        return
    broker = Broker(
        BrokerConfig(
            backend="memory://",
            num_workers=args.workers,
            registry=REG,
            max_results=200_000,
            result_ttl=60.0,
        )
    )
    broker.open()
    took = fill_backlog(broker, args.backlog)
    print(f"queued {args.backlog:,} tasks on the paused 'backlog' queue in {took:.1f}s")
    broker.start()
    producer = Producer(broker, args.rate)
    producer.start()
    time.sleep(3.0)  # warm up
    try:
        base = measure_engine(broker, args.seconds)
        print(f"engine alone: {base:,.0f} tasks/s (target flow {args.rate:,.0f}/s)")
        res = asyncio.run(
            with_console(broker, args.seconds, args.refresh, (cols, rows), not args.no_prewarm)
        )
        after = measure_engine(broker, args.seconds)
        print(f"engine alone again: {after:,.0f} tasks/s")
    finally:
        producer.stop_flag.set()
        producer.join(timeout=5)
        broker.stop(drain_timeout=1.0)

    ref = (base + after) / 2
    loss = (ref - res["rate"]) / ref * 100 if ref else float("nan")
    loss_tasks = (ref - res["rate_tasks_screen"]) / ref * 100 if ref else float("nan")
    print()
    print(
        table(
            ["figure", "value"],
            [
                ["backlog queued", f"{args.backlog:,}"],
                ["engine tasks/s, no console", f"{ref:,.0f}"],
                ["engine tasks/s, console on overview", f"{res['rate']:,.0f} ({loss:+.1f}% lost)"],
                [
                    "engine tasks/s, console on tasks screen",
                    f"{res['rate_tasks_screen']:,.0f} ({loss_tasks:+.1f}% lost)",
                ],
                ["console CPU, UI thread", f"{res['ui_cpu'] * 100:.1f}% of a core"],
                ["console CPU, Console API calls", f"{res['api_cpu'] * 100:.1f}% of a core"],
                [
                    "console CPU, total",
                    f"{(res['ui_cpu'] + res['api_cpu']) * 100:.1f}% of a core",
                ],
                [
                    "console CPU on tasks screen, UI + API",
                    f"{res['ui_cpu_tasks'] * 100:.1f}% + {res['api_cpu_tasks'] * 100:.1f}%",
                ],
                ["last snapshot poll (wall)", f"{res['poll_ms']:.1f} ms"],
            ],
        )
    )
    print()
    print("key response (key event -> first frame showing the effect):")
    print(
        "  screen switch, first visit: "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in res["first"].items())
    )
    print(f"  screen switch, warm:        {stats(res['warm'])}")
    print(f"  cursor down in tasks table: {stats(res['cursor'])}")
    print(f"  help dialog open/close:     {stats(res['dialogs'])}")
    print("Console API calls (count, median CPU ms, max CPU ms):")
    for name, (n, med, mx) in sorted(res["methods"].items()):
        print(f"  {name:<12} {n:>5}  {med:8.2f}  {mx:8.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
