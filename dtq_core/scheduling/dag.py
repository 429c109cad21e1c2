"""DAG workflows: declare tasks with dependencies, validate them, and run them.

A :class:`Workflow` is a set of nodes, each naming a registered task and the nodes it runs
after. It is built in code (:meth:`Workflow.node`) or from a plain dict (:meth:`Workflow.
from_dict`), the form :func:`load_workflow` reads from JSON or TOML files::

    wf = Workflow("etl")
    wf.node("extract", "extract")
    wf.node("transform", "transform", after="extract", pass_results=True)
    wf.node("load", "load", after="transform", pass_results=True)
    run_id = run_workflow(broker, wf)

Running is done by :class:`~dtq_core.scheduling.dag_store.DagHook` (in the default hook
chain): each run is one document in the backend, so any worker process can release the
next nodes and the console can draw the run live.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dtq_core.codec import check_json
from dtq_core.errors import DAGError, SerializationError
from dtq_core.scheduling.dag_format import (
    SCHEMA_KEY,
    WORKFLOW_FIELDS,
    did_you_mean,
    load_workflow,
    node_from_dict,
    valid_node_fields,
)

if TYPE_CHECKING:
    from dtq_core.broker import Broker
    from dtq_core.client import Task
    from dtq_core.snapshot import WorkflowSnapshot

#: The kwarg through which a ``pass_results`` node receives ``{parent_id: result}``.
UPSTREAM_KWARG = "upstream"


@dataclass(frozen=True, slots=True)
class Node:
    """One step of a workflow: a task call that runs after its parents succeeded.

    Attributes:
        id: Unique within the workflow.
        task: The registered task name.
        args: Positional arguments of the call.
        kwargs: Keyword arguments of the call.
        after: Ids of the parent nodes.
        pass_results: Call with ``upstream={parent_id: result}`` added to the kwargs.
        queue: Overrides the task's queue.
        priority: Overrides the task's priority.
    """

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    pass_results: bool = False
    queue: str | None = None
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The dict form (optional fields only when set)."""
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "after": list(self.after),
        }
        if self.pass_results:
            out["pass_results"] = True
        if self.queue is not None:
            out["queue"] = self.queue
        if self.priority is not None:
            out["priority"] = self.priority
        return out


