"""``dtq queues``: list queues, pause and resume consumption."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from cli._common import JsonOpt, make_group, open_console, want_json
from cli._output import Column, fmt_rate, print_json, print_table, write_line

app = make_group("queues", "List queues; pause and resume consumption.")

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="A queue name.", show_default=False)]


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


@app.command("pause")
def pause(name: NameArg, json_out: JsonOpt = False) -> None:
    """Stop workers taking tasks from queue NAME (enqueueing still works)."""
    with open_console() as console:
        console.pause_queue(name)
    if want_json(json_out):
        print_json({"queue": name, "paused": True})
    else:
        write_line(f"paused queue {name}")


@app.command("resume")
def resume(name: NameArg, json_out: JsonOpt = False) -> None:
    """Let workers take tasks from queue NAME again."""
    with open_console() as console:
        console.resume_queue(name)
    if want_json(json_out):
        print_json({"queue": name, "paused": False})
    else:
        write_line(f"resumed queue {name}")
