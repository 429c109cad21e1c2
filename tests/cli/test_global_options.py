"""Global options: one definition, accepted before or after the command (issue 17, point 1)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli import _common
from dtq_core import Broker, control, errors
from dtq_core.backends.redis.backend import RedisBackend

from .conftest import REPO, KeptConsole, RunDtq


@pytest.fixture
def seen(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The URLs the CLI connected to, and the state it had when it did."""
    calls: list[Any] = []

    def record(url: str | None) -> KeptConsole:
        st = _common.state
        calls.append((url, st.json, st.verbose, st.quiet, st.connect_timeout, st.app))
        return KeptConsole(broker)

    monkeypatch.setattr(_common, "connect", record)
    monkeypatch.delenv("DTQ_BACKEND", raising=False)
    monkeypatch.delenv("DTQ_CONNECT_TIMEOUT", raising=False)
    return calls


COMMANDS = [
    ["stats"],
    ["health"],
    ["tasks", "list"],
    ["dlq", "list"],
    ["queues", "list"],
    ["cron", "list"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["before", "after"])
def test_backend_before_or_after_the_command(dtq, seen, command: list[str], where: str) -> None:
    opts = ["--backend", "memory://x", "--connect-timeout", "1.5"]
    args = [*opts, *command] if where == "before" else [*command, *opts]
    result = dtq(*args)
    assert result.exit_code == 0, result.output
    assert seen[-1][0] == "memory://x"
    assert seen[-1][4] == 1.5


def test_after_the_command_wins_over_before(dtq, seen) -> None:
    assert dtq("-b", "memory://one", "stats", "-b", "memory://two").exit_code == 0
    assert seen[-1][0] == "memory://two"


def test_group_level_position_works_too(dtq, seen) -> None:
    result = dtq("tasks", "--backend", "memory://g", "list", "--json")
    assert result.exit_code == 0, result.output
    assert seen[-1][0] == "memory://g"


def test_json_verbose_quiet_after_the_command(dtq, seen, dead) -> None:
    result = dtq("queues", "pause", "default", "--create", "--json", "-v")
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{")  # the command's own --json
    assert seen[-1][2] == 1
    result = dtq("queues", "--json", "resume", "default")  # the global one, between
    assert result.stdout.lstrip().startswith("{")
    assert seen[-1][1] is True
    dtq("-v", "stats", "-v")
    assert seen[-1][2] == 2
    dtq("-v", "stats", "-q")
    assert seen[-1][2:4] == (0, True)


def test_environment_still_reaches_the_root(dtq, seen) -> None:
    env = {"DTQ_BACKEND": "memory://env", "DTQ_CONNECT_TIMEOUT": "0.7"}
    assert dtq("stats", env=env).exit_code == 0
    assert seen[-1][0] == "memory://env"
    assert seen[-1][4] == 0.7
    # Typed after the command, the option beats the environment.
    assert dtq("stats", "-b", "memory://typed", env=env).exit_code == 0
    assert seen[-1][0] == "memory://typed"


def test_a_bad_connect_timeout_is_a_usage_error(dtq, seen) -> None:
    result = dtq("stats", "--connect-timeout", "0")
    assert result.exit_code == 2
    assert "--connect-timeout" in result.output


def test_every_command_documents_the_global_options(dtq) -> None:
    for path in (["stats"], ["dlq", "replay"], ["worker"], ["tui"]):
        out = dtq(*path, "--help").stdout
        for opt in (
            "--backend",
            "--app",
            "--json",
            "--verbose",
            "--quiet",
            "--connect-timeout",
            "--read-only",
        ):
            assert opt in out, (path, opt)


def test_connect_timeout_reaches_control_connect(dtq, monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[str, Any] = {}

    def fake_connect(url: str | None = None, **kwargs: Any) -> Any:
        got.update(kwargs, url=url)
        raise errors.BackendUnavailable("stop here")

    monkeypatch.setattr(control, "connect", fake_connect)
    dtq("stats", "--connect-timeout", "2.5", "--backend", "memory://")
    assert got == {"url": "memory://", "connect_timeout": 2.5, "read_only": False}
    dtq("stats")
    assert got["connect_timeout"] == 3.0  # the default
    dtq("stats", "--read-only")
    assert got["read_only"] is True
    dtq("--read-only", "queues", "pause", "q")
    assert got["read_only"] is True


def test_redis_console_waits_are_bounded() -> None:
    be = RedisBackend("redis://127.0.0.1:1/0")
    be.limit_waits(0.5)
    kwargs = be.r.connection_pool.connection_kwargs
    assert be.retry_s == 0.5
    assert kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["socket_timeout"] == 0.5
    be.limit_waits(60)  # only ever lowers
    assert be.retry_s == 0.5


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_on_a_dead_redis_exits_3_within_the_timeout(run_dtq: RunDtq) -> None:
    url = f"redis://127.0.0.1:{_dead_port()}/0"
    # The same command on a backend that answers at once: interpreter start-up and
    # imports, which a loaded machine (a parallel test run) stretches to seconds.
    t0 = time.monotonic()
    run_dtq("health", "--backend", "memory://")
    start_up = time.monotonic() - t0
    t0 = time.monotonic()
    out = run_dtq("health", "--backend", url, "--connect-timeout", "1")
    took = time.monotonic() - t0
    assert out.returncode == 3, out.stderr
    assert out.stderr.count("\n") == 1
    assert "is the Redis server up" in out.stderr
    assert took - start_up < 3.0, (took, start_up)  # about one second of retries


def test_the_installed_entry_point_takes_options_after(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "stats", "--backend", "memory://", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"backend": "memory://"' in out.stdout
