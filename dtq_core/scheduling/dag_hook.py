"""The hook that moves DAG runs forward as node tasks finish, and reconciles missed ones.

Every change is a read, modify, ``compare_and_set`` loop, so threads or processes that
finish nodes at once never lose an update. A child is enqueued only by the writer whose
CAS moved it from ``waiting`` to ``pending``; an event seen twice, or by two processes,
finds the node already moved and does nothing.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from dtq_core.errors import BackendError, ConfigError, DAGError, DTQError
from dtq_core.hooks import Hook, RunContext
from dtq_core.scheduling.dag import UPSTREAM_KWARG, Workflow
from dtq_core.scheduling.dag_run import (
    _ACTIVE,
    ACTIVE_PREFIX,
    KEY_PREFIX,
    RUN_PREFIX,
    NodeState,
    RunState,
    _blank_node,
    _Change,
    _dumps,
    _fail,
    _Graph,
    _release,
    _Send,
    _send_of,
    _settle_run,
    _succeed,
    new_run_id,
    parse_task_id,
    run_snapshot,
)
from dtq_core.snapshot import WorkflowSnapshot
from dtq_core.task import TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.broker import Broker
    from dtq_core.events import Event

log = logging.getLogger("dtq.dag")

#: Runs shown in the snapshot, newest first.
SNAPSHOT_RUNS = 50

_CAS_TRIES = 1000
_GRAPH_CACHE = 256
_S = TaskState
_FINAL = frozenset({_S.SUCCESS, _S.FAILED, _S.DEAD, _S.CANCELLED})


def _error_text(rec: TaskRecord | None, state: TaskState) -> str:
    if rec is not None and rec.error is not None:
        text = f"{rec.error.type}: {rec.error.message}"
        return f"{text} ({rec.dead_reason})" if rec.dead_reason else text
    if rec is not None and rec.dead_reason:
        return rec.dead_reason
    return state.value.lower()


class DagHook(Hook):
    """Starts DAG runs and releases their nodes as node tasks finish.

    It listens to the broker's event bus, so it sees the tasks this process runs; its
    ``tick`` (on workers' maintenance thread) reconciles runs with the task records, for
    outcomes whose events were lost (a process died between settling a task and
    publishing) and enqueues that never happened.

    Args:
        ttl_s: Seconds a run document is kept after its last change (``None``: forever).
        reconcile_s: How often ``tick`` reconciles running runs.
        resend_after_s: A pending node whose task does not exist this long after it was
            released is enqueued again.
    """

    def __init__(
        self,
        ttl_s: float | None = 7 * 86_400.0,
        reconcile_s: float = 5.0,
        resend_after_s: float = 30.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.reconcile_s = reconcile_s
        self.resend_after_s = resend_after_s
        self._graphs: OrderedDict[str, _Graph] = OrderedDict()
        self._graphs_lock = threading.Lock()
        self._done = threading.Condition()
        self._generation = 0
        self._unsubscribe: Callable[[], None] | None = None
        self._next_reconcile = 0.0

    def attach(self, broker: Broker) -> None:
        """Subscribe to the broker's events."""
        self._unsubscribe = broker.events.subscribe_batch(partial(self.on_batch, broker))

    def detach(self, broker: Broker) -> None:
        """Unsubscribe."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- commands ------------------------------------------------------------------------

    def start(self, broker: Broker, wf: Workflow) -> str:
        """Validate ``wf``, store a new run and enqueue its roots; return the run id.

        Raises:
            DAGError: The workflow is invalid (tasks are checked against the registry and
                the names workers registered).
        """
        broker.open()
        wf.validate(set(broker.registry.names()) | broker.backend.known_names())
        now = broker.clock.now()
        run_id = new_run_id(now)
        g = _Graph.of(wf)
        doc: dict[str, Any] = {
            "v": 1,
            "id": run_id,
            "name": wf.name,
            "state": RunState.RUNNING.value,
            "created_at": now,
            "finished_at": None,
            "round": 0,
            "spec": wf.to_dict(),
            "nodes": [_blank_node() for _ in g.nodes],
        }
        sends = [_release(doc, g, i, now) for i, ps in enumerate(g.parents) if not ps]
        broker.backend.set_key(ACTIVE_PREFIX + run_id, "1", self.ttl_s, now)
        if not broker.backend.compare_and_set(
            KEY_PREFIX + run_id, None, _dumps(doc), self.ttl_s, now
        ):
            raise DAGError(f"workflow run id {run_id} already exists")
        self._cache(run_id, g)
        self._dispatch(broker, run_id, g, sends)
        return run_id

    def retry(self, broker: Broker, run_id: str) -> list[str]:
        """Rerun a failed run's failed nodes (their ``upstream_failed`` descendants wait again).

        Returns:
            The ids of the nodes enqueued again.

        Raises:
            DAGError: Unknown run, or a run that is not ``failed``.
        """
        broker.open()

        def change(doc: dict[str, Any], g: _Graph, now: float) -> list[_Send]:
            if doc["state"] != RunState.FAILED:
                raise DAGError(
                    f"workflow run {run_id} is {doc['state']}: only a failed run can be retried"
                )
            doc["round"] += 1
            for node in doc["nodes"]:
                if node["state"] == NodeState.UPSTREAM_FAILED:
                    node.update(state=NodeState.WAITING.value, error=None)
            return [
                _release(doc, g, i, now)
                for i, node in enumerate(doc["nodes"])
                if node["state"] == NodeState.FAILED
            ]

        done = self._update(broker, run_id, change)
        if done is None:
            raise DAGError(f"unknown workflow run {run_id!r} (or it expired)")
        g, sends = done
        self._dispatch(broker, run_id, g, sends)
        return [g.nodes[s.node].id for s in sends]

    def get(self, broker: Broker, run_id: str) -> WorkflowSnapshot | None:
        """One run, or ``None`` when unknown or expired."""
        raw = broker.backend.get_key(KEY_PREFIX + run_id, broker.clock.now())
        return None if raw is None else self._snapshot_of(json.loads(raw))

    def wait(self, broker: Broker, run_id: str, timeout: float | None = None) -> WorkflowSnapshot:
        """Block until the run is ``success`` or ``failed``; return it.

        Raises:
            TimeoutError: Still running after ``timeout`` seconds.
            DAGError: Unknown run.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            generation = self._generation
            snap = self.get(broker, run_id)
            if snap is None:
                raise DAGError(f"unknown workflow run {run_id!r} (or it expired)")
            if snap.state != RunState.RUNNING:
                return snap
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"workflow run {run_id} still running after {timeout}s")
            # Woken when this process settles a run; the short wait covers other processes.
            with self._done:
                if self._generation == generation:
                    self._done.wait(left)

    # -- reacting to tasks ---------------------------------------------------------------

    def ack_later(self, ctx: RunContext) -> bool:
        """Node tasks are acknowledged at once: their run moves on right after."""
        return not ctx.delivery.task_id.startswith(RUN_PREFIX)

    def on_event(self, broker: Broker, ev: Event) -> None:
        """Move the node of a node task's event (other tasks are ignored at once)."""
        if ev.task_id.startswith(RUN_PREFIX):
            self.observe(broker, ev.task_id, TaskState(ev.new), ev.ts)

    def on_batch(
        self, broker: Broker, ts: float, transitions: Sequence[Sequence[Any]], worker: str | None
    ) -> None:
        """:meth:`on_event` for each of a batch of transitions published at ``ts``."""
        for t in transitions:
            if t[0].startswith(RUN_PREFIX):
                self.observe(broker, t[0], TaskState(t[4]), ts)

    def observe(self, broker: Broker, task_id: str, state: TaskState, ts: float) -> None:
        """Apply a node task's new ``state`` to its run (idempotent)."""
        parsed = parse_task_id(task_id)
        if parsed is None or state is _S.PENDING:
            return
        run_id, idx, _ = parsed
        backend = broker.backend
        # FAILED is final only if no RETRY or DEAD followed (the backend already knows).
        if state is _S.FAILED and backend.get_state(task_id) is not _S.FAILED:
            return
        rec = None if state is _S.RUNNING else backend.get(task_id)

        def change(doc: dict[str, Any], g: _Graph, now: float) -> list[_Send] | None:
            if idx >= len(doc["nodes"]):
                return None
            node = doc["nodes"][idx]
            if node["task_id"] != task_id or node["state"] not in _ACTIVE:
                return None
            if state is _S.RUNNING:
                if node["state"] != NodeState.PENDING:
                    return None
                node["state"] = NodeState.RUNNING.value
                node["started_at"] = node["started_at"] or ts
                return []
            if state is _S.RETRY:
                node["state"] = NodeState.PENDING.value
                node["error"] = f"retrying after {_error_text(rec, state)}"
                return []
            if state is _S.SUCCESS:
                return _succeed(doc, g, idx, rec, now)
            return _fail(doc, g, idx, _error_text(rec, state), now)

        done = self._update(broker, run_id, change)
        if done is not None:
            self._dispatch(broker, run_id, *done)

    def _dispatch(self, broker: Broker, run_id: str, g: _Graph, sends: list[_Send]) -> None:
        for s in sends:
            node = g.nodes[s.node]
            kwargs = dict(node.kwargs)
            if s.upstream is not None:
                kwargs[UPSTREAM_KWARG] = s.upstream
            try:
                broker.send(
                    node.task,
                    node.args,
                    kwargs,
                    task_id=s.task_id,
                    workflow=f"{run_id}/{node.id}",
                    queue=node.queue,
                    priority=node.priority,
                )
            except DTQError as exc:
                if broker.backend.get_state(s.task_id) is not None:
                    continue  # enqueued meanwhile by a reconciling process
                log.warning("workflow run %s: cannot enqueue node %s: %s", run_id, node.id, exc)
                err = f"not enqueued: {type(exc).__name__}: {exc}"

                def change(
                    doc: dict[str, Any], g: _Graph, now: float, s: _Send = s, err: str = err
                ) -> list[_Send] | None:
                    node = doc["nodes"][s.node]
                    if node["task_id"] != s.task_id or node["state"] not in _ACTIVE:
                        return None
                    return _fail(doc, g, s.node, err, now)

                self._update(broker, run_id, change)

    def _update(
        self, broker: Broker, run_id: str, change: _Change
    ) -> tuple[_Graph, list[_Send]] | None:
        """Apply ``change`` to the run's document with a CAS loop; ``None`` if no such run."""
        key = KEY_PREFIX + run_id
        backend = broker.backend
        for attempt in range(_CAS_TRIES):
            now = broker.clock.now()
            raw = backend.get_key(key, now)
            if raw is None:
                return None
            doc = json.loads(raw)
            g = self._graph(doc)
            was = doc["state"]
            sends = change(doc, g, now)
            if sends is None:
                return g, []
            _settle_run(doc, now)
            if backend.compare_and_set(key, raw, _dumps(doc), self.ttl_s, now):
                if doc["state"] != was:
                    if doc["state"] == RunState.RUNNING:
                        backend.set_key(ACTIVE_PREFIX + run_id, "1", self.ttl_s, now)
                    else:
                        backend.delete_key(ACTIVE_PREFIX + run_id)
                    with self._done:
                        self._generation += 1
                        self._done.notify_all()
                return g, sends
            if attempt >= 4:  # real contention: step aside for a moment
                time.sleep(random.uniform(0, min(0.01, 0.0002 * attempt)))
        raise BackendError(f"workflow run {run_id}: gave up after {_CAS_TRIES} conflicting writes")

    def _graph(self, doc: dict[str, Any]) -> _Graph:
        run_id = doc["id"]
        with self._graphs_lock:
            g = self._graphs.get(run_id)
            if g is not None:
                self._graphs.move_to_end(run_id)
                return g
        g = _Graph.of(Workflow.from_dict(doc["spec"]))
        self._cache(run_id, g)
        return g

    def _cache(self, run_id: str, g: _Graph) -> None:
        with self._graphs_lock:
            self._graphs[run_id] = g
            while len(self._graphs) > _GRAPH_CACHE:
                self._graphs.popitem(last=False)

    # -- maintenance and snapshot ----------------------------------------------------------

    def tick(self, broker: Broker, now: float) -> float | None:
        """Reconcile running runs every ``reconcile_s`` seconds."""
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.reconcile_s
            self.reconcile(broker)
        return self._next_reconcile

    def reconcile(self, broker: Broker) -> int:
        """Apply finished node tasks whose events were missed; resend lost enqueues.

        Only runs with an active marker are read, so this costs O(running runs).

        Returns:
            How many nodes were looked at again.
        """
        backend = broker.backend
        now = broker.clock.now()
        fixed = 0
        for marker in backend.scan_keys(ACTIVE_PREFIX, now, limit=100_000):
            key = KEY_PREFIX + marker.removeprefix(ACTIVE_PREFIX)
            raw = backend.get_key(key, now)
            try:
                doc = json.loads(raw) if raw is not None else None
                if doc is None or doc["state"] != RunState.RUNNING:
                    backend.delete_key(marker)  # expired, or settled by a process that died
                    continue
                for i, node in enumerate(doc["nodes"]):
                    if node["state"] not in _ACTIVE:
                        continue
                    tid = node["task_id"]
                    state = backend.get_state(tid)
                    if state is None and node["state"] == NodeState.PENDING:
                        if now - node["enqueued_at"] >= self.resend_after_s:
                            fixed += self._resend(broker, doc["id"], i, tid, node["enqueued_at"])
                    elif state in _FINAL or (state is _S.RUNNING and node["state"] == "pending"):
                        self.observe(broker, tid, state, now)
                        fixed += 1
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable workflow run %s: %s", key, exc)
        return fixed

    def _resend(self, broker: Broker, run_id: str, idx: int, task_id: str, seen: float) -> int:
        """Enqueue a released node's task that never reached the backend (once)."""

        def change(doc: dict[str, Any], g: _Graph, now: float) -> list[_Send] | None:
            node = doc["nodes"][idx]
            if (node["task_id"], node["state"], node["enqueued_at"]) != (task_id, "pending", seen):
                return None  # moved on, or another process resent it first
            node["enqueued_at"] = now
            return [_send_of(doc, g, idx)]

        done = self._update(broker, run_id, change)
        if done is None or not done[1]:
            return 0
        log.warning("workflow run %s: enqueueing lost task %s", run_id, task_id)
        self._dispatch(broker, run_id, *done)
        return 1

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """The most recent runs, newest first, under ``workflows``."""
        backend = broker.backend
        now = broker.clock.now()
        runs: list[WorkflowSnapshot] = []
        for key in reversed(backend.scan_keys(KEY_PREFIX, now, limit=100_000)):
            raw = backend.get_key(key, now)
            if raw is None:
                continue
            try:
                runs.append(self._snapshot_of(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable workflow run %s: %s", key, exc)
            if len(runs) >= SNAPSHOT_RUNS:
                break
        return {"workflows": tuple(runs)}

    def _snapshot_of(self, doc: dict[str, Any]) -> WorkflowSnapshot:
        return run_snapshot(doc, self._graph(doc))


def dag_hook(broker: Broker) -> DagHook:
    """The broker's :class:`DagHook`.

    Raises:
        ConfigError: The hook chain has none.
    """
    hook = broker.hook(DagHook)
    if hook is None:
        raise ConfigError(
            "this broker's hook chain has no DagHook: add "
            "dtq_core.scheduling.dag_store.DagHook() to BrokerConfig.hooks"
        )
    return hook
