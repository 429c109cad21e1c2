"""The README's code blocks, run as written (issue 17, point 7).

A fenced block's info string says what the test does with it:

- ```` ```bash run ````: a shell block, run in order with the others in one ``bash``
  (so a worker started in one block is stopped in a later one), in a temporary
  directory, with ``dtq`` meaning this checkout;
- ```` ```python file=NAME ````: written to ``NAME`` in that directory first;
- ```` ```bash norun="REASON" ````: not run, and the reason says why.

A ``# → TEXT`` comment in a run block: a line of that block's output starts with TEXT.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
EXPECT = re.compile(r"#\s*→\s*(.+?)\s*$", re.M)
#: Printed by the harness before each run block, to split the output by block.
MARK = "@@readme-block-"
#: The section whose every block must say what the test does with it.
WALKTHROUGH = "## The first 10 minutes"


@dataclass(frozen=True)
class Block:
    """One fenced code block and its marker."""

    lang: str
    attrs: dict[str, str]
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with the ``key[=value]`` words of its info string."""
    out = []
    for m in FENCE.finditer(text):
        attrs = {}
        for word in shlex.split(m.group(2)):
            key, _, value = word.partition("=")
            attrs[key] = value
        out.append(Block(m.group(1), attrs, m.group(3), text.count("\n", 0, m.start()) + 1))
    return out


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start : nxt if nxt != -1 else len(text)]


def test_walkthrough_blocks_are_all_marked() -> None:
    text = README.read_text()
    found = blocks(section(text, WALKTHROUGH))
    assert len(found) >= 5
    for b in found:
        kinds = {"run", "file", "norun"} & set(b.attrs)
        assert len(kinds) == 1, f"block at walk-through line {b.line} needs run, file= or norun="
        if "norun" in b.attrs:
            assert b.attrs["norun"].strip(), f"block at line {b.line}: norun needs a reason"
        if "file" in b.attrs:
            assert b.attrs["file"] and "/" not in b.attrs["file"]
    steps = " ".join(b.code for b in found)
    for step in ("dtq worker", "dtq enqueue", "dtq dlq", "dtq dlq replay", "dtq tui", "kill"):
        assert step in steps, step


def test_install_lines_name_every_extra() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    text = README.read_text()
    for extra in extras:
        assert f"pip install -e '.[{extra}]'" in text, extra
    install = [b for b in blocks(section(text, "## Install")) if "pip install" in b.code]
    assert install and all(b.attrs.get("norun") for b in install)


def _shim_dir(tmp_path: Path) -> Path:
    """``dtq`` and ``dtq-tui`` that run this checkout with this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module in (("dtq", "cli.main"), ("dtq-tui", "dtq_tui.app")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n')
        shim.chmod(0o755)
    return bin_dir


@pytest.mark.timeout(150)
def test_readme_runs_as_written(tmp_path: Path) -> None:
    found = blocks(README.read_text())
    run = [b for b in found if "run" in b.attrs]
    assert run, "no runnable block in README.md"
    work = tmp_path / "walk"
    work.mkdir()
    for b in found:
        if "file" in b.attrs:
            (work / b.attrs["file"]).write_text(b.code)
    script = "\n".join(
        [
            "set -euo pipefail",
            # The harness's only addition: never leave a worker behind if a step fails.
            "trap 'kill \"${WORKER:-}\" 2>/dev/null || true' EXIT",
            *(f"echo {MARK}{i}\n{b.code}" for i, b in enumerate(run)),
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTQ_")}
    env["PATH"] = f"{_shim_dir(tmp_path)}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the walk-through did not finish in 120 s:\n{out}")
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    parts = re.split(rf"^{MARK}(\d+)$", out, flags=re.M)
    by_block = {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    assert sorted(by_block) == list(range(len(run))), out
    for i, b in enumerate(run):
        lines = by_block[i].splitlines()
        for expected in EXPECT.findall(b.code):
            assert any(line.startswith(expected) for line in lines), (
                f"README line {b.line}: no line starts with {expected!r}:\n{by_block[i]}"
            )
