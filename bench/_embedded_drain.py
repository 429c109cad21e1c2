"""Section 4 of ``embedded_bench.py``: end-to-end drain, DTQ embedded against SqliteHuey."""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from typing import Any

from _embedded_sections import MODES, fresh_dir, median_run
from _util import table


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
