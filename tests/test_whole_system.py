"""One view of the whole system, from any process: the end-to-end test of issue 13.

Two ``dtq worker`` processes and a producer process on one Redis (and, in a second run,
on one ``embedded://DIR``), and the Console API and ``dtq stats`` from this process. The
merged latency counts equal the tasks run, every process and its workers are listed,
and two Prometheus scrapes give monotonic counters and real histograms.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core.control import connect
from dtq_core.errors import BackendUnavailable
from tests.processes_util import process_site, wait_until

N = 120

APP = """
import time
from dtq_core import task

@task(name="sys.work")
def work(i):
    time.sleep(0.002)
    return i
"""

PRODUCER = """
import sys
from dtq_core import Broker, BrokerConfig
import sysapp

url, n, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
broker = Broker(BrokerConfig(backend=url, num_workers=0, attach_timeout=30))
results = [sysapp.work.apply_async((i,), broker=broker) for i in range(first, first + n)]
print(sum(r.get(timeout=60) for r in results), flush=True)
broker.stop()
"""


PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture(params=["redis", "redis-password", "embedded"])
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    server = None
    if request.param == "redis":
        from tests.backends.redis.server import shared_server, unique_prefix

        url = shared_server().url(unique_prefix("system"))
    elif request.param == "redis-password":
        from tests.backends.redis.server import RedisServer, unique_prefix

        server = RedisServer(password=PASSWORD).start()
        url = server.url(unique_prefix("system"))
    else:
        url = f"embedded://{tmp_path / 'data'}"
    try:
        with process_site(tmp_path, {"sysapp.py": APP, "producer.py": PRODUCER}) as site:
            site["url"] = url
            site["outputs"] = []
            yield site
            # The password appears in no output of any process of the system.
            for text in site["outputs"]:
                assert PASSWORD not in text
    finally:
        if server is not None:
            server.stop()
            server.cleanup()


def console_of(url: str) -> Any:
    def attempt() -> Any:
        try:
            return connect(url, connect_timeout=0.5)
        except BackendUnavailable:
            return None

    return wait_until(attempt)


def run_count(snap: Any, window: int = 600) -> int:
    return sum(
        x.count
        for x in snap.latency
        if (x.scope, x.key, x.kind, x.window_s) == ("task", "sys.work", "run", window)
    )


def scrape(console: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in console.metrics_text().splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_the_whole_system_from_any_process(system: dict[str, Any]) -> None:
    url, spawn = system["url"], system["spawn"]
    workers = [
        spawn("-m", "cli.main", "worker", "sysapp", "--backend", url, "-c", "2") for _ in range(2)
    ]
    console = console_of(url)
    pids = {str(w.pid) for w in workers}
    # Every process's record and workers, from this process.
    wait_until(lambda: {str(p.pid) for p in console.snapshot().processes} >= pids)
    snap = console.snapshot()
    mine = [p for p in snap.processes if str(p.pid) in pids]
    assert all(p.concurrency == 2 and p.pool == "thread" and p.rss_bytes > 0 for p in mine)
    assert {w.id.split(":")[1] for w in snap.workers} >= pids

    producer = spawn("producer.py", url, str(N), "0")
    out, err = producer.communicate(timeout=120)
    system["outputs"] += [out, err]
    assert producer.returncode == 0, err[-3000:]
    assert int(out) == sum(range(N))

    # The merged latency counts equal the tasks run (published within a second or two).
    wait_until(lambda: run_count(console.snapshot()) == N, 20)
    first = scrape(console)
    system["outputs"] += [console.metrics_text(), repr(console.snapshot()), repr(console.health())]
    assert first['dtq_task_run_seconds_count{queue="default",task="sys.work"}'] == N
    assert first['dtq_task_run_seconds_bucket{le="+Inf",queue="default",task="sys.work"}'] == N

    producer = spawn("producer.py", url, str(N), str(N))
    producer.communicate(timeout=120)
    wait_until(lambda: run_count(console.snapshot()) == 2 * N, 20)
    second = scrape(console)
    for name, v in first.items():
        if name.startswith(("dtq_tasks_", "dtq_task_")) and (
            "_total" in name or "_bucket" in name or "_count" in name or "_sum" in name
        ):
            assert second.get(name, 0.0) >= v, name  # monotonic
    assert second['dtq_task_run_seconds_count{queue="default",task="sys.work"}'] == 2 * N

    stats = subprocess.run(
        [sys.executable, "-m", "cli.main", "--backend", url, "stats", "--json"],
        cwd=system["dir"],
        env=system["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stats.returncode == 0, stats.stderr
    system["outputs"] += [stats.stdout, stats.stderr]
    data = json.loads(stats.stdout)
    assert {str(p["pid"]) for p in data["processes"]} >= pids
    lat = [
        x
        for x in data["latency"]
        if (x["key"], x["kind"], x["window_s"]) == ("sys.work", "run", 600)
    ]
    assert sum(x["count"] for x in lat if x["scope"] == "task") == 2 * N

    table = subprocess.run(
        [sys.executable, "-m", "cli.main", "--backend", url, "stats"],
        cwd=system["dir"],
        env=system["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    system["outputs"] += [table.stdout, table.stderr]
    assert "Processes" in table.stdout and all(pid in table.stdout for pid in pids)

    close = getattr(console, "close", None)
    if close is not None:
        close()
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            _, werr = w.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            _, werr = w.communicate(timeout=10)
            raise AssertionError(f"worker did not stop: {werr[-3000:]}") from None
        system["outputs"].append(werr)
        assert w.returncode == 0, werr[-2000:]
