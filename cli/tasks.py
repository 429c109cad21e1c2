"""``dtq tasks``: list, show and cancel tasks."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from cli import _complete
from cli._common import (
    FilterArgs,
    JsonOpt,
    LimitOpt,
    make_group,
    open_console,
    resolve_id,
    run_alone,
    want_json,
)
from cli._errors import EXIT_FAILED, CliError, fail
from cli._output import (
    Column,
    FieldsBlock,
    TableBlock,
    fmt_duration,
    fmt_time,
    fmt_value,
    info,
    print_blocks,
    print_json,
    print_table,
    state_style,
    write_line,
)

if TYPE_CHECKING:
    from dtq_core.task import TaskRecord

app = make_group("tasks", "List (the default), show and cancel tasks.")

IdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="A task id, or a unique prefix of one.",
        show_default=False,
        autocompletion=_complete.task_ids,
    ),
]


def record_row(rec: TaskRecord) -> list[object]:
    """One task as a table row (shared with ``dtq dlq list``)."""
    runtime = None
    if rec.started_at is not None and rec.finished_at is not None:
        runtime = rec.finished_at - rec.started_at
    err = f"{rec.error.type}: {rec.error.message}" if rec.error else (rec.dead_reason or "")
    return [
        rec.id,
        rec.name,
        rec.queue,
        rec.state.value,
        rec.attempt,
        fmt_time(rec.enqueued_at),
        fmt_duration(runtime) if runtime is not None else "",
        fmt_value(err, 50),
    ]


#: Columns of :func:`record_row`.
RECORD_COLUMNS: list[Column | str] = [
    "id",
    "name",
    "queue",
    Column("state", style=state_style),
    Column("attempt", justify="right"),
    "enqueued",
    Column("runtime", justify="right"),
    "error",
]


@app.command("list")
def list_tasks(
    filters: FilterArgs = None,
    state: Annotated[
        str | None,
        typer.Option("--state", "-s", metavar="STATE[,STATE]", help="e.g. pending,running."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", "-Q", help="Only this queue.", autocompletion=_complete.queue_names
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Only this task name.", autocompletion=_complete.task_names),
    ] = None,
    limit: LimitOpt = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            metavar="FIELD[:asc|desc]",
            help="enqueued (default, newest first), id, name, queue or state.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Tasks matching the options and filter terms, newest first (or --sort)."""
    from dtq_core.paging import DEFAULT_SORT, describe_total, parse_sort

    by, descending = parse_sort(sort) if sort else (DEFAULT_SORT, True)
    terms = list(filters or [])
    for key, value in (("state", state), ("queue", queue), ("task", name)):
        if value:
            terms.append(f"{key}:{value}")
    flt = shlex.join(terms) if terms else None
    with open_console() as console:
        page = console.task_page(flt, by, descending, None, offset, limit)
    recs = page.records
    if want_json(json_out):
        print_json([r.to_dict() for r in recs])
        return
    print_table(RECORD_COLUMNS, [record_row(r) for r in recs], empty="no tasks match")
    if recs:  # on stderr: the table stays the whole of stdout for pipes
        way = "desc" if descending else "asc"
        span = f"{offset + 1:,}-{offset + len(recs):,}"
        info(f"{span} of {describe_total(page)} tasks, by {by} {way}")


run_alone(app, list_tasks)


def record_blocks(rec: TaskRecord, title: str) -> list[FieldsBlock | TableBlock]:
    """A task record in detail: fields, attempts, edits and the last traceback."""
    data = rec.to_dict()
    pairs: list[tuple[str, object]] = [
        ("id", rec.id),
        ("name", rec.name),
        ("queue", rec.queue),
        ("priority", rec.priority),
        ("state", rec.state.value),
        ("args", fmt_value(data["args"], 200)),
        ("kwargs", fmt_value(data["kwargs"], 200)),
    ]
    if data["options"]:
        pairs.append(("options", fmt_value(data["options"], 200)))
    pairs += [
        ("created", fmt_time(rec.created_at)),
        ("enqueued", fmt_time(rec.enqueued_at)),
    ]
    if rec.eta is not None:
        pairs.append(("eta", fmt_time(rec.eta)))
    pairs += [
        ("started", fmt_time(rec.started_at)),
        ("finished", fmt_time(rec.finished_at)),
        ("attempt", f"{rec.attempt} of {rec.max_retries + 1}"),
        ("deliveries", rec.deliveries),
        ("worker", rec.worker),
    ]
    if rec.state.value == "SUCCESS":
        pairs.append(("result", fmt_value(rec.result, 200)))
    if rec.error is not None:
        pairs.append(("error", f"{rec.error.type}: {rec.error.message}"))
    for label, value in (
        ("dead reason", rec.dead_reason),
        ("replayed from", rec.replayed_from),
        ("replayed to", ", ".join(rec.replayed_to) or None),
        ("dedup key", rec.dedup_key),
        ("workflow", rec.workflow),
    ):
        if value:
            pairs.append((label, value))
    blocks: list[FieldsBlock | TableBlock] = [FieldsBlock(pairs, title=title)]
    attempts = rec.attempts()
    if attempts:
        blocks.append(
            TableBlock(
                [Column("#", justify="right"), "worker", "started", "finished",
                 Column("outcome", style=state_style), "error"],
                [
                    [a.number, a.worker or "", fmt_time(a.started_at), fmt_time(a.finished_at),
                     a.outcome, fmt_value(f"{a.error.type}: {a.error.message}", 60)
                     if a.error else ""]
                    for a in attempts
                ],
                title="Attempts",
            )
        )  # fmt: skip
    if rec.edits:
        blocks.append(
            TableBlock(
                ["at", "note", "args", "kwargs"],
                [
                    [fmt_time(e.get("at")), e.get("note", ""), fmt_value(e.get("args")),
                     fmt_value(e.get("kwargs"))]
                    for e in rec.edits
                ],
                title="Edits",
            )
        )  # fmt: skip
    if rec.error is not None and rec.error.traceback:
        blocks.append(FieldsBlock([("", line) for line in rec.error.traceback.splitlines()],
                                  title="Traceback"))  # fmt: skip
    return blocks


@app.command("show")
def show(task_id: IdArg, json_out: JsonOpt = False) -> None:
    """One task's record with its attempt history."""
    with open_console() as console:
        task_id = resolve_id(console, task_id)
        rec = console.task(task_id)
    if rec is None:
        raise CliError(f"no task {task_id!r} (list ids with `dtq tasks list`)")
    if want_json(json_out):
        print_json(rec.to_dict())
        return
    print_blocks(record_blocks(rec, f"Task {rec.id}"))


@app.command("cancel")
def cancel(task_id: IdArg, json_out: JsonOpt = False) -> None:
    """Cancel a task that has not started (PENDING or RETRY); exit 1 if it already ran."""
    with open_console() as console:
        task_id = resolve_id(console, task_id)
        done = console.cancel(task_id)
        rec = console.task(task_id)
    if rec is None and not done:
        raise CliError(f"no task {task_id!r} (list ids with `dtq tasks list`)")
    state = rec.state.value if rec is not None else "CANCELLED"
    if want_json(json_out):
        print_json({"id": task_id, "cancelled": done, "state": state})
    elif done:
        write_line(f"cancelled {task_id}")
    if not done:
        raise fail(
            f"task {task_id} is {state}: only PENDING or RETRY tasks can be cancelled",
            EXIT_FAILED,
        )
