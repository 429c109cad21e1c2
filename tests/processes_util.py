"""Helpers of the tests that run real processes: polling for a state, a site of files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def wait_until(what: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``what`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


@contextmanager
def process_site(
    where: Path, files: dict[str, str], env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Write ``files`` into ``where``; yield ``spawn(*args)`` running Python there.

    Spawned processes import from ``where`` and the repository first; every one still
    running at the end is killed.
    """
    for name, text in files.items():
        (where / name).write_text(text)
    penv = dict(os.environ)
    penv["PYTHONPATH"] = os.pathsep.join([str(where), str(REPO), penv.get("PYTHONPATH", "")])
    penv.update(env or {})
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, *args],
            cwd=where,
            env=penv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    try:
        yield {"dir": where, "spawn": spawn, "env": penv}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
