"""Figures of the embedded store: durable enqueues, group commit, recovery, memory, drain.

    python bench/embedded_bench.py [--quick] [--only enqueue,recovery,memory,drain]
                                   [--ops 1000000] [--queued 1000000] [--drain 3000]

Prints tables:

1. Durable enqueues/s with 1, 8 and 64 producer threads calling
   ``EmbeddedBackend.enqueue`` directly (no Broker), in each fsync mode, and fsyncs per
   enqueue (the log's own fsync counter); then group commit against one fsync per record
   at 64 producers (the baseline serializes the producers with a lock around each
   enqueue, in ``fsync=always``), on this disk and on a simulated slower one (every fsync
   followed by a 2 ms sleep). Median of 3 runs of ``--seconds`` each.
2. Recovery time of ``--ops`` logged operations (enqueue, claim and ack, in thirds; the
   broker's expiry of finished results every 1,000 operations, 30 s result TTL on a fake
   clock) without a checkpoint (the log alone is replayed) and with one (taken at the
   end). The log is built once; the directory is copied before the checkpoint; the
   builder exits without closing. Each figure is a fresh process opening a directory
   (``info()['recovery_seconds']``), median of 3 when one takes under 10 s, and the
   log-only recovery's speed in records/s. Expiry is logged, so the log-only recovery
   drops the expired results as the live store did.
3. Memory per queued task with ``--queued`` tasks queued: RSS delta over the enqueues
   divided by N, and the part of it over the payload bytes; also after recovering them
   from the log alone, and after loading a checkpoint of them (the store closed, which
   writes one, then opened again: nothing to replay).
4. End-to-end drain of ``--drain`` no-op tasks in one process: a Broker with 8 worker
   threads (thread pool), 8 producer threads enqueueing first, then the drain timed until
   the last durable ack (its SUCCESS event); ``fsync=always``, ``interval`` and ``off``.
   Huey's ``SqliteHuey`` runs the same workload in the same run when ``import huey``
   works (``pip install huey``, in the optional ``bench`` extra): 8 consumer worker
   threads, ``fsync=True`` (``PRAGMA synchronous=FULL``, WAL journal: a commit is on disk
   when it returns, as ``fsync=always``) and ``fsync=False`` (``synchronous=OFF``: never
   fsynced, as ``fsync=off``). Ratios compare equal durability.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _embedded_drain import bench_drain
from _embedded_sections import bench_enqueue, bench_memory, bench_recovery


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run each")
    ap.add_argument("--only", default="enqueue,recovery,memory,drain")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one enqueue run")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--queued", type=int, default=1_000_000)
    ap.add_argument("--drain", type=int, default=3000)
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds, args.ops, args.queued, args.drain = 1, 0.5, 30_000, 30_000, 500
    print(f"# embedded store figures (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    parts = {
        "enqueue": bench_enqueue,
        "recovery": bench_recovery,
        "memory": bench_memory,
        "drain": bench_drain,
    }
    for name in args.only.split(","):
        parts[name.strip()](args)


if __name__ == "__main__":
    main()
