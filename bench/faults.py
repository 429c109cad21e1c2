"""The fault suite, run long: a Jepsen-like table of faults and what they cost.

    python bench/faults.py [--scale 1.0] [--only NAME,NAME] [--markdown]

Each scenario of ``tests/faults/scenarios.py`` runs real ``dtq worker`` (and producer)
processes against a redis-server started here (AOF ``appendfsync always``, on a free
port; the shared server on 6379 is never touched) or an embedded store in a temporary
directory, injects its fault, waits for every acknowledged task to end and prints one
row: N (acknowledged enqueues), lost (acknowledged, never completed, not dead-lettered),
duplicated (completed more than once), unexpected (ran though never enqueued), double
run (two runs at once, or a run started on a lease the store had taken back) and dead
(dead-lettered: the poison tasks and malformed records). ``--scale`` multiplies the
task counts (1.0 takes a few minutes on 2 cores).

Exits 1 when a guarantee broke (lost, unexpected or double run above zero).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backends.redis.server import unique_prefix  # noqa: E402
from tests.faults import scenarios  # noqa: E402
from tests.faults.conftest import FaultRedis  # noqa: E402
from tests.faults.harness import System, Verdict, small_tmpfs, table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the task counts")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--markdown", action="store_true", help="print only the table")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="dtq-faults-"))
    server = FaultRedis(aof=True, data_dir=base / "redis")
    (base / "redis").mkdir()
    server.start()

    def n(k: int) -> int:
        return max(10, int(k * args.scale))

    def redis_sys(config: dict[str, object] | None = None) -> System:
        d = Path(tempfile.mkdtemp(dir=base))
        return System(server.url(unique_prefix("bench")), d, config)

    def embedded_sys() -> tuple[System, Path]:
        d = Path(tempfile.mkdtemp(dir=base))
        return System(f"embedded://{d / 'data'}", d), d / "data"

    def failstop(kind: str) -> Verdict:
        if kind == "tmpfs":
            with small_tmpfs(base / f"tmpfs-{time.monotonic_ns()}") as mnt:
                if mnt is None:
                    raise RuntimeError("no tmpfs (not root, or mount refused): skipped")
                s = System(f"embedded://{mnt / 'data'}", Path(tempfile.mkdtemp(dir=base)))
                try:
                    v, stop = scenarios.embedded_failstop(s, n(1000), kind, mnt / "filler")
                finally:
                    s.close()
        else:
            s, _ = embedded_sys()
            try:
                v, stop = scenarios.embedded_failstop(s, n(1000), kind)
            finally:
                s.close()
        v.fault += f"; worker exit {stop.code} after {stop.seconds:.1f}s"
        return v

    def on_redis(
        scenario: Callable[[System], Verdict], config: dict[str, object] | None = None
    ) -> Callable[[], Verdict]:
        """A scenario on a fresh Redis system, closed after it (its workers killed)."""

        def run() -> Verdict:
            s = redis_sys(config)
            try:
                return scenario(s)
            finally:
                s.close()

        return run

    stall_long: dict[str, object] = {"lease_s": 1.5, "heartbeat_s": 0.3}
    runs: list[tuple[str, Callable[[], Verdict]]] = [
        ("sigkill-worker", on_redis(lambda s: scenarios.worker_sigkill(s, n(1000), kills=3))),
        ("sigkill-producer", on_redis(lambda s: scenarios.producer_sigkill(s, n(1000)))),
        ("redis-restart", on_redis(lambda s: scenarios.redis_restart(s, server, n(1000), 2))),
        (
            "stall-short",
            on_redis(
                lambda s: scenarios.redis_stall(s, server, n(2000), "pause", 1.0),
                {"lease_s": 4.0, "heartbeat_s": 0.5},
            ),
        ),
        (
            "stall-long-pause",
            on_redis(lambda s: scenarios.redis_stall(s, server, n(2000), "pause", 3.0), stall_long),
        ),
        (
            "stall-long-sleep",
            on_redis(lambda s: scenarios.redis_stall(s, server, n(2000), "sleep", 3.0), stall_long),
        ),
        ("malformed-redis", on_redis(lambda s: scenarios.malformed_redis(s, n(500)))),
    ]
    for pool in ("thread", "process", "async"):
        cfg: dict[str, object] = {"lease_s": 1.0, "heartbeat_s": 0.25, "max_deliveries": 3}

        def poison(s: System, p: str = pool) -> Verdict:
            return scenarios.poison(s, 8, p)

        runs.append((f"poison-{pool}", on_redis(poison, cfg)))

    def attached() -> Verdict:
        s, _ = embedded_sys()
        try:
            return scenarios.embedded_attached_sigkill(s, n(1000))
        finally:
            s.close()

    def owner() -> Verdict:
        s, _ = embedded_sys()
        try:
            return scenarios.embedded_owner_sigkill(s, n(1000))
        finally:
            s.close()

    def owner_after_claim() -> Verdict:
        d = Path(tempfile.mkdtemp(dir=base))
        s = System(f"embedded://{d / 'data'}", d, {"lease_s": 30.0})
        try:
            return scenarios.embedded_owner_dies_after_a_claim(s, n(1000), d / "arm")
        finally:
            s.close()

    runs += [
        ("sigkill-attached", attached),
        ("sigkill-owner", owner),
        ("owner-dies-after-claim", owner_after_claim),
        ("disk-full-tmpfs", lambda: failstop("tmpfs")),
        ("disk-full-enospc", lambda: failstop("enospc")),
        ("fsync-failure", lambda: failstop("fsync")),
    ]

    def malformed_embedded() -> Verdict:
        s, d = embedded_sys()
        try:
            return scenarios.malformed_embedded(s, n(500), d)
        finally:
            s.close()

    runs.append(("malformed-embedded", malformed_embedded))

    only = {x for x in args.only.split(",") if x}
    verdicts: list[Verdict] = []
    broken = False
    t0 = time.monotonic()
    try:
        for name, run in runs:
            if only and name not in only:
                continue
            t = time.monotonic()
            try:
                v = run()
            except Exception as exc:  # one failed scenario must not hide the others
                print(f"{name}: did not complete: {exc}", file=sys.stderr)
                if not isinstance(exc, RuntimeError):
                    traceback.print_exc()
                broken = broken or not isinstance(exc, RuntimeError)
                continue
            verdicts.append(v)
            broken = broken or bool(v.lost or v.unexpected or v.overlapping or v.stale)
            if not args.markdown:
                print(f"{name}: {time.monotonic() - t:.1f}s  {v.row()}", file=sys.stderr)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print(table(verdicts))
    if not args.markdown:
        print(f"\n{len(verdicts)} scenarios in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
