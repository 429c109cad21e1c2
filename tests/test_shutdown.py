"""Signals in a real process: SIGTERM drains and loses nothing; a second signal stops at once."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

N_TASKS = 50

SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import json
    import sys
    import threading
    import time

    from dtq_core import Broker, BrokerConfig, task
    from dtq_core.registry import Registry

    n_tasks, naps = int(sys.argv[1]), int(sys.argv[2])
    registry = Registry()
    out_lock = threading.Lock()


    def say(text):
        with out_lock:  # print() writes text and newline apart: threads would interleave
            print(text, flush=True)


    @task(name="work", registry=registry)
    def work(i):
        say(f"started {i}")
        for _ in range(naps):  # 0.1 s naps: a hard stop can interrupt between them
            time.sleep(0.1)
        say(f"done {i}")
        return i


    broker = Broker(
        BrokerConfig(
            backend="memory://",
            num_workers=4,
            pool="thread",
            registry=registry,
            install_signal_handlers=True,
            drain_timeout=30,
        )
    )
    ids = [work.apply_async((i,), broker=broker).id for i in range(n_tasks)]

    broker.start()
    say("ready")
    summary = broker.wait_until_stopped()
    states = {i: broker.backend.get_state(tid).value for i, tid in enumerate(ids)}
    say(json.dumps({"summary": dataclasses.asdict(summary), "states": states}))
    """
)


@contextmanager
def launch(tmp_path: Path, naps: int) -> Iterator[subprocess.Popen[str]]:
    """Run the worker script (tasks of ``naps`` tenths of a second); kill it if left running."""
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "DTQ_BACKEND"}
    with subprocess.Popen(
        [sys.executable, str(script), str(N_TASKS), str(naps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(tmp_path),
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def read_until(proc: subprocess.Popen[str], lines: list[str], done: Any) -> None:
    """Read stdout lines into ``lines`` until ``done(lines)`` holds."""
    assert proc.stdout is not None
    while not done(lines):
        line = proc.stdout.readline()
        assert line, f"worker exited early: {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line.strip())


def finish(proc: subprocess.Popen[str], lines: list[str], bound: float) -> dict[str, Any]:
    """Wait for the exit within ``bound`` seconds; return the final JSON report."""
    assert proc.stdout is not None and proc.stderr is not None
    try:
        proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker did not exit within {bound}s; stderr:\n{proc.stderr.read()}")
    # Read through the same buffered pipes as read_until (communicate() would skip
    # what readline() already buffered); the output is far below a pipe's capacity.
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    lines.extend(line.strip() for line in out.splitlines())
    report: dict[str, Any] = json.loads(lines[-1])
    report["stderr"] = err
    return report


def numbers(lines: list[str], word: str) -> set[int]:
    return {int(line.split()[1]) for line in lines if line.startswith(word + " ")}


@pytest.mark.timeout(60)
def test_sigterm_drains_running_tasks_and_keeps_the_rest_queued(tmp_path: Path) -> None:
    lines: list[str] = []
    with launch(tmp_path, naps=2) as proc:
        read_until(proc, lines, lambda ls: "ready" in ls)
        read_until(proc, lines, lambda ls: len(numbers(ls, "done")) >= 3)
        proc.send_signal(signal.SIGTERM)
        report = finish(proc, lines, bound=20)

    states = {int(i): s for i, s in report["states"].items()}
    started, done = numbers(lines, "started"), numbers(lines, "done")
    assert started == done, "a task that started did not finish"
    assert "RUNNING" not in states.values()
    assert {i for i, s in states.items() if s == "SUCCESS"} == done
    pending = {i for i, s in states.items() if s == "PENDING"}
    assert len(done) + len(pending) == N_TASKS, states
    assert pending, "SIGTERM came too late to leave anything queued"
    summary = report["summary"]
    assert summary["drained"] is True and summary["forced"] is False
    assert summary["processed"] == len(done) and summary["failed"] == 0
    assert summary["left_queued"] == len(pending)


@pytest.mark.timeout(60)
def test_a_second_signal_stops_at_once_and_requeues_running_tasks(tmp_path: Path) -> None:
    lines: list[str] = []
    with launch(tmp_path, naps=300) as proc:  # 30 s tasks
        read_until(proc, lines, lambda ls: "ready" in ls)
        read_until(proc, lines, lambda ls: len(numbers(ls, "started")) >= 4)
        # Back to back: the second often reaches a worker thread, not the main one.
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        report = finish(proc, lines, bound=15)
    assert "second signal" in report["stderr"]

    states = {int(i): s for i, s in report["states"].items()}
    assert numbers(lines, "done") == set()
    assert len(numbers(lines, "started")) == 4
    assert set(states.values()) == {"PENDING"}, states
    assert len(states) == N_TASKS
    assert report["summary"]["forced"] is True
    assert report["summary"]["left_queued"] == N_TASKS


#: tgkill(2) numbers, to signal one chosen thread of another process.
TGKILL = {"x86_64": 234, "aarch64": 131}


@pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine not in TGKILL, reason="needs Linux tgkill"
)
@pytest.mark.timeout(60)
def test_sigterm_routed_to_a_worker_thread_still_stops_the_broker(tmp_path: Path) -> None:
    # POSIX lets the kernel deliver a process-directed signal to any thread; it does so
    # e.g. when the main thread already has one pending (SIGTERM then SIGINT). Sending it
    # to a worker thread makes that case deterministic.
    libc = ctypes.CDLL(None, use_errno=True)
    lines: list[str] = []
    with launch(tmp_path, naps=2) as proc:
        read_until(proc, lines, lambda ls: "ready" in ls)
        # Once a task finished, the main thread is long past "ready" and inside
        # wait_until_stopped(): blocked in a futex wait, not running bytecode.
        read_until(proc, lines, lambda ls: len(numbers(ls, "done")) >= 1)
        threads = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert threads
        rc = libc.syscall(TGKILL[os.uname().machine], proc.pid, threads[0], signal.SIGTERM)
        assert rc == 0, ctypes.get_errno()
        report = finish(proc, lines, bound=6)
    assert "RUNNING" not in report["states"].values()
