"""``dtq queues``: list queues, pause and resume consumption."""

from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING, Annotated

import typer

from cli import _complete
from cli._common import JsonOpt, make_group, open_console, run_alone, want_json
from cli._errors import CliError
from cli._output import Column, fmt_rate, print_json, print_table, write_line

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI

app = make_group("queues", "List queues (the default); pause and resume consumption.")

NameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="A queue name.",
        show_default=False,
        autocompletion=_complete.queue_names,
    ),
]
CreateOpt = Annotated[
    bool,
    typer.Option("--create", help="Act on NAME even though no task or worker has used it yet."),
]


def check_known(console: ConsoleAPI, name: str, verb: str) -> None:
    """Refuse a queue that no queue listing, task record or worker (by its queues) names.

    A typo must not silently create (and pause) a new queue.

    Raises:
        CliError: Naming the known queues, the closest one, and ``--create``.
    """
    snap = console.snapshot()
    known = sorted({q.name for q in snap.queues} | {q for w in snap.workers for q in w.queues})
    if name in known:
        return
    from dtq_core.filters import TaskFilter

    if console.tasks(TaskFilter(queue=name), limit=1):
        return
    hint = difflib.get_close_matches(name, known, 1)
    close = f"did you mean {hint[0]!r}? " if hint else ""
    listed = f"known queues: {', '.join(known)}; " if known else "no queue is known yet; "
    raise CliError(
        f"no queue {name!r}: {close}{listed}to {verb} it before any task uses it, add --create"
    )


@app.command("list")
def list_queues(json_out: JsonOpt = False) -> None:
    """Every queue with its depth, running tasks, flow and paused flag."""
    with open_console() as console:
        queues = console.snapshot().queues
    if want_json(json_out):
        print_json([{**dataclasses.asdict(q), "depth": q.depth} for q in queues])
        return
    right = [Column(h, justify="right") for h in ("ready", "delayed", "running")]
    print_table(
        ["queue", *right, "paused", Column("in/s 10s", justify="right"),
         Column("done/s 10s", justify="right"), Column("failed/s 10s", justify="right")],
        [
            [q.name, q.ready, q.delayed, q.running, "paused" if q.paused else "",
             fmt_rate(q.enqueued.r10), fmt_rate(q.succeeded.r10), fmt_rate(q.failed.r10)]
            for q in queues
        ],
        empty="no queues yet",
    )  # fmt: skip


run_alone(app, list_queues)


@app.command("pause")
def pause(name: NameArg, create: CreateOpt = False, json_out: JsonOpt = False) -> None:
    """Stop workers taking tasks from queue NAME (enqueueing still works)."""
    with open_console() as console:
        if not create:
            check_known(console, name, "pause")
        console.pause_queue(name)
    if want_json(json_out):
        print_json({"queue": name, "paused": True})
    else:
        write_line(f"paused queue {name}")


@app.command("resume")
def resume(name: NameArg, create: CreateOpt = False, json_out: JsonOpt = False) -> None:
    """Let workers take tasks from queue NAME again."""
    with open_console() as console:
        if not create:
            check_known(console, name, "resume")
        console.resume_queue(name)
    if want_json(json_out):
        print_json({"queue": name, "paused": False})
    else:
        write_line(f"resumed queue {name}")
