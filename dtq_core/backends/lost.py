"""Which tasks were running beside a lost one in the same worker process.

A task that kills its worker process (a segfault in a C extension, ``os._exit``, the OOM
killer) takes every task running beside it down too: after ``max_deliveries`` they are
all dead-lettered as ``worker_lost``, and nothing says which one was the poison. So a
``worker_lost`` dead letter names the tasks that were running in the same process
(``host:pid`` of the worker id): the poison is the one beside every other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from dtq_core.task import TaskRecord, TaskState

__all__ = ["LostLog", "process_of"]

#: Tasks named beside a lost one at most.
MAX_BESIDE = 20


def process_of(worker: str | None) -> str | None:
    """The process part (``host:pid``) of a worker id ``host:pid:slot``."""
    if not worker or worker.count(":") < 2:
        return None
    return worker.rsplit(":", 1)[0]


class LostLog:
    """The last tasks whose leases ran out, with the process that held them (bounded).

    Args:
        size: Losses remembered.
    """

    def __init__(self, size: int = 256) -> None:
        self._lost: deque[tuple[str, str, str]] = deque(maxlen=size)

    def add(self, rec: TaskRecord) -> None:
        """Remember that ``rec``'s lease ran out on its worker."""
        proc = process_of(rec.worker)
        if proc is not None:
            self._lost.append((proc, rec.id, rec.name))

    def beside(self, rec: TaskRecord, running: Iterable[TaskRecord]) -> tuple[tuple[str, str], ...]:
        """``(task id, name)`` of the tasks lost with, or still running in, ``rec``'s process.

        Args:
            rec: The lost task (its ``worker`` names the process).
            running: Tasks still leased (those of that process died with it too).
        """
        proc = process_of(rec.worker)
        if proc is None:
            return ()
        out: dict[str, str] = {}
        for p, tid, name in reversed(self._lost):
            if p == proc and tid != rec.id:
                out.setdefault(tid, name)
        for r in running:
            if r.state is TaskState.RUNNING and r.id != rec.id and process_of(r.worker) == proc:
                out.setdefault(r.id, r.name)
        return tuple(list(out.items())[:MAX_BESIDE])
