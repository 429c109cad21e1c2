"""Workflows: DAG runs, the selected run drawn live, a node's detail, retry from failures."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalScroll
from textual.widgets import Static

from dtq_core.snapshot import SystemSnapshot, WorkflowNodeSnapshot, WorkflowSnapshot
from dtq_tui.fmt import age, ago, duration, short_id
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.dag import DagView
from dtq_tui.widgets.live_table import FLEX, TablePane
from dtq_tui.widgets.memo import update_static


class WorkflowsScreen(DTQScreen):
    """DAG runs, newest first, and the selected run's graph.

    | Key | Action |
    | :- | :- |
    | `n` / `N` | Select the next / previous node of the graph. |
    | `enter` | Open the selected node's task. |
    | `r` | Retry the run from its failed nodes. |
    """

    BINDINGS = [
        Binding("n", "node(1)", "Next node", id="workflows.next_node"),
        Binding("N", "node(-1)", "Prev node", show=False, id="workflows.prev_node"),
        Binding("r", "retry", "Retry run", id="workflows.retry"),
    ]

    MODE = "workflows"
    TITLE = "Workflows"
    FILTER_HINT = "run id, name or state"
    MUTATING = frozenset({"retry"})

    def __init__(self) -> None:
        super().__init__()
        self.node_id: str | None = None

    def compose_body(self) -> ComposeResult:
        """Runs, graph, node detail."""
        yield TablePane(
            [
                ("Run", "id", 14),
                ("Workflow", "name", FLEX),
                ("State", "state", 11),
                ("Nodes", "nodes", 6),
                ("Started", "created", 7),
                ("Took", "took", 7),
            ],
            empty_text="no workflow runs: none started, or this engine does not report them",
            id="runs",
        )
        with HorizontalScroll(id="graph", classes="panel"):
            yield DagView()
        yield Static(id="node-detail", classes="panel detail")

    def on_mount(self) -> None:
        """Titles."""
        self.query_one("#graph").border_title = "graph"
        self.query_one("#node-detail").border_title = "node"

    @property
    def runs(self) -> TablePane:
        """The run table."""
        return self.query_one("#runs", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Run rows, then the selected run's graph."""
        pal = palette_for(self.app.theme_variables)
        now = snap.taken_at
        rows: list[tuple[str, list[Any]]] = []
        for run in sorted(snap.workflows, key=lambda r: r.created_at, reverse=True):
            if not matches(self.filter_text, run.id, run.name, run.state):
                continue
            done = sum(1 for n in run.nodes if n.state == "success")
            end = run.finished_at if run.finished_at is not None else now
            rows.append(
                (
                    run.id,
                    [
                        plain(short_id(run.id, 14)),
                        plain(run.name),
                        pal.state_text(run.state),
                        Text(f"{done}/{len(run.nodes)}", justify="right"),
                        age(now - run.created_at),
                        duration(end - run.created_at),
                    ],
                )
            )
        self.runs.sync(rows, "no runs match the filter" if snap.workflows else None)
        self._show_run()

    def selected_run(self) -> WorkflowSnapshot | None:
        """The run under the cursor."""
        key = self.runs.table.current_key
        if key is None or self.snapshot is None:
            return None
        return next((r for r in self.snapshot.workflows if r.id == key), None)

    def selected_node(self) -> WorkflowNodeSnapshot | None:
        """The highlighted node of the selected run."""
        run = self.selected_run()
        if run is None:
            return None
        return next((n for n in run.nodes if n.id == self.node_id), None)

    def _show_run(self) -> None:
        run = self.selected_run()
        dag = self.query_one(DagView)
        if run is not None and run.nodes and self.node_id not in {n.id for n in run.nodes}:
            failed = [n for n in run.nodes if n.state == "failed"]
            self.node_id = (failed or sorted(run.nodes, key=lambda n: (n.level, n.id)))[0].id
        dag.run = run
        dag.selected = self.node_id
        if run is not None:
            self.query_one("#graph").border_title = plain(f"graph · {run.name} {run.id}", 80)
        self._show_node()

    def _show_node(self) -> None:
        detail = self.query_one("#node-detail", Static)
        node = self.selected_node()
        snap = self.snapshot
        if node is None or snap is None:
            update_static(detail, Text("no node selected", style="italic"), layout=True)
            return
        pal = palette_for(self.app.theme_variables)
        text = Text()
        text.append_text(plain(node.id, style="bold"))
        text.append_text(plain(f"  {node.task}  "))
        text.append_text(pal.state_text(node.state))
        text.append(f"  level {node.level}")
        if node.parents:
            text.append_text(plain(f"  after {', '.join(node.parents)}"))
        text.append("\n")
        if node.started_at is not None:
            end = node.finished_at if node.finished_at is not None else snap.taken_at
            ran = duration(end - node.started_at)
            text.append(f"started {ago(node.started_at, snap.taken_at)}, ran {ran}")
        else:
            text.append("not started")
        if node.task_id:
            text.append_text(plain(f"  task {node.task_id} (enter opens it)"))
        if node.error:
            text.append("\n")
            text.append_text(plain(node.error, style=pal.role("bad"), multiline=True, limit=2000))
        update_static(detail, text, layout=True)

    def on_data_table_row_highlighted(self) -> None:
        """Follow the cursor."""
        self.node_id = None
        self._show_run()

    def on_data_table_row_selected(self) -> None:
        """``enter``: the selected node's task."""
        node = self.selected_node()
        if node is not None and node.task_id:
            self.dtq.open_task(node.task_id)
        elif node is not None:
            self.notify(f"node {node.id} has no task yet ({node.state})", markup=False)

    def action_node(self, step: int) -> None:
        """Move the highlight through the nodes (by level, then id)."""
        run = self.selected_run()
        if run is None or not run.nodes:
            return
        order = [n.id for n in sorted(run.nodes, key=lambda n: (n.level, n.id))]
        i = order.index(self.node_id) if self.node_id in order else -1
        self.node_id = order[(i + step) % len(order)]
        self._show_run()

    def status_text(self) -> str:
        """Counts by state."""
        snap = self.snapshot
        if snap is None:
            return ""
        failed = sum(1 for r in snap.workflows if r.state == "failed")
        running = sum(1 for r in snap.workflows if r.state == "running")
        return f"{len(snap.workflows)} runs · {running} running · {failed} failed"

    def action_retry(self) -> None:
        """Retry the selected run from its failed nodes."""
        run = self.selected_run()
        if run is None:
            self.notify("select a run first", severity="warning")
            return
        if run.state != "failed":
            self.notify(
                f"run {run.id} is {run.state}: only a failed run is retried", severity="warning"
            )
            return
        self.feed.retry_workflow(
            run.id,
            lambda nodes: self.notify(
                f"retrying {run.id}: {', '.join(nodes or []) or 'no nodes'}", markup=False
            ),
        )
