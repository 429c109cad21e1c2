"""``dtq dag``: validate a workflow file, start a run, draw a run, print the file schema.

A workflow file (``.json`` or ``.toml``) has a ``name`` and ``nodes``, each node with
``id``, ``task``, ``args``, ``kwargs``, ``after``...: documented in ``cli/README.md``,
defined by :mod:`dtq_core.scheduling.dag_format` (``dtq dag schema`` prints it).
Files and run views call a node's dependencies ``after``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import _complete
from cli._common import JsonOpt, import_app, make_group, open_console, state, want_json
from cli._errors import EXIT_FAILED, CliError
from cli._output import fmt_duration, is_tty, print_json, rich_console, state_style, write_line

if TYPE_CHECKING:
    from dtq_core.snapshot import WorkflowSnapshot

app = make_group("dag", "DAG workflows: validate a file, start a run, show a run.")

FileArg = Annotated[
    Path,
    typer.Argument(
        metavar="FILE",
        help="A workflow file, .json or .toml (format: cli/README.md; `dtq dag schema`).",
        show_default=False,
    ),
]

#: Marks drawn before a node by state.
MARKS = {
    "success": "✔",
    "failed": "✘",
    "running": "▶",
    "pending": "…",
    "waiting": "·",
    "upstream_failed": "⊘",
}
#: States after which a run does not change.
RUN_FINAL = frozenset({"success", "failed"})


def _dag_module() -> ModuleType:
    try:
        from dtq_core.scheduling import dag
    except ImportError:
        raise CliError(
            "DAG workflows are not available in this build (dtq_core.scheduling.dag is missing)"
        ) from None
    return dag


def load(path: Path) -> Any:
    """Read and validate a workflow file with the engine; return the ``Workflow``.

    With ``--app`` the task names are checked against the app's registered tasks too.

    Raises:
        DAGError: The file is missing or malformed, or the graph is invalid (a cycle is
            named ``a → b → a``).
    """
    dag = _dag_module()
    workflow = dag.load_workflow(path)
    known = None
    if state.app:
        from dtq_core.registry import default_registry

        import_app(state.app)
        known = set(default_registry.names())
    workflow.validate(known)
    return workflow


@app.command("validate")
def validate(file: FileArg, json_out: JsonOpt = False) -> None:
    """Check FILE: cycles (named), unknown parents, duplicate node ids, JSON arguments.

    Task names are checked too when --app names the module that registers them.
    """
    workflow = load(file)
    levels = workflow.levels()
    if want_json(json_out):
        print_json(
            {
                "file": str(file),
                "valid": True,
                "name": workflow.name,
                "nodes": len(workflow),
                "levels": levels,
                "workflow": workflow.to_dict(),
            }
        )
        return
    depth = 1 + max(levels.values(), default=-1)
    write_line(f"{file}: valid workflow {workflow.name!r}, {len(workflow)} nodes, {depth} levels")
    parents = workflow.parents()
    for level in range(depth):
        ids = [n.id for n in workflow.nodes if levels[n.id] == level]
        for i, node_id in enumerate(ids):
            after = f"  after {', '.join(parents[node_id])}" if parents[node_id] else ""
            prefix = f"L{level}" if i == 0 else ""
            write_line(f"{prefix:<4}{node_id}{after}")


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a workflow file (for editors and CI checks).

    It checks the shape; `dtq dag validate FILE` also checks the graph (cycles, parents).

    Examples:
      dtq dag schema > workflow.schema.json
      "$schema": "./workflow.schema.json"       first key of a JSON workflow file
    """
    from dtq_core.scheduling.dag_format import json_schema

    print_json(json_schema())


