"""DTQ on Redis against Celery, Dramatiq, RQ, Huey and arq on the same Redis.

    python bench/redis_bench.py [--n 10000] [--runs 3] [--rate 200] [--seconds 3]
                                [--concurrency 8] [--only dtq,huey,...]

Starts its own ``redis-server`` on a free port (``--save '' --appendonly no``), then runs
``--runs`` rounds, each system in turn in each round (so that every round measures them
under about the same load on a shared machine), of, with one worker process
(``--concurrency`` threads, or the peer's equivalent):

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
latency and round trips, the peer's over DTQ's: above 1 means DTQ is better); the
enqueue ratio of each round is also printed (stderr), the steadier comparison when the
machine's load moves.

Peers are the optional ``bench`` extra (``pip install 'dtq[bench]'``); a peer that is not
installed, or whose worker fails, is reported as such. Run the script with an interpreter
where they are installed (a separate virtualenv is best: the peers pin redis-py).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _redis_run import Run, Server, one_run
from _redis_systems import SYSTEMS
from _util import table

from bench.peers import _probe


def _median(vals: list[float]) -> float:
    """The median of the values that are numbers (NaN when none is)."""
    nums = [v for v in vals if not math.isnan(v)]
    return statistics.median(nums) if nums else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="tasks per enqueue/drain run")
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
        active = []
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
            active.append(s)
        # Rounds, not one system's runs after another's: on a shared machine the load
        # moves within a minute, and each round measures every system under about the
        # same load.
        runs: dict[str, list[Run]] = {s.name: [] for s in active}
        for r in range(args.runs):
            for s in active:
                if s.name in results:  # failed in an earlier round
                    continue
                try:
                    runs[s.name].append(one_run(s, args, server, tmp))
                    print(f"{s.name} run {r + 1}: {runs[s.name][-1]}", file=sys.stderr)
                except Exception as exc:
                    results[s.name] = f"failed: {type(exc).__name__}: {exc}"
                    print(f"{s.name}: {results[s.name]}", file=sys.stderr)
                    if os.environ.get("BENCH_DEBUG"):
                        traceback.print_exc()
        for s in active:
            if s.name not in results:
                results[s.name] = Run(
                    *(
                        _median([getattr(x, f) for x in runs[s.name]])
                        for f in Run.__dataclass_fields__
                    )
                )
        if "dtq" in runs and len(runs) > 1:
            for name, peer in runs.items():
                rounds = [d.enqueue / p.enqueue for d, p in zip(runs["dtq"], peer, strict=False)]
                if name != "dtq" and rounds:
                    shown = " ".join(f"{x:.2f}" for x in rounds)
                    print(f"DTQ x enq against {name}, round by round: {shown}", file=sys.stderr)
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
