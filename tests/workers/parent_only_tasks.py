"""A task module that imports in the test process but fails to in a worker process."""

from __future__ import annotations

import multiprocessing

from dtq_core import task
from dtq_core.registry import Registry

if multiprocessing.parent_process() is not None:
    raise RuntimeError("imported in a child process")

registry = Registry()


@task(name="parent_only.here", registry=registry)
def here() -> str:
    return "never in a child"
