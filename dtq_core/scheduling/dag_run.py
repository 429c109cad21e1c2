"""The run document of a DAG run: its keys, states, ids, graph and node transitions.

Storage: one JSON document per run under ``dtq:dag:<run_id>`` holding the workflow's dict
form, the run's state and round, and each node's state, task id, timings, error and (when
a child asked for it) result. Run ids start with ``wf`` and the creation time, so they
sort by creation. A node's task id is ``<run_id>.<node index>.<round>``: the hook knows a
node's task from its id alone, and a retried run uses fresh ids.

A marker ``dtq:dag-active:<run_id>`` exists while a run is running, so reconciliation
reads only running runs.

The functions here change a document in memory only; the hook in :mod:`.dag_hook` applies
them with a compare-and-set loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from dtq_core.ids import new_id
from dtq_core.scheduling.dag import Node, Workflow
from dtq_core.snapshot import WorkflowNodeSnapshot, WorkflowSnapshot
from dtq_core.task import TaskRecord

#: Backend key prefix of run documents.
KEY_PREFIX = "dtq:dag:"
#: Backend key prefix of markers of running runs (what reconciliation scans).
ACTIVE_PREFIX = "dtq:dag-active:"
#: Every run id (and so every node task id) starts with this.
RUN_PREFIX = "wf"


class NodeState(StrEnum):
    """States of a node in a run."""

    WAITING = "waiting"
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"


class RunState(StrEnum):
    """States of a run."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


_ACTIVE = (NodeState.PENDING, NodeState.RUNNING)


def new_run_id(now: float) -> str:
    """A run id: ``wf``, the creation time in ms (hex) and a unique suffix."""
    return f"{RUN_PREFIX}{int(now * 1000):011x}{new_id()}"


def parse_task_id(task_id: str) -> tuple[str, int, int] | None:
    """``(run_id, node_index, round)`` of a node's task id, ``None`` for other tasks."""
    if not task_id.startswith(RUN_PREFIX):
        return None
    run_id, _, rest = task_id.partition(".")
    idx, _, rnd = rest.partition(".")
    if not (idx.isascii() and idx.isdigit() and rnd.isascii() and rnd.isdigit()):
        return None
    return run_id, int(idx), int(rnd)


@dataclass(frozen=True, slots=True)
class _Graph:
    """A run's workflow by node index (immutable for the run, so cached)."""

    nodes: tuple[Node, ...]
    parents: tuple[tuple[int, ...], ...]
    children: tuple[tuple[int, ...], ...]
    levels: tuple[int, ...]
    #: Some child has ``pass_results``: keep this node's result in the document.
    keep_result: tuple[bool, ...]

    @classmethod
    def of(cls, wf: Workflow) -> _Graph:
        nodes = wf.nodes
        index = {n.id: i for i, n in enumerate(nodes)}
        parents = tuple(tuple(index[p] for p in dict.fromkeys(n.after)) for n in nodes)
        children: list[list[int]] = [[] for _ in nodes]
        for i, ps in enumerate(parents):
            for p in ps:
                children[p].append(i)
        levels = wf.levels()
        keep = [False] * len(nodes)
        for i, n in enumerate(nodes):
            if n.pass_results:
                for p in parents[i]:
                    keep[p] = True
        return cls(
            nodes,
            parents,
            tuple(tuple(c) for c in children),
            tuple(levels[n.id] for n in nodes),
            tuple(keep),
        )

    def descendants(self, idx: int) -> list[int]:
        seen: set[int] = set()
        todo = list(self.children[idx])
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.children[i])
        return sorted(seen)


class _Send(NamedTuple):
    """A node task to enqueue after the CAS that released it succeeded."""

    node: int
    task_id: str
    upstream: dict[str, Any] | None


#: Mutates a run document; returns the tasks to enqueue, or ``None`` for "no change".
_Change = Callable[[dict[str, Any], _Graph, float], list[_Send] | None]


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _blank_node() -> dict[str, Any]:
    return {
        "state": NodeState.WAITING.value,
        "task_id": None,
        "enqueued_at": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
    }


def _send_of(doc: dict[str, Any], g: _Graph, idx: int) -> _Send:
    upstream = None
    if g.nodes[idx].pass_results:
        upstream = {g.nodes[p].id: doc["nodes"][p].get("result") for p in g.parents[idx]}
    return _Send(idx, doc["nodes"][idx]["task_id"], upstream)


def _release(doc: dict[str, Any], g: _Graph, idx: int, now: float) -> _Send:
    node = doc["nodes"][idx]
    node.update(
        state=NodeState.PENDING.value,
        task_id=f"{doc['id']}.{idx}.{doc['round']}",
        enqueued_at=now,
        started_at=None,
        finished_at=None,
        error=None,
    )
    node.pop("result", None)
    return _send_of(doc, g, idx)


def _succeed(
    doc: dict[str, Any], g: _Graph, idx: int, rec: TaskRecord | None, now: float
) -> list[_Send]:
    node = doc["nodes"][idx]
    node.update(
        state=NodeState.SUCCESS.value,
        started_at=node["started_at"] or (rec.started_at if rec else None),
        finished_at=(rec.finished_at if rec else None) or now,
        error=None,
    )
    if g.keep_result[idx]:
        node["result"] = rec.result if rec else None
    nodes = doc["nodes"]
    return [
        _release(doc, g, c, now)
        for c in g.children[idx]
        if nodes[c]["state"] == NodeState.WAITING
        and all(nodes[p]["state"] == NodeState.SUCCESS for p in g.parents[c])
    ]


def _fail(doc: dict[str, Any], g: _Graph, idx: int, error: str, now: float) -> list[_Send]:
    doc["nodes"][idx].update(state=NodeState.FAILED.value, error=error, finished_at=now)
    why = f"upstream {g.nodes[idx].id!r} failed"
    for d in g.descendants(idx):
        node = doc["nodes"][d]
        if node["state"] == NodeState.WAITING:
            node.update(state=NodeState.UPSTREAM_FAILED.value, error=why)
    return []


def _settle_run(doc: dict[str, Any], now: float) -> None:
    states = [n["state"] for n in doc["nodes"]]
    if any(s in _ACTIVE for s in states):
        doc["state"], doc["finished_at"] = RunState.RUNNING.value, None
        return
    new = RunState.SUCCESS if all(s == NodeState.SUCCESS for s in states) else RunState.FAILED
    if doc["state"] != new:
        doc["state"], doc["finished_at"] = new.value, now


def run_snapshot(doc: dict[str, Any], g: _Graph) -> WorkflowSnapshot:
    """The console's view of a run document (``g``: its workflow's graph)."""
    nodes = tuple(
        WorkflowNodeSnapshot(
            id=spec.id,
            task=spec.task,
            state=n["state"],
            level=g.levels[i],
            parents=tuple(g.nodes[p].id for p in g.parents[i]),
            task_id=n["task_id"],
            started_at=n["started_at"],
            finished_at=n["finished_at"],
            error=n["error"],
        )
        for i, (spec, n) in enumerate(zip(g.nodes, doc["nodes"], strict=True))
    )
    return WorkflowSnapshot(
        id=doc["id"],
        name=doc["name"],
        state=doc["state"],
        created_at=doc["created_at"],
        finished_at=doc["finished_at"],
        nodes=nodes,
    )
