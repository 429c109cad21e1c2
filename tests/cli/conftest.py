"""Fixtures for the CLI tests: an in-process broker behind the CLI, and real subprocesses.

CliRunner tests replace ``cli._common.connect`` with a function returning a LocalConsole
of a memory broker owned by the test, so every command runs against known data.
Subprocess tests run ``python -m cli.main`` with ``DTQ_BACKEND`` pointing into tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import _common
from cli.main import app
from dtq_core import Broker, BrokerConfig, task
from dtq_core.control import LocalConsole
from dtq_core.registry import Registry

REPO = Path(__file__).resolve().parents[2]


class KeptConsole(LocalConsole):
    """A LocalConsole the CLI cannot close (the test owns the broker)."""

    def close(self) -> None:
        """The broker outlives each command."""


def register_tasks(registry: Registry) -> None:
    """The tasks every CLI test knows: add, boom (never retried), echo, slow."""

    @task(name="add", registry=registry)
    def add(a: int, b: int) -> int:
        return a + b

    @task(name="boom", max_retries=0, registry=registry)
    def boom(x: int = 1) -> None:
        raise ValueError(f"bad value {x}")

    @task(name="echo", registry=registry)
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}


@pytest.fixture
def cli_registry() -> Registry:
    registry = Registry()
    register_tasks(registry)
    return registry


@pytest.fixture
def broker(cli_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """A producer-only memory broker that the CLI talks to (run tasks with ``work()``)."""
    b = Broker(BrokerConfig(backend="memory://", num_workers=0, registry=cli_registry))
    b.open()
    monkeypatch.setattr(_common, "connect", lambda url: KeptConsole(b))
    monkeypatch.delenv("DTQ_APP", raising=False)
    yield b
    b.stop(drain_timeout=0)


@pytest.fixture
def live_broker(cli_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """A memory broker with two worker threads running, behind the CLI."""
    b = Broker(BrokerConfig(backend="memory://", num_workers=2, registry=cli_registry))
    b.start()
    monkeypatch.setattr(_common, "connect", lambda url: KeptConsole(b))
    monkeypatch.delenv("DTQ_APP", raising=False)
    yield b
    b.stop(drain_timeout=1)


@pytest.fixture
def dead(broker: Broker) -> list[str]:
    """Three dead tasks (boom(0), boom(1), boom(2)) and one succeeded add(1, 2)."""
    ids = [broker.send("boom", [i]).id for i in range(3)]
    broker.send("add", [1, 2])
    broker.work()
    return ids


class Invoke:
    """Run ``dtq ARGS`` in-process; return the click Result."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str] | None = None):
        return self.runner.invoke(app, list(args), input=input, env=env, prog_name="dtq")

    def json(self, *args: str) -> Any:
        result = self(*args, "--json") if "--json" not in args else self(*args)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def dtq() -> Invoke:
    return Invoke()


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for ``dtq`` subprocesses: an embedded store in tmp_path, repo on the path."""
    env = dict(os.environ)
    env["DTQ_BACKEND"] = f"embedded://{tmp_path / 'data'}"
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path), str(REPO), env.get("PYTHONPATH")])
    )
    env.pop("DTQ_APP", None)
    env["COLUMNS"] = "200"
    return env


RunDtq = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_dtq(tmp_path: Path, subprocess_env: dict[str, str]) -> RunDtq:
    """Run ``dtq ARGS`` as a real process (``python -m cli.main``) in tmp_path."""

    def run(*args: str, timeout: float = 30, env: dict[str, str] | None = None, **kw: Any):
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**subprocess_env, **(env or {})},
            timeout=timeout,
            **kw,
        )

    return run


APP_MODULE = textwrap.dedent(
    '''
    """A user's app module: registers tasks on the default registry."""
    import time

    from dtq_core import task


    @task(name="add")
    def add(a, b):
        return a + b


    @task(name="boom", max_retries=0)
    def boom(x=1):
        raise ValueError(f"bad value {x}")


    @task(name="slow")
    def slow(seconds=1.0):
        time.sleep(seconds)
        return "slept"
    '''
)


@pytest.fixture
def app_module(tmp_path: Path) -> str:
    """An app module written into tmp_path (importable through PYTHONPATH)."""
    (tmp_path / "userapp.py").write_text(APP_MODULE)
    return "userapp"


class Worker:
    """A ``dtq worker`` subprocess; a thread collects its stderr lines."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.err.append(line)
                self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        """Wait until a stderr line contains ``needle``; return that line."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [ln for ln in self.err if needle in ln]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(seen, timeout):
                raise AssertionError(f"{needle!r} not seen; stderr: {''.join(self.err)}")
        return found[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, str, str]:
        """Send ``sig``; return (exit code, stdout, stderr)."""
        self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self._reader.join(5)
        return self.proc.returncode, out, "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_worker(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator:
    started: list[Worker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Worker:
        w = Worker(list(args), tmp_path, {**subprocess_env, **(env or {})})
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()
