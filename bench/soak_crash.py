"""Soak the embedded store with SIGKILLs: the crash loop of the test suite, run long.

    python bench/soak_crash.py [--cycles 1000] [--per-dir 100] [--seed 1] [--max-run-s 0.5]
                               [--broker-cycles 0] [--keep]

Each cycle starts ``tests/backends/embedded/crash_worker.py`` on an
``embedded://DIR?fsync=always`` directory (random enqueue, claim, ack, fail and checkpoint
calls, each acknowledged on its stdout), SIGKILLs it at a random moment, reopens the
directory in this process and checks that every acknowledged enqueue is present, no
acknowledged ack or dead-letter is undone, nothing appears that was never enqueued,
nothing is left RUNNING, tasks RUNNING at the kill are requeued with their delivery
counted (or dead-lettered as ``worker_lost`` at the limit), delayed tasks keep their eta,
and, every fourth cycle, that replaying the same log twice gives the same state. A fresh
directory is started every ``--per-dir`` cycles so the check stays cheap.
``--broker-cycles N`` adds N cycles of a Broker with thread workers being killed.

Exits 1 at the first violation, printing the cycle and keeping the directory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backends.embedded.test_crash import (  # noqa: E402
    OpsModel,
    ops_crash_loop,
    test_crash_loop_broker_with_thread_workers,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--per-dir", type=int, default=100, help="cycles per data directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-run-s", type=float, default=0.5, help="longest run before a kill")
    ap.add_argument("--broker-cycles", type=int, default=0, help="extra Broker loops (x5)")
    ap.add_argument("--keep", action="store_true", help="keep directories that passed")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="dtq-soak-"))
    done = 0
    totals = OpsModel()
    t0 = time.monotonic()
    print(f"soak: {args.cycles} SIGKILL cycles in {base}", flush=True)

    def progress(cycle: int, model: OpsModel, lines: list[str]) -> None:
        n = done + cycle + 1
        if n % 50 == 0 or n == args.cycles:
            rate = n / (time.monotonic() - t0)
            enqueued = len(totals.enqueued) + len(model.enqueued)
            print(
                f"  {n:5d} cycles  {rate:5.1f}/s  enqueued {enqueued}"
                f"  acked {len(totals.acked) + len(model.acked)}"
                f"  requeued {totals.requeued + model.requeued}"
                f"  worker_lost {totals.worker_lost + model.worker_lost}",
                flush=True,
            )

    part = 0
    while done < args.cycles:
        n = min(args.per_dir, args.cycles - done)
        where = base / f"dir-{part:04d}"
        where.mkdir()
        try:
            model = ops_crash_loop(
                where, n, args.seed * 100_003 + part, max_run_s=args.max_run_s, log=progress
            )
        except AssertionError:
            traceback.print_exc()
            print(f"FAILED in {where} (cycle {done + 1}..{done + n}); directory kept", flush=True)
            return 1
        totals.enqueued |= {f"{part}:{t}" for t in model.enqueued}
        totals.acked.update({f"{part}:{t}": r for t, r in model.acked.items()})
        totals.requeued += model.requeued
        totals.worker_lost += model.worker_lost
        done += n
        part += 1
        if not args.keep:
            shutil.rmtree(where)
    for i in range(args.broker_cycles):
        where = base / f"broker-{i:04d}"
        where.mkdir()
        try:
            test_crash_loop_broker_with_thread_workers(where)
        except AssertionError:
            traceback.print_exc()
            print(f"FAILED in {where} (broker loop {i}); directory kept", flush=True)
            return 1
        if not args.keep:
            shutil.rmtree(where)
    elapsed = time.monotonic() - t0
    print(
        f"OK: {done} SIGKILL cycles (+{args.broker_cycles * 5} broker cycles) in {elapsed:.0f}s; "
        f"{len(totals.enqueued)} acknowledged enqueues, {len(totals.acked)} acknowledged acks, "
        f"{totals.requeued} running tasks requeued, {totals.worker_lost} buried as worker_lost",
        flush=True,
    )
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
