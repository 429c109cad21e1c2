"""The no-op task of ``cluster_bench.py`` (``dtq worker bench._cluster_app``)."""

from __future__ import annotations

from dtq_core import task


@task(name="cb.noop")
def noop(i: int) -> None:
    """Nothing: the benchmark measures the queue, not the task."""
