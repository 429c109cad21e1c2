"""Scrape endpoints: ``dtq worker --metrics-port`` and ``dtq metrics --serve``, over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from cli.stats import parse_address, parse_prometheus
from tests.backends.redis.server import free_port

from .conftest import RunDtq


def scrape(port: int, timeout: float = 20.0) -> str:
    """GET /metrics, retrying until the endpoint answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                return str(r.read().decode())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def counter(text: str, name: str) -> float:
    return sum(s["value"] for s in parse_prometheus(text) if s["name"] == name)


def check_monotonic(first: str, second: str) -> None:
    for fam in ("dtq_tasks_enqueued_total", "dtq_tasks_succeeded_total"):
        assert counter(second, fam) >= counter(first, fam), fam
    assert "# TYPE dtq_task_run_seconds histogram" in second
    assert re.search(r'dtq_task_run_seconds_bucket\{.*le="\+Inf".*\} ', second), second
    assert "dtq_task_run_seconds_count" in second and "dtq_task_run_seconds_sum" in second


def test_worker_metrics_port_and_metrics_serve_scrape_twice(
    start_worker, run_dtq: RunDtq, app_module: str, subprocess_env: dict[str, str], tmp_path
) -> None:
    wport = free_port()
    worker = start_worker("worker", app_module, "-c", "2", "--metrics-port", str(wport))
    assert f"Metrics: http://localhost:{wport}/metrics" in worker.wait_for("dtq worker:")
    assert run_dtq("enqueue", "add", "--args", "[1, 2]", "--wait", "20").returncode == 0
    first = scrape(wport)
    assert counter(first, "dtq_tasks_succeeded_total") >= 1
    for i in range(3):
        assert run_dtq("enqueue", "add", "--args", f"[{i}, 1]", "--wait", "20").returncode == 0
    time.sleep(1.2)  # the worker publishes its histograms every second
    second = scrape(wport)
    check_monotonic(first, second)
    assert counter(second, "dtq_tasks_succeeded_total") >= 4

    sport = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "metrics", "--serve", f"127.0.0.1:{sport}"],
        cwd=tmp_path,
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        a = scrape(sport)
        assert run_dtq("enqueue", "add", "--args", "[5, 5]", "--wait", "20").returncode == 0
        b = scrape(sport)
        check_monotonic(a, b)
        assert counter(b, "dtq_tasks_succeeded_total") > counter(a, "dtq_tasks_succeeded_total")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{sport}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.terminate()
        _, err_text = server.communicate(timeout=20)
    assert f"serving http://127.0.0.1:{sport}/metrics" in err_text
    busy = run_dtq("metrics", "--serve", f"127.0.0.1:{wport}")
    assert busy.returncode == 1 and "cannot listen there" in busy.stderr, busy.stderr
    code, _, _ = worker.stop()
    assert code == 0


def test_serve_address_is_checked(run_dtq: RunDtq) -> None:
    assert parse_address(":9808") == ("0.0.0.0", 9808)
    assert parse_address("[::1]:9808") == ("::1", 9808)
    out = run_dtq("metrics", "--serve", "localhost")
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr
    assert "Traceback" not in out.stderr