class Workflow:
    """A named DAG of task calls.

    Args:
        name: Shown in the console and the CLI.

    Example:
        >>> wf = Workflow("etl")
        >>> wf.node("extract", "extract")
        'extract'
        >>> wf.node("load", "load", after="extract")
        'load'
        >>> wf.levels()
        {'extract': 0, 'load': 1}
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[Node] = []

    def __repr__(self) -> str:
        return f"<Workflow {self.name} nodes={len(self._nodes)}>"

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in declaration order."""
        return tuple(self._nodes)

    def node(
        self,
        id: str,
        task: str | Task[Any, Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        after: str | Iterable[str] = (),
        pass_results: bool = False,
        queue: str | None = None,
        priority: int | None = None,
    ) -> str:
        """Add a node; return its id (to use in later ``after=``).

        Args:
            id: Unique node id.
            task: A registered task or its name.
            args: Positional arguments.
            kwargs: Keyword arguments.
            after: A parent id or several.
            pass_results: Add ``upstream={parent_id: result}`` to the call's kwargs.
            queue: Overrides the task's queue.
            priority: Overrides the task's priority.

        Problems (duplicates, unknown parents, cycles) are reported by :meth:`validate`.
        """
        parents = (after,) if isinstance(after, str) else tuple(after)
        name = task if isinstance(task, str) else task.name
        self._nodes.append(
            Node(id, name, tuple(args), dict(kwargs or {}), parents, pass_results, queue, priority)
        )
        return id

    # -- the dict form -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plain dict form (what :meth:`from_dict` and the JSON/TOML files use)."""
        return {"name": self.name, "nodes": [n.to_dict() for n in self._nodes]}

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "workflow") -> Workflow:
        """Build a workflow from its dict form (not yet validated).

        Raises:
            DAGError: The data does not have the shape of a workflow, naming where.
        """
        if not isinstance(data, Mapping):
            raise DAGError(f"a workflow must be a table/object, not {type(data).__name__}")
        extra = sorted(set(data) - set(WORKFLOW_FIELDS) - {SCHEMA_KEY})
        if extra:
            raise DAGError(
                f"unknown workflow field {extra[0]!r}{did_you_mean(extra[0], WORKFLOW_FIELDS)} "
                f"(valid fields: {', '.join(WORKFLOW_FIELDS)}; each node: {valid_node_fields()})"
            )
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name:
            raise DAGError("workflow name must be a non-empty string")
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise DAGError(f"workflow {name!r}: 'nodes' must be a list of node tables")
        wf = cls(name)
        for i, raw in enumerate(nodes):
            wf._nodes.append(node_from_dict(raw, f"nodes[{i}]"))
        return wf

    # -- checks and shape ----------------------------------------------------------------

    def validate(self, known_tasks: set[str] | None = None) -> None:
        """Check the graph; raise naming every problem found.

        Args:
            known_tasks: Task names that can run; ``None`` skips that check.

        Raises:
            DAGError: Empty workflow, duplicate ids, parents that are not nodes, unknown
                tasks, arguments that are not JSON, an ``upstream`` kwarg clash, or a
                cycle written ``a → b → a``.
        """
        if not self._nodes:
            raise DAGError(f"workflow {self.name!r} has no nodes")
        problems: list[str] = []
        ids = [n.id for n in self._nodes]
        seen: set[str] = set()
        dups: list[str] = []
        for i in ids:
            if i in seen and i not in dups:
                dups.append(i)
            seen.add(i)
        if dups:
            problems.append(f"duplicate node id{'s' if len(dups) > 1 else ''} {_names(dups)}")
        for n in self._nodes:
            for p in n.after:
                if p not in seen:
                    hint = difflib.get_close_matches(p, ids, 1)
                    tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                    problems.append(f"node {n.id!r} runs after {p!r}, which is not a node{tail}")
            if known_tasks is not None and n.task not in known_tasks:
                hint = difflib.get_close_matches(n.task, sorted(known_tasks), 1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                problems.append(f"node {n.id!r}: unknown task {n.task!r}{tail}")
            try:
                check_json([n.args, n.kwargs], f"node {n.id!r}: args/kwargs")
            except SerializationError as exc:
                problems.append(str(exc))
            if n.pass_results and UPSTREAM_KWARG in n.kwargs:
                problems.append(
                    f"node {n.id!r} passes results as {UPSTREAM_KWARG}=, "
                    f"so its kwargs cannot set {UPSTREAM_KWARG!r}"
                )
        cycle = self._find_cycle()
        if cycle:
            problems.append(f"cycle {' → '.join(cycle)}")
        if problems:
            raise DAGError(f"workflow {self.name!r}: " + "; ".join(problems))

    def _find_cycle(self) -> list[str]:
        """One cycle as ``[a, b, c, a]`` (edges parent → child), or ``[]``."""
        order = {n.id: i for i, n in reversed(list(enumerate(self._nodes)))}
        children: dict[str, list[str]] = {i: [] for i in order}
        for n in self._nodes:
            for p in n.after:
                if p in children and n.id not in children[p]:
                    children[p].append(n.id)
        state: dict[str, int] = {}  # 1: on the stack, 2: done
        for start in order:
            if start in state:
                continue
            stack: list[tuple[str, Iterator[str]]] = [(start, iter(children[start]))]
            path = [start]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                child = next(it, None)
                if child is None:
                    stack.pop()
                    path.pop()
                    state[node] = 2
                elif state.get(child) == 1:
                    loop = path[path.index(child) :]
                    first = min(range(len(loop)), key=lambda k: order[loop[k]])
                    loop = loop[first:] + loop[:first]
                    return [*loop, loop[0]]
                elif child not in state:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(children[child])))
        return []

    def parents(self) -> dict[str, tuple[str, ...]]:
        """Each node's parents (first declaration wins for a duplicate id)."""
        out: dict[str, tuple[str, ...]] = {}
        for n in self._nodes:
            out.setdefault(n.id, tuple(dict.fromkeys(n.after)))
        return out

    def levels(self) -> dict[str, int]:
        """The longest-path layer of each node (roots are 0), for drawing left to right.

        Raises:
            DAGError: The workflow is not valid (see :meth:`validate`).
        """
        self.validate()
        parents = self.parents()
        level: dict[str, int] = {}

        def depth(node: str) -> int:
            # Iterative to survive long chains; validate() ruled out cycles.
            todo = [node]
            while todo:
                cur = todo[-1]
                missing = [p for p in parents[cur] if p not in level]
                if missing:
                    todo.extend(missing)
                    continue
                todo.pop()
                level[cur] = 1 + max((level[p] for p in parents[cur]), default=-1)
            return level[node]

        return {n.id: depth(n.id) for n in self._nodes}


def _names(items: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in items)


# -- running (the engine lives in dag_store; imported lazily to keep this module pure) --


def run_workflow(broker: Broker, wf: Workflow) -> str:
    """Validate ``wf`` against the tasks ``broker`` knows and start a run.

    Returns:
        The run id (sortable by creation time).

    Raises:
        DAGError: The workflow is invalid.
        ConfigError: The broker's hook chain has no ``DagHook``.
    """
    from dtq_core.scheduling.dag_store import dag_hook

    return dag_hook(broker).start(broker, wf)


def retry_workflow(broker: Broker, run_id: str) -> list[str]:
    """Rerun a failed run from its failed nodes; succeeded nodes keep their results.

    Returns:
        The ids of the nodes enqueued again.

    Raises:
        DAGError: Unknown run, or a run that has not failed.
    """
    from dtq_core.scheduling.dag_store import dag_hook

    return dag_hook(broker).retry(broker, run_id)


def get_workflow(broker: Broker, run_id: str) -> WorkflowSnapshot | None:
    """One run as the console draws it, or ``None`` when unknown or expired."""
    from dtq_core.scheduling.dag_store import dag_hook

    return dag_hook(broker).get(broker, run_id)


def wait_workflow(broker: Broker, run_id: str, timeout: float | None = None) -> WorkflowSnapshot:
    """Block until a run is ``success`` or ``failed``; return it.

    Raises:
        TimeoutError: Still running after ``timeout`` seconds.
        DAGError: Unknown run.
    """
    from dtq_core.scheduling.dag_store import dag_hook

    return dag_hook(broker).wait(broker, run_id, timeout)


__all__ = [
    "UPSTREAM_KWARG",
    "Node",
    "Workflow",
    "get_workflow",
    "load_workflow",
    "retry_workflow",
    "run_workflow",
    "wait_workflow",
]
