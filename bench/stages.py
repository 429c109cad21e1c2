"""CPU per task of each stage of the hot path, memory://, in microseconds.

    python bench/stages.py [--n 50000] [--runs 5] [--batch 64]

One thread drives the same code a worker thread runs, stage by stage, over ``--n``
no-op tasks, and measures each stage with ``time.thread_time`` (CPU of this thread
only, so other processes on the machine do not count):

- enqueue: ``apply_async`` (encode, enqueue hooks, the store) without its events;
- claim: the store's claim, in batches of ``--batch`` as a busy pool claims, and the
  runner's ``prepare`` (decode, ``before_run`` hooks), without the start events;
- run: the task's function;
- ack: the outcome stored (in batches, as the pool stores them) and the ``after_run``
  hooks other than the latency histograms;
- events: publishing the three events of each task (enqueued, started, succeeded) on the
  event bus with nobody subscribed, then the same with one subscriber;
- metrics: the counters fed by those events and the latency histograms of each attempt;
- result: ``AsyncResult.get`` of each task.

Prints the median of ``--runs`` runs of each stage, and beside it the part that is the
memory backend's own calls (measured on a bare backend making the same calls).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import table

from dtq_core import Broker, BrokerConfig, task
from dtq_core.backends.base import NewTask, Transition
from dtq_core.backends.memory import MemoryBackend
from dtq_core.codec import encode_message
from dtq_core.events import EventBus
from dtq_core.ids import new_id
from dtq_core.monitoring.latency import LatencyHook
from dtq_core.monitoring.metrics import Metrics
from dtq_core.registry import Registry
from dtq_core.workers.base import WorkerInfo
from dtq_core.workers.runner import Runner

REG = Registry()


@task(name="noop", registry=REG)
def noop() -> None:
    return None


STAGES = ("enqueue", "claim", "run", "ack", "events", "events+1 sub", "metrics", "result")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def one_run(n: int, batch: int) -> dict[str, float]:
    """Seconds of CPU per stage for ``n`` tasks."""
    cfg = BrokerConfig(backend="memory://", num_workers=0, registry=REG, max_results=10_000_000)
    b = Broker(cfg)
    b.open()
    emitted: list[tuple[float, list[Transition], str | None]] = []
    clock = b.clock

    def capture(trs: list[Transition], worker: str | None = None) -> None:
        emitted.append((clock.now(), trs, worker))

    def capture_started(d: Any, worker: str) -> None:
        emitted.append(
            (d.started_at, [Transition(d.task_id, d.name, d.queue, "PENDING", "RUNNING")], worker)
        )

    # The stages' own events are kept aside and published in the events stage.
    b.emit = capture  # type: ignore[method-assign]
    b.emit_started = capture_started  # type: ignore[method-assign]
    runner = Runner(b)
    latency = b.hook(LatencyHook)
    runner.after_run = [h for h in runner.after_run if h is not latency]
    info = WorkerInfo("bench", "thread")
    out: dict[str, float] = {}
    results = []
    out["enqueue"] = _timed(
        lambda: results.extend(noop.apply_async((), broker=b) for _ in range(n))
    )
    deliveries: list[Any] = []

    def claim() -> None:
        backend, queues, lease = b.backend, cfg.queues, cfg.lease_s
        while True:
            got = backend.claim(queues, info.id, lease, batch, clock.now())
            if not got:
                return
            for d in got:
                deliveries.append(runner.prepare(d, info))

    out["claim"] = _timed(claim)
    ran: list[Any] = []
    out["run"] = _timed(lambda: ran.extend(c.task.fn(*c.args, **c.kwargs) for c in deliveries))

    def ack() -> None:
        backend, now = b.backend, clock.now()
        for i in range(0, len(deliveries), batch):
            part = deliveries[i : i + batch]
            acked = backend.ack_many(
                [(c.delivery.task_id, c.delivery.token, None) for c in part], now
            )
            done = list(zip(part, acked, strict=True))
            finish_many = getattr(runner, "_finish_many", None)
            if finish_many is not None:  # what the ack buffer calls after storing a batch
                finish_many(done)
            else:  # an engine from before batches (for comparisons)
                for ctx, trs in done:
                    runner._finish(ctx, trs)

    out["ack"] = _timed(ack)
    out["events"] = _timed(lambda: _publish(EventBus(), emitted))
    bus = EventBus()
    bus.subscribe(lambda ev: None)
    out["events+1 sub"] = _timed(lambda: _publish(bus, emitted))
    metrics = Metrics()
    counting = EventBus()
    _count_into(counting, metrics)
    assert latency is not None
    base = _timed(lambda: _publish(EventBus(), emitted))

    def measure() -> None:
        _publish(counting, emitted)
        for ctx in deliveries:
            latency.after_run(ctx, None, [])

    # Metrics: what subscribing the counters adds to publishing, plus the histograms.
    out["metrics"] = max(0.0, _timed(measure) - base)
    b.emit = type(b).emit.__get__(b)  # type: ignore[method-assign]
    out["result"] = _timed(lambda: [r.get(timeout=10) for r in results])
    assert metrics.counters()["succeeded"] == n
    b.stop()
    return out


def store_run(n: int, batch: int) -> dict[str, float]:
    """Seconds of CPU of the store's own calls per stage, on a bare ``MemoryBackend``.

    The same calls the stages make (``enqueue``; ``claim`` and ``ack_many`` in batches;
    ``outcome`` for a result, or ``get_state`` and ``get`` on an engine without it), with
    payloads encoded beforehand: the part
    of each stage that is the memory backend's.
    """
    backend = MemoryBackend()
    backend.max_results = 10_000_000
    payload = encode_message("x", "noop", [], {})
    tasks = [NewTask(new_id(), "noop", "default", 0, payload) for _ in range(n)]
    now = time.time()
    out: dict[str, float] = {}
    out["enqueue"] = _timed(lambda: [backend.enqueue(t, now) for t in tasks])
    got: list[Any] = []

    def claim() -> None:
        while part := backend.claim(None, "w", 30.0, batch, now):
            got.extend(part)

    out["claim"] = _timed(claim)
    acks = [(d.task_id, d.token, None) for d in got]
    out["ack"] = _timed(
        lambda: [backend.ack_many(acks[i : i + batch], now) for i in range(0, n, batch)]
    )
    outcome = getattr(backend, "outcome", None)
    if outcome is not None:  # what AsyncResult.get reads
        out["result"] = _timed(lambda: [outcome(t.id) for t in tasks])
    else:  # an engine from before Backend.outcome (for comparisons)
        out["result"] = _timed(
            lambda: [(backend.get_state(t.id), backend.get(t.id)) for t in tasks]
        )
    return out


def _publish(bus: EventBus, emitted: list[tuple[float, list[Transition], str | None]]) -> None:
    """Publish what the stages emitted, as the broker does: one call per emit."""
    many = getattr(bus, "publish_many", None)
    if many is not None:
        for ts, trs, worker in emitted:
            many(ts, trs, worker)
        return
    for ts, trs, worker in emitted:  # an engine from before batches (for comparisons)
        for tr in trs:
            bus.publish(ts, tr.task_id, tr.name, tr.queue, tr.old, tr.new, worker, tr.note)


def _count_into(bus: EventBus, metrics: Metrics) -> None:
    if hasattr(metrics, "on_batch"):
        bus.subscribe_batch(metrics.on_batch)
    else:  # an engine from before batches (for comparisons)
        bus.subscribe(metrics.on_event)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="tasks per claim and per ack batch")
    args = ap.parse_args()
    if args.n < 1 or args.runs < 1 or args.batch < 1:
        sys.exit("stages.py: --n, --runs and --batch must be at least 1")
    runs, stores = [], []
    for _ in range(args.runs):  # interleaved: both see the same load
        runs.append(one_run(args.n, args.batch))
        stores.append(store_run(args.n, args.batch))
    rows = []
    us = 1e6 / args.n
    for stage in STAGES:
        vals = [r[stage] * us for r in runs]
        store = statistics.median(r[stage] * us for r in stores) if stage in stores[0] else None
        rows.append(
            (stage, statistics.median(vals), min(vals), max(vals), "" if store is None else store)
        )
    total = sum(statistics.median(r[s] for r in runs) for s in STAGES if s != "events+1 sub") * us
    in_store = sum(statistics.median(r[s] for r in stores) for s in stores[0]) * us
    print(f"CPU per no-op task, memory://, N={args.n}, batch {args.batch}, {args.runs} runs")
    print(table(["stage", "median µs", "min", "max", "of which the store"], rows))
    print(
        f"total (without 'events+1 sub'): {total:.1f} µs per task, "
        f"of which {in_store:.1f} µs in the memory backend's own calls"
    )


if __name__ == "__main__":
    main()
