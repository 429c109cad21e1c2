"""Single enqueues of DTQ and Huey alternated in one process: wall, producer and Redis CPU.

    python bench/enqueue_split.py [--n 5000] [--rounds 7] [--runs 1]

Starts its own ``redis-server`` (``--save '' --appendonly no``). Each round makes ``--n``
calls of DTQ's ``apply_async`` then as many of a Huey task (``RedisHuey``, results off),
no worker running, and reads per call: the wall time, this process's CPU time (Python
and its socket calls) and the Redis main thread's CPU time (``INFO cpu``). The two run
in turn, so wall time is about the sum of the two CPU times; the split says which side
a change has to cut. Rounds alternate the systems, so each ratio compares them under
about the same load (``redis_bench.py`` runs whole phases, which a loaded machine moves
further apart). Prints the medians over the rounds and each round's rate ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _redis_run import Server


def _split(r: Any, n: int, call: Callable[[int], object]) -> tuple[float, float, float]:
    """µs per call: wall, this process's CPU, Redis's CPU."""

    def redis_cpu() -> float:
        c = r.info("cpu")
        return float(c["used_cpu_user_main_thread"]) + float(c["used_cpu_sys_main_thread"])

    s0, c0, t0 = redis_cpu(), time.process_time(), time.perf_counter()
    for i in range(n):
        call(i)
    t1, c1, s1 = time.perf_counter(), time.process_time(), redis_cpu()
    return (t1 - t0) / n * 1e6, (c1 - c0) / n * 1e6, (s1 - s0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="calls per system per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="fresh servers, one after another")
    args = ap.parse_args()
    import redis
    from huey import RedisHuey

    from dtq_core import Broker, BrokerConfig, task

    @task(name="bench.split.noop")
    def noop(i: int) -> None:
        return None

    for run in range(args.runs):
        server = Server()
        r = redis.Redis(port=server.port)
        huey = RedisHuey("bench", port=server.port, results=False)
        hnoop = huey.task()(lambda i: None)
        broker = Broker(
            BrokerConfig(
                backend=server.url + "?prefix=bench", num_workers=0, install_signal_handlers=False
            )
        )
        broker.open()
        systems: dict[str, Callable[[int], object]] = {
            "huey": hnoop,
            "dtq": lambda i, b=broker: noop.apply_async((i,), broker=b),
        }
        try:
            for call in systems.values():  # connections made, scripts loaded
                for i in range(500):
                    call(i)
            got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in systems}
            for _ in range(args.rounds):
                for name, call in systems.items():
                    got[name].append(_split(r, args.n, call))
        finally:
            broker.stop()
            r.close()
            server.stop()
        print(f"run {run + 1}: {args.rounds} rounds of {args.n} calls each")
        print(f"{'':6s} {'wall µs':>8s} {'producer CPU':>13s} {'Redis CPU':>10s}")
        for name, rows in got.items():
            w, c, s = (statistics.median(x[i] for x in rows) for i in range(3))
            print(f"{name:6s} {w:8.1f} {c:13.1f} {s:10.1f}")
        ratios = [h[0] / d[0] for d, h in zip(got["dtq"], got["huey"], strict=True)]
        shown = " ".join(f"{x:.2f}" for x in ratios)
        mid = statistics.median(ratios)
        print(f"DTQ's rate / Huey's, round by round: {shown}; median {mid:.2f}")


if __name__ == "__main__":
    main()
