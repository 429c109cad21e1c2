"""Help that reads as written (issue 17, point 3): every command's --help is scanned."""

from __future__ import annotations

import re

import pytest

from cli._help import keep_examples
from cli.main import COMMANDS

from .test_main import _all_command_paths

#: What must never reach a reader: click's verbatim marker, escapes printed literally,
#: unrendered markup, and typer's Python type labels.
STRAY = re.compile(
    r"\x08|\\[abfnrtv]|\[/?(?:bold|dim|red|green|yellow|italic|b|i)\]|<(?:list\[|str>|int|float|path>)"
)


@pytest.mark.parametrize("path", [[], *_all_command_paths()], ids=lambda p: " ".join(p) or "dtq")
def test_help_has_no_stray_escapes(dtq, path: list[str]) -> None:
    result = dtq(*path, "--help", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    found = STRAY.findall(result.stdout)
    assert not found, f"dtq {' '.join(path)} --help shows {found!r}"


def test_examples_print_as_examples(dtq) -> None:
    text = dtq("dlq", "replay", "--help", env={"COLUMNS": "100"}).stdout
    lines = text.splitlines()
    start = lines.index("  Examples:")
    block = [line for line in lines[start + 1 : start + 6] if line.strip()]
    assert block[0].startswith("    dtq dlq replay ID ")
    assert block[1].strip() == "dtq dlq replay task:send_email exc:Timeout --dry-run"
    assert block[2].strip() == "dtq dlq replay ID --args '[1, 2]' --note 'fixed input'"
    enqueue = dtq("enqueue", "--help").stdout
    assert "\n    dtq enqueue add --args '[2, 3]' --wait 10" in enqueue


def test_keep_examples_marks_only_the_block() -> None:
    text = keep_examples("Do it.\n\n    Examples:\n      a b\n      c d\n\n    After.")
    assert text.split("\n") == ["Do it.", "", "Examples:", "", "\b", "  a b", "  c d", "", "After."]
    assert keep_examples("No examples here.") == "No examples here."


def test_values_are_named_in_words(dtq) -> None:
    text = dtq("tasks", "list", "--help", env={"COLUMNS": "100"}).stdout
    assert "-n, --limit N" in text
    assert "FILTER  Filter terms" in text
    assert "<" not in text


def test_every_command_is_scanned() -> None:
    assert {p[0] for p in _all_command_paths()} == set(COMMANDS)
