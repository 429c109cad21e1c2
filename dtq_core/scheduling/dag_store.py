"""DAG runs in the backend, and the hook that moves them forward as node tasks finish.

Storage: one JSON document per run under ``dtq:dag:<run_id>`` holding the workflow's dict
form, the run's state and round, and each node's state, task id, timings, error and (when
a child asked for it) result. Run ids start with ``wf`` and the creation time, so they
sort by creation. A node's task id is ``<run_id>.<node index>.<round>``: the hook knows a
node's task from its id alone, and a retried run uses fresh ids.

A marker ``dtq:dag-active:<run_id>`` exists while a run is running, so reconciliation
reads only running runs.

Every change is a read, modify, ``compare_and_set`` loop, so threads or processes that
finish nodes at once never lose an update. A child is enqueued only by the writer whose
CAS moved it from ``waiting`` to ``pending``; an event seen twice, or by two processes,
finds the node already moved and does nothing.

The run document lives in :mod:`.dag_run` and the hook in :mod:`.dag_hook`; their public
names are re-exported here.
"""

from __future__ import annotations

from dtq_core.scheduling.dag_hook import SNAPSHOT_RUNS, DagHook, dag_hook
from dtq_core.scheduling.dag_run import (
    ACTIVE_PREFIX,
    KEY_PREFIX,
    RUN_PREFIX,
    NodeState,
    RunState,
    new_run_id,
    parse_task_id,
)

__all__ = [
    "ACTIVE_PREFIX",
    "KEY_PREFIX",
    "RUN_PREFIX",
    "SNAPSHOT_RUNS",
    "DagHook",
    "NodeState",
    "RunState",
    "dag_hook",
    "new_run_id",
    "parse_task_id",
]
