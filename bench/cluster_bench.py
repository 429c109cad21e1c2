"""DTQ on Redis Cluster: drain with 1, 2 and 3 masters, Redis CPU per task on each node.

For each cluster size the script starts a local cluster (``redis-server
--cluster-enabled yes`` on free ports, ``redis-cli --cluster create``), spreads
``--queues`` queues over it (each queue's keys share its hash tag, so a queue lives on
one master), enqueues ``--tasks`` no-op tasks with ``apply_many`` (batches of 500), then
starts ``--workers`` ``dtq worker`` processes (``-c --concurrency``, serving every
queue) and times the drain. ``INFO commandstats`` of each master, reset before each
phase, gives the Redis CPU time (``usec``) per task on that node for the enqueue and the
drain. Prints medians of ``--runs`` runs per size, and a projection for 10 and 30
masters on dedicated hosts::

    python bench/cluster_bench.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dtq_core import Broker, BrokerConfig  # noqa: E402
from dtq_core.registry import Registry  # noqa: E402
from dtq_core.task import TaskState  # noqa: E402
from tests.backends.redis.rcluster import RedisCluster  # noqa: E402


def node_usec(port: int) -> tuple[float, float]:
    """The node's CPU time (user + sys, ``INFO cpu``) and its commands' time, in µs.

    ``INFO commandstats`` counts the commands a script runs both under their own name
    and inside the script's ``evalsha``: the commands' time is the top-level commands
    only (``evalsha`` and what DTQ sends outside scripts), never the sum of every row.
    """
    import redis

    c = redis.Redis(port=port)
    try:
        cpu = c.info("cpu")
        stats = c.info("commandstats")
    finally:
        c.close()
    total = (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6
    return total, float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def reset_stats(ports: list[int]) -> None:
    import redis

    for p in ports:
        c = redis.Redis(port=p)
        c.config_resetstat()
        c.close()


def one_run(masters: int, args: argparse.Namespace, run: int) -> dict[str, Any]:
    rc = RedisCluster(masters=masters).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        url = rc.url(f"cb{run}")
        prod = Broker(BrokerConfig(backend=url, num_workers=0, registry=Registry()))
        prod.open()
        prod.backend.register_names(["cb.noop"])
        be: Any = prod.backend
        queues = [f"cq{i}" for i in range(args.queues)]
        node_of = {q: be.r.get_node_from_key(be.keys.tag(q)).port for q in queues}
        ports = sorted({n.port for n in rc.masters()})
        per_node = {p: sum(1 for q in queues if node_of[q] == p) for p in ports}
        for q in queues:  # the queues exist before the measured phases
            prod.send_many("cb.noop", [[-1]], queue=q)
        reset_stats(ports)
        cpu0 = {p: node_usec(p)[0] for p in ports}
        n = args.tasks
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            q = queues[(start // 500) % len(queues)]
            prod.send_many("cb.noop", [[i] for i in range(start, min(n, start + 500))], queue=q)
        enqueue_s = time.perf_counter() - t0
        enq_usec = {p: node_usec(p)[0] - cpu0[p] for p in ports}
        enq_script = {p: node_usec(p)[1] for p in ports}
        tasks_on = dict.fromkeys(ports, 0)
        for start in range(0, n, 500):
            q = queues[(start // 500) % len(queues)]
            tasks_on[node_of[q]] += min(n, start + 500) - start
        reset_stats(ports)
        cpu1 = {p: node_usec(p)[0] for p in ports}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DTQ_BACKEND", None)
        cmd = [sys.executable, "-c", "from cli.main import main; main()", "worker",
               "bench._cluster_app", "--backend", url, "-c", str(args.concurrency),
               "-Q", ",".join(queues)]  # fmt: skip
        t1 = time.perf_counter()
        for _ in range(args.workers):
            workers.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        total = n + len(queues)
        while be.count_by_state()[TaskState.SUCCESS] < total:
            if time.perf_counter() - t1 > args.timeout:
                raise RuntimeError(f"drain of {n} tasks did not finish in {args.timeout} s")
            time.sleep(0.05)
        drain_s = time.perf_counter() - t1
        drain_usec = {p: node_usec(p)[0] - cpu1[p] for p in ports}
        drain_script = {p: node_usec(p)[1] for p in ports}
        if os.environ.get("CLUSTER_BENCH_TOP"):
            import redis

            for p in ports:
                st = redis.Redis(port=p).info("commandstats")
                top = sorted(st.items(), key=lambda kv: -float(kv[1]["usec"]))[:8]
                print(p, [(k, v["calls"], v["usec"]) for k, v in top], file=sys.stderr)
        prod.stop()
        return {
            "masters": masters,
            "enqueue_per_s": n / enqueue_s,
            "drain_per_s": n / drain_s,
            "queues_per_node": per_node,
            # Per master, ascending (ports differ from run to run).
            "us_per_task": sorted(
                (enq_usec[p] + drain_usec[p]) / max(1, tasks_on[p]) for p in ports
            ),
            "script_us_per_task": sorted(
                (enq_script[p] + drain_script[p]) / max(1, tasks_on[p]) for p in ports
            ),
            "busiest_node_cpu": max(drain_usec.values()) / 1e6 / drain_s,
        }
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
        rc.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--queues", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="dtq worker processes")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--masters", default="1,2,3")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    print(
        f"{args.tasks} no-op tasks over {args.queues} queues, {args.workers} dtq worker "
        f"processes x {args.concurrency} threads, {os.cpu_count()} CPUs, medians of "
        f"{args.runs} runs"
    )
    print(
        "| masters | queues per master | enqueue tasks/s | drain tasks/s | Redis CPU µs/task "
        "per master (enqueue + drain) | of which scripts (commandstats) | busiest master's "
        "CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    best_us = None
    for m in [int(x) for x in args.masters.split(",")]:
        runs = [one_run(m, args, r) for r in range(args.runs)]
        med = statistics.median
        per = [med(r["us_per_task"][k] for r in runs) for k in range(m)]
        scripts = [med(r["script_us_per_task"][k] for r in runs) for k in range(m)]
        spread = "/".join(str(v) for v in sorted(runs[0]["queues_per_node"].values()))
        print(
            f"| {m} | {spread} | {med(r['enqueue_per_s'] for r in runs):,.0f} | "
            f"{med(r['drain_per_s'] for r in runs):,.0f} | "
            + " / ".join(f"{u:.1f}" for u in per)
            + " | "
            + " / ".join(f"{u:.1f}" for u in scripts)
            + f" | {med(r['busiest_node_cpu'] for r in runs):.0%} |"
        )
        best_us = statistics.mean(per) if best_us is None else best_us
    if best_us:
        # A master on a dedicated core serves 1e6 / µs-per-task tasks/s; queues spread
        # evenly, each master adds its share. 0.8: headroom for fan-out reads (console,
        # maintenance sweeps) and an uneven spread of queues.
        one = 1e6 / best_us
        print(
            f"\nprojection (dedicated hosts, enough workers, queues spread evenly): one "
            f"master ≈ {one:,.0f} tasks/s at {best_us:.1f} µs/task; "
            f"10 masters ≈ {10 * one * 0.8:,.0f} tasks/s; 30 masters ≈ {30 * one * 0.8:,.0f} "
            "tasks/s (x 0.8 for fan-out reads and an uneven spread)"
        )


if __name__ == "__main__":
    main()
