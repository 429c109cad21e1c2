"""The one error handler: one line on stderr, the right exit code, a traceback only at -v."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from cli import _common
from cli._errors import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, CliError, describe
from dtq_core import errors


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.BackendUnavailable("no redis at localhost:6379"), EXIT_UNAVAILABLE),
        (errors.ConfigError("bad backend URL 'x'"), EXIT_USAGE),
        (errors.SerializationError("argument 0 is not JSON"), EXIT_USAGE),
        (errors.TaskNotRegistered("unknown task 'x'"), EXIT_USAGE),
        (errors.TaskNotFound("no dead task 'x'"), EXIT_USAGE),
        (errors.CronError("bad minute field '61'"), EXIT_USAGE),
        (errors.DAGError("cycle a → b → a"), EXIT_USAGE),
        (errors.StoreCorrupted("segment 3 offset 10"), EXIT_FAILED),
        (errors.TaskFailed("t1", "FAILED", "ValueError", "nope"), EXIT_FAILED),
        (errors.DTQError("something"), EXIT_FAILED),
        (TimeoutError("still RUNNING"), EXIT_FAILED),
        (CliError("bad --args", 2), EXIT_USAGE),
        (RuntimeError("kaput"), EXIT_FAILED),
    ],
)
def test_engine_errors_map_to_exit_codes(exc: BaseException, code: int) -> None:
    message, got = describe(exc)
    assert got == code
    assert "\n" not in message
    assert str(exc).splitlines()[0] in message


def test_unexpected_errors_say_how_to_see_the_traceback() -> None:
    message, _ = describe(RuntimeError("kaput"))
    assert message == "internal error: RuntimeError: kaput (run with -v for the traceback)"


def test_backend_unavailable_exits_3_with_one_line(dtq, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str | None) -> None:
        raise errors.BackendUnavailable("no embedded owner answers on /x/dtq.sock")

    monkeypatch.setattr(_common, "connect", refuse)
    result = dtq("stats")
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "dtq: error: no embedded owner answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_shows_the_traceback(dtq, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str | None) -> None:
        raise errors.BackendUnavailable("down")

    monkeypatch.setattr(_common, "connect", refuse)
    result = dtq("-v", "stats")
    assert result.exit_code == 3
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith(
        "dtq: error: down (check --backend / DTQ_BACKEND and that the broker or server is running)"
    )


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nonsense", "bad backend URL 'nonsense'"),
        ("ftp://x", "unknown backend scheme 'ftp'"),
    ],
)
def test_bad_backend_url_is_one_line_exit_2(run_dtq, url: str, needle: str) -> None:
    proc = run_dtq("--backend", url, "stats")
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_unreachable_backend_exits_3(run_dtq, tmp_path: Path) -> None:
    """A data directory owned by another process with no socket to attach through."""
    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        proc = run_dtq("health")
    finally:
        os.close(fd)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("dtq: error: the embedded store")
    assert f"locked by process {os.getpid()}" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_app_module_is_a_usage_error(run_dtq) -> None:
    proc = run_dtq("--app", "no_such_module_xyz", "stats")
    assert proc.returncode == 2
    assert "cannot import app module 'no_such_module_xyz'" in proc.stderr
    assert "PYTHONPATH" in proc.stderr
