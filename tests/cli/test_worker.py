"""``dtq worker`` as a real process: fed by ``dtq enqueue``, inspected, stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import REPO, RunDtq


def test_worker_fed_by_enqueue_inspected_by_stats_stopped_by_sigterm(
    start_worker, run_dtq: RunDtq, app_module: str
) -> None:
    worker = start_worker("-v", "worker", app_module, "--concurrency", "2", "--queues", "default")
    line = worker.wait_for("dtq worker:")
    assert "2 thread worker(s) on default" in line and "tasks: add, boom, slow" in line

    out = run_dtq("enqueue", "add", "--args", "[2, 3]", "--wait", "20")
    assert (out.returncode, out.stdout) == (0, "5\n"), out.stderr
    out = run_dtq("enqueue", "boom", "--args", "[7]", "--wait", "20")
    assert out.returncode == 1 and "ValueError: bad value 7" in out.stderr

    stats = json.loads(run_dtq("stats", "--json").stdout)
    assert stats["counts"]["SUCCESS"] == 1 and stats["counts"]["DEAD"] == 1
    assert len(stats["workers"]) == 2
    assert (
        json.loads(run_dtq("tasks", "list", "--state", "success", "--json").stdout)[0]["result"]
        == 5
    )

    # DLQ through the worker's socket: dry run, then replay with edited args, then purge.
    plan = json.loads(run_dtq("dlq", "replay", "task:boom", "--dry-run", "--json").stdout)
    assert plan["count"] == 1 and plan["plans"][0]["new_id"] is None
    refused = run_dtq("dlq", "replay", "task:boom", stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    done = json.loads(run_dtq("dlq", "replay", "task:boom", "--yes", "--json").stdout)
    assert done["plans"][0]["new_id"]
    purge = json.loads(run_dtq("dlq", "purge", "exc:ValueError", "--yes", "--json").stdout)
    assert purge["count"] >= 1

    worker.wait_for("RUNNING -> SUCCESS")  # -v logs every state change
    code, out, err = worker.stop()
    assert code == 0, err
    assert out.startswith("worker stopped: processed ")
    assert "drained" in out and "not drained" not in out
    assert "SIGTERM: draining" in err


def test_a_process_pool_worker_finds_the_app_tasks_in_its_children(
    start_worker, run_dtq: RunDtq, app_module: str
) -> None:
    """The children import the app module by name (from the worker's directory)."""
    worker = start_worker("worker", app_module, "--concurrency", "2", "--pool", "process")
    assert "2 process worker(s)" in worker.wait_for("dtq worker:")
    out = run_dtq("enqueue", "add", "--args", "[2, 3]", "--wait", "20")
    assert (out.returncode, out.stdout) == (0, "5\n"), out.stderr
    out = run_dtq("enqueue", "boom", "--args", "[7]", "--wait", "20")
    assert out.returncode == 1 and "ValueError: bad value 7" in out.stderr
    code, out, err = worker.stop()
    assert code == 0, err
    assert "processed 1, failed 1" in out and "Traceback" not in err


def test_second_signal_stops_at_once(start_worker, run_dtq: RunDtq, app_module: str) -> None:
    worker = start_worker("worker", app_module, "--concurrency", "1", "--drain-timeout", "30")
    worker.wait_for("dtq worker:")
    assert run_dtq("enqueue", "slow", "--args", "[20]").returncode == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = json.loads(run_dtq("stats", "--json").stdout)
        if stats["counts"].get("RUNNING"):
            break
        time.sleep(0.1)
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for("draining")
    t0 = time.monotonic()
    code, out, err = worker.stop(signal.SIGINT)
    assert time.monotonic() - t0 < 15
    assert code == 0, err
    assert "not drained (running tasks were requeued)" in out


def test_worker_json_summary_on_memory_with_a_self_feeding_app(
    start_worker, tmp_path: Path
) -> None:
    """memory:// cannot be reached from another process: the app enqueues its own work."""
    (tmp_path / "selffeed.py").write_text(
        textwrap.dedent(
            """
            import threading, time
            from dtq_core import task
            from dtq_core.client import get_default_broker

            @task(name="square")
            def square(x):
                return x * x

            def feed():
                while True:
                    try:
                        broker = get_default_broker()
                        break
                    except Exception:
                        time.sleep(0.01)
                while not broker.running:
                    time.sleep(0.01)
                results = [square.delay(i) for i in range(10)]
                for r in results:
                    r.get(timeout=10)
                print("FED", flush=True, file=__import__("sys").stderr)

            threading.Thread(target=feed, daemon=True).start()
            """
        )
    )
    worker = start_worker(
        "--json", "worker", "selffeed", "--backend", "memory://", "--pool", "async"
    )
    worker.wait_for("FED")
    code, out, err = worker.stop()
    assert code == 0, err
    assert json.loads(out) == {
        "processed": 10,
        "failed": 0,
        "left_queued": 0,
        "drained": True,
        "failure": None,
    }


@pytest.mark.parametrize(
    ("module", "source", "needle"),
    [
        ("absent_mod", None, "cannot import app module 'absent_mod'"),
        (
            "broken_mod",
            "raise RuntimeError('no config')",
            "importing app module 'broken_mod' failed: RuntimeError: no config",
        ),
    ],
)
def test_bad_app_module(run_dtq: RunDtq, tmp_path: Path, module, source, needle) -> None:
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    out = run_dtq("worker", module, "--backend", "memory://")
    assert out.returncode == 2
    assert needle in out.stderr
    assert out.stderr.count("\n") == 1


def test_bad_worker_options(run_dtq: RunDtq, app_module: str) -> None:
    out = run_dtq("worker", app_module, "--pool", "fibers")
    assert out.returncode == 2 and "fibers" in out.stderr
    out = run_dtq("worker", app_module, "--concurrency", "0", "--backend", "memory://")
    assert out.returncode == 2 and "only owns and serves an embedded" in out.stderr


def test_help_of_the_real_script() -> None:
    exe = Path(sys.executable).with_name("dtq")
    if not exe.exists():
        pytest.skip("the dtq script is not installed next to this interpreter")
    out = subprocess.run(
        [exe, "worker", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert out.returncode == 0 and "--concurrency" in out.stdout


def test_the_worker_takes_its_app_from_the_global_option(
    start_worker, run_dtq: RunDtq, app_module: str
) -> None:
    # `dtq --app userapp worker` (or DTQ_APP) names the module once, for every command.
    worker = start_worker("--app", app_module, "worker", "--concurrency", "1")
    assert "1 thread worker(s)" in worker.wait_for("dtq worker:")
    out = run_dtq("enqueue", "add", "--args", "[2, 3]", "--wait", "20")
    assert (out.returncode, out.stdout) == (0, "5\n"), out.stderr
    code, _, err = worker.stop()
    assert code == 0, err


def test_a_worker_without_an_app_says_how_to_name_it(run_dtq: RunDtq) -> None:
    out = run_dtq("worker", "--backend", "memory://", env={"DTQ_APP": ""})
    assert out.returncode == 2
    assert "dtq worker APP_MODULE (or set --app / DTQ_APP)" in out.stderr
    assert out.stderr.count("\n") == 1
