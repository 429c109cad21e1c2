"""Data printed by ``dtq`` never drives the terminal: control characters are escaped.

A task's error message, arguments, queue or name may hold an escape sequence (``ESC[2J``
clears the screen, ``ESC]52`` writes the clipboard) or a newline that forges a line.
Every output door (tables, fields, lines, error lines, worker logs) escapes them.
"""

from __future__ import annotations

import logging

import pytest

from cli import _output
from dtq_core import Broker, task
from dtq_core.registry import Registry
from dtq_core.text import SafeFormatter

HOSTILE = "evil\x1b[2J\x1b]52;c;Zm9v\x07\u202e\nforged line"


@pytest.fixture
def hostile(broker: Broker, cli_registry: Registry) -> str:
    @task(name="hostile", max_retries=0, registry=cli_registry)
    def fails(x: str) -> None:
        raise RuntimeError(x)

    tid = broker.send("hostile", [HOSTILE], queue="q\x1b[31m").id
    broker.work()
    return tid


def _assert_safe(out: str, lines_kept: bool = False) -> None:
    assert "\x1b[2J" not in out and "\x1b]52" not in out and "\x07" not in out, repr(out)
    assert "\u202e" not in out, repr(out)
    if not lines_kept:
        assert "\nforged line" not in out, repr(out)


@pytest.mark.parametrize("tty", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize(
    "command",
    [["tasks", "list"], ["tasks", "show", "{id}"], ["dlq", "list"], ["dlq", "show", "{id}"]],
)
def test_hostile_data_is_escaped(
    dtq, hostile: str, monkeypatch: pytest.MonkeyPatch, tty: bool, command: list[str]
) -> None:
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: tty)
    result = dtq(*(c.format(id=hostile) for c in command))
    assert result.exit_code == 0, result.stderr
    _assert_safe(result.stdout)
    _assert_safe(result.stderr)
    if not tty:  # (a terminal's table folds the cell across lines)
        assert "\\x1b[2J" in result.stdout  # shown, escaped


def test_an_error_line_quoting_data_is_escaped(dtq, broker: Broker) -> None:
    result = dtq("tasks", "show", "no\x1b[2Jsuch")
    assert result.exit_code == 2
    _assert_safe(result.stderr)


def test_worker_log_lines_cannot_be_forged_or_drive_the_terminal() -> None:
    fmt = SafeFormatter("%(levelname)s %(message)s")
    rec = logging.LogRecord("dtq", logging.WARNING, __file__, 1, "task %s failed", (HOSTILE,), None)
    line = fmt.format(rec)
    assert "\n" not in line
    _assert_safe(line)
    assert line.startswith("WARNING task evil\\x1b[2J")
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        import sys

        rec = logging.LogRecord("dtq", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    text = fmt.format(rec)
    assert "Traceback (most recent call last):" in text and text.count("\n") >= 3
    _assert_safe(text, lines_kept=True)  # a traceback keeps its lines