@app.command("run")
def run(
    file: FileArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, metavar="SECONDS", help="Give up waiting after this."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate FILE and start a run; print its id (or, with --wait, the finished run).

    With --wait the exit code is 1 when the run failed.
    """
    spec = load(file).to_dict()
    as_json = want_json(json_out)
    with open_console() as console:
        start = getattr(console, "run_workflow", None)
        if not callable(start):
            raise CliError("this backend's Console API cannot run workflows yet (no run_workflow)")
        run_id = start(spec)
        if not wait:
            if as_json:
                print_json({"run_id": run_id})
            else:
                write_line(run_id)
            return
        snap = _wait_run(console, run_id, timeout)
    _show(snap, as_json)
    if snap.state == "failed":
        raise typer.Exit(EXIT_FAILED)


def _get_run(console: Any, run_id: str) -> WorkflowSnapshot | None:
    get = getattr(console, "workflow", None)
    if not callable(get):
        raise CliError("this backend's Console API cannot show workflows yet (no workflow())")
    return get(run_id)  # type: ignore[no-any-return]


def _wait_run(console: Any, run_id: str, timeout: float | None) -> WorkflowSnapshot:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.02
    while True:
        snap = _get_run(console, run_id)
        if snap is None:
            raise CliError(f"workflow run {run_id} vanished", code=EXIT_FAILED)
        if snap.state in RUN_FINAL:
            return snap
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(
                f"workflow run {run_id} still {snap.state} after {timeout:g}s "
                f"(follow it with `dtq dag show {run_id}`)",
                code=EXIT_FAILED,
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


@app.command("show")
def show(
    run_id: Annotated[
        str,
        typer.Argument(
            metavar="RUN_ID",
            help="A workflow run id (a unique prefix of a recent run's id will do).",
            autocompletion=_complete.run_ids,
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Draw a run's graph, level by level, with each node's state."""
    with open_console() as console:
        snap = _get_run(console, run_id)
        if snap is None:
            snap = _recent_run(console, run_id)
    _show(snap, want_json(json_out))


def _recent_run(console: Any, prefix: str) -> WorkflowSnapshot:
    """The one recent run (those the snapshot lists) whose id starts with ``prefix``.

    Raises:
        CliError: None or several match (listing them).
    """
    runs = [w for w in console.snapshot().workflows if w.id.startswith(prefix)] if prefix else []
    if len(runs) == 1:
        return runs[0]  # type: ignore[no-any-return]
    if not runs:
        raise CliError(
            f"no workflow run {prefix!r} (nor a recent run whose id starts with it; "
            "see `dtq stats --json` under workflows)"
        )
    raise CliError(
        f"{prefix!r} is ambiguous: {len(runs)} recent runs start with it "
        f"({', '.join(w.id for w in runs)}); type more of the id"
    )


def _show(snap: WorkflowSnapshot, as_json: bool) -> None:
    if as_json:
        data = dataclasses.asdict(snap)
        for node in data["nodes"]:
            node["after"] = node["parents"]  # the file's name; "parents" stays (stable keys)
        print_json(data)
        return
    lines = draw(snap)
    if is_tty():
        from rich.text import Text

        from dtq_core.text import escape_controls

        console = rich_console()
        for line, st in lines:
            safe = escape_controls(line)  # node ids and names are data
            console.print(Text(safe, style=state_style(st) or "") if st else Text(safe, "bold"))
    else:
        for line, _ in lines:
            write_line(line)


def draw(snap: WorkflowSnapshot) -> list[tuple[str, str | None]]:
    """A text drawing of a run: one row per node, grouped by level, with what it runs after.

    Returns ``(line, state)`` pairs; the state colours the line on a terminal.
    """
    done = sum(1 for n in snap.nodes if n.state == "success")
    head = f"workflow {snap.name} · run {snap.id} · {snap.state} · {done}/{len(snap.nodes)} done"
    out: list[tuple[str, str | None]] = [(head, None)]
    width = max((len(n.id) for n in snap.nodes), default=0)
    levels = sorted({n.level for n in snap.nodes})
    for level in levels:
        nodes = sorted((n for n in snap.nodes if n.level == level), key=lambda n: n.id)
        for i, n in enumerate(nodes):
            prefix = f"L{level}" if i == 0 else ""
            mark = MARKS.get(n.state, "?")
            took = ""
            if n.started_at is not None and n.finished_at is not None:
                took = " " + fmt_duration(n.finished_at - n.started_at)
            parents = f"  after {', '.join(n.parents)}" if n.parents else ""
            line = f"{prefix:<4}{mark} {n.id.ljust(width)}  {n.state}{took}  [{n.task}]{parents}"
            if n.error:
                line += f"  ! {n.error.splitlines()[0][:80]}"
            out.append((line, n.state))
    return out
