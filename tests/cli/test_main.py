"""The root command: composition, help, version, start-up cost."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest
import typer

from cli._group import load_command
from cli.main import COMMANDS

from .conftest import REPO


def test_help_lists_every_command(dtq) -> None:
    result = dtq("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.stdout
    assert "Exit codes: 0 success" in result.stdout
    assert "--install-completion" in result.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_table_help_matches_the_command(name: str) -> None:
    """The short help in main.COMMANDS is the first line of the command's own help."""
    target, short = COMMANDS[name]
    command = load_command(name, target)
    assert command.name == name
    assert command.get_short_help_str(limit=200) == short


def _all_command_paths() -> list[list[str]]:
    paths = []
    for name, (target, _) in COMMANDS.items():
        command = load_command(name, target)
        subs = getattr(command, "commands", None)
        if subs:
            paths += [[name, sub] for sub in subs]
        else:
            paths.append([name])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=" ".join)
def test_every_command_has_help(dtq, path: list[str]) -> None:
    result = dtq(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: dtq " + " ".join(path) in result.stdout


def test_groups_without_a_subcommand_show_help(dtq) -> None:
    result = dtq("wal")
    assert result.exit_code == 2  # click's no_args_is_help convention
    assert "verify" in result.output


def test_version(dtq) -> None:
    result = dtq("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("dtq ")


def test_unknown_command_is_a_usage_error(dtq) -> None:
    result = dtq("stast")
    assert result.exit_code == 2
    assert "No such command 'stast'" in result.output
    assert "Did you mean 'stats'" in result.output


def test_show_completion_script(dtq, monkeypatch: pytest.MonkeyPatch) -> None:
    # typer finds the shell among the process's ancestors (shellingham), not in $SHELL: a
    # run with no shell above it (a detached CI job) would find none and exit 1.
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda *a, **k: ("bash", "/bin/bash"))
    result = dtq("--show-completion")
    assert result.exit_code == 0
    assert "_DTQ_COMPLETE" in result.stdout


def test_completion_resolves_lazy_commands() -> None:
    env = {**os.environ, "_DTQ_COMPLETE": "complete_bash", "COMP_WORDS": "dtq dlq re",
           "COMP_CWORD": "2"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "cli.main"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert out.stdout.split() == ["replay"]


def test_startup_imports_neither_the_engine_nor_rich_nor_textual() -> None:
    code = (
        "import sys, json\n"
        "sys.argv = ['dtq', '--help']\n"
        "import cli.main\n"
        "try:\n    cli.main.main()\nexcept SystemExit:\n    pass\n"
        "mods = ('dtq_core', 'rich', 'textual', 'dtq_tui', 'cli.dlq', 'cli.stats')\n"
        "print(json.dumps([m for m in mods if m in sys.modules]), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []


def test_help_startup_time() -> None:
    """Print the wall time of `dtq --help` (measured, not asserted tightly: CI is noisy)."""
    cmd = [sys.executable, "-m", "cli.main", "--help"]
    base = [sys.executable, "-c", "pass"]
    times, bare = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(base, capture_output=True, check=True)
        bare.append(time.perf_counter() - t0)
    print(
        f"\ndtq --help: min {min(times) * 1000:.0f} ms, median "
        f"{statistics.median(times) * 1000:.0f} ms (bare python: min {min(bare) * 1000:.0f} ms)"
    )
    assert min(times) < 3.0


def test_typer_app_is_importable_as_a_typer() -> None:
    from cli.main import app

    assert isinstance(app, typer.Typer)


def test_readme_documents_every_command() -> None:
    text = (REPO / "cli" / "README.md").read_text()
    for path in _all_command_paths():
        assert " ".join(path) in text, path
