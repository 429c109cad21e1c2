"""``dtq --read-only`` refuses changes in the engine; a slow connection is announced."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cli import _common, _output
from dtq_core import Broker, control, errors
from dtq_core.control import LocalConsole


def test_read_only_refuses_changes_and_allows_reads(
    dtq, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _common, "connect", lambda url: LocalConsole(broker, read_only=_common.state.read_only)
    )
    for args in (
        ("--read-only", "queues", "pause", "q", "--create"),
        ("queues", "pause", "q", "--create", "--read-only"),
        ("--read-only", "enqueue", "add", "--args", "[1, 2]"),
    ):
        out = dtq(*args)
        assert out.exit_code == 1, (args, out.stdout, out.stderr)
        assert "changes state: this session is read-only" in out.stderr
        assert "drop --read-only" in out.stderr
    assert not any(q.paused for q in broker.backend.queue_stats())
    assert sum(broker.backend.count_by_state().values()) == 0
    assert dtq("--read-only", "stats").exit_code == 0
    assert dtq("queues", "pause", "q", "--create").exit_code == 0  # the flag does not stick
    assert broker.backend.queue_stats()[0].paused


def test_app_console_is_read_only_too(dtq, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "roapp.py").write_text(
        "from dtq_core import Broker, BrokerConfig\n"
        "broker = Broker(BrokerConfig(backend='memory://', num_workers=0))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = dtq("--app", "roapp", "--read-only", "queues", "pause", "q", "--create")
    assert out.exit_code == 1 and "read-only" in out.stderr


def slow_connect(delay: float) -> Any:
    def connect(url: str | None = None, **kwargs: Any) -> Any:
        time.sleep(delay)
        raise errors.BackendUnavailable(f"redis at {url} unreachable: refused")

    return connect


URL = "redis://:hunter2@db.example:6379/0"


@pytest.mark.parametrize(
    ("tty", "args", "said"),
    [
        (True, (), True),
        (True, ("--json",), False),
        (True, ("-q",), False),
        (False, (), False),
    ],
)
def test_connecting_is_said_on_a_terminal_only(
    dtq, monkeypatch: pytest.MonkeyPatch, tty: bool, args: tuple[str, ...], said: bool
) -> None:
    monkeypatch.setattr(control, "connect", slow_connect(0.8))
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: tty)
    out = dtq("stats", "--backend", URL, *args)
    assert out.exit_code == 3
    assert ("dtq: connecting to redis://:***@db.example:6379/0…" in out.stderr) is said
    assert "hunter2" not in out.stderr + out.stdout


def test_a_quick_connection_says_nothing(dtq, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "connect", slow_connect(0.0))
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: True)
    out = dtq("stats", "--backend", URL)
    assert out.exit_code == 3 and "connecting" not in out.stderr
