"""The engine must not know its faces: importing dtq_core loads no UI library."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_engine_loads_no_ui_library() -> None:
    code = (
        "import sys, json, dtq_core, dtq_core.control, dtq_core.broker;"
        "print(json.dumps(sorted(m for m in ('textual', 'rich', 'typer', 'dtq_tui', 'cli')"
        " if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_no_pickle_in_the_engine() -> None:
    code = "import sys, dtq_core, dtq_core.broker; print('pickle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
