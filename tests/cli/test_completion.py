"""Shell completion from the live system, and never hanging a shell (issue 17, point 6)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cli import _complete
from dtq_core import Broker, control

from .conftest import KeptConsole, RunDtq


def complete(
    words: str, cwd: Path, env: dict[str, str], timeout: float = 20
) -> tuple[list[str], float]:
    """What bash completion offers after ``words`` (the last word is being typed)."""
    parts = words.split(" ")
    env = {**env, "_DTQ_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(parts) - 1)}  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "cli.main"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # nothing printed into the shell
    return out.stdout.split(), took


def test_completion_from_a_running_worker(
    start_worker, run_dtq: RunDtq, app_module: str, tmp_path: Path, subprocess_env
) -> None:
    worker = start_worker("worker", app_module, "--concurrency", "1")
    worker.wait_for("dtq worker:")
    out = run_dtq("enqueue", "boom", "--args", "[3]", "--queue", "mail", "--wait", "20")
    assert out.returncode == 1, out.stderr
    dead_id = run_dtq("dlq", "list", "--json").stdout.split('"id": "')[1].split('"')[0]
    env = subprocess_env

    assert complete("dtq enqueue ", tmp_path, env)[0] == ["add", "boom", "slow"]
    assert complete("dtq enqueue s", tmp_path, env)[0] == ["slow"]
    assert complete("dtq queues pause m", tmp_path, env)[0] == ["mail"]
    assert complete("dtq worker x --queues default,m", tmp_path, env)[0] == ["default,mail"]
    assert complete("dtq tasks show ", tmp_path, env)[0] == [dead_id]
    assert complete(f"dtq tasks show {dead_id[:6]}", tmp_path, env)[0] == [dead_id]
    assert complete("dtq dlq replay ", tmp_path, env)[0] == [dead_id]
    assert complete("dtq dlq replay task:b", tmp_path, env)[0] == ["task:boom"]
    assert complete("dtq tasks list --name a", tmp_path, env)[0] == ["add"]
    worker.stop()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_completion_offers_nothing_fast_when_the_backend_is_down(
    tmp_path: Path, subprocess_env
) -> None:
    url = f"redis://127.0.0.1:{_dead_port()}/0"
    got, took = complete(f"dtq enqueue --backend {url} ", tmp_path, subprocess_env)
    assert got == []
    assert took < 4.0, took


def test_completion_never_hangs_on_a_backend_that_does_not_answer(
    tmp_path: Path, subprocess_env
) -> None:
    """A server that accepts connections and never replies: the deadline ends it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    try:
        env = {**subprocess_env, "DTQ_BACKEND": url, "DTQ_CONNECT_TIMEOUT": "30"}
        got, took = complete("dtq tasks show ", tmp_path, env)
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert got == []
    assert took < _complete.DEADLINE + 3.0, took


@pytest.fixture
def in_process(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setattr(control, "connect", lambda url, **kw: KeptConsole(broker))
    return broker


def test_completers_filter_and_cap(in_process: Broker) -> None:
    for i in range(60):
        in_process.send("add", [i, i], queue=f"q{i:02d}")
    assert _complete.queue_names(None, "q0") == [f"q0{i}" for i in range(10)]
    assert len(_complete.queue_names(None, "")) == _complete.MAX_ITEMS
    assert _complete.queue_lists(None, "q01,q1") == [f"q01,q1{i}" for i in range(10)]
    assert _complete.task_names(None, "") == ["add", "boom", "echo"]
    assert _complete.dead_targets(None, "exc:") == []
    assert len(_complete.task_ids(None, "")) == _complete.MAX_ITEMS


def test_a_failing_backend_offers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: Any, **kw: Any) -> Any:
        raise RuntimeError("kaput")

    monkeypatch.setattr(control, "connect", broken)
    assert _complete.task_names(None, "") == []


def test_readme_documents_completion() -> None:
    text = (Path(__file__).resolve().parents[2] / "cli" / "README.md").read_text()
    assert "## Shell completion" in text
    assert "dtq --install-completion" in text
    for word in ("task names", "queue names", "task ids"):
        assert word in text
