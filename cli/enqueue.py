"""``dtq enqueue``: send a registered task by name, optionally wait for its result."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import _complete
from cli._common import (
    ArgsOpt,
    JsonOpt,
    KwargsOpt,
    command_app,
    open_console,
    want_json,
)
from cli._errors import EXIT_FAILED, CliError, fail
from cli._input import parse_json
from cli._output import print_json, to_json, write_line

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI
    from dtq_core.task import TaskRecord

#: States after which a task never changes again.
FINAL_STATES = frozenset({"SUCCESS", "FAILED", "DEAD", "CANCELLED"})


def enqueue(
    task_name: Annotated[
        str,
        typer.Argument(
            metavar="TASK_NAME",
            help="A registered task name.",
            show_default=False,
            autocompletion=_complete.task_names,
        ),
    ],
    args: ArgsOpt = None,
    kwargs: KwargsOpt = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            "-Q",
            help="Queue [default: the task's].",
            autocompletion=_complete.queue_names,
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option("--priority", "-p", help="Lower runs first [default: the task's]."),
    ] = None,
    countdown: Annotated[
        float | None,
        typer.Option("--countdown", min=0, metavar="SECONDS", help="Run no sooner than this."),
    ] = None,
    eta: Annotated[
        str | None,
        typer.Option(
            "--eta",
            metavar="ISO",
            help="Run no sooner than this ISO 8601 time (no zone = local time).",
        ),
    ] = None,
    dedup_key: Annotated[
        str | None,
        typer.Option("--dedup-key", help="Drop this enqueue if the key was seen recently."),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="Wait up to SECONDS and print the result; exit 1 if the task failed.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Enqueue a task by name; print its id or its result.

    Examples:
      dtq enqueue add --args '[2, 3]'               print the new task's id
      dtq enqueue add --args '[2, 3]' --wait 10     wait, print the result; exit 1 on failure
      dtq enqueue send_email --kwargs '{"to": "ops@example.com"}' --countdown 60
    """
    call_args = parse_json(args, "--args", list, "[1, 2]")
    call_kwargs = parse_json(kwargs, "--kwargs", dict, '{"x": 1}')
    if countdown is not None and eta is not None:
        raise CliError("give --countdown or --eta, not both")
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if priority is not None:
        options["priority"] = priority
    if countdown is not None:
        options["countdown"] = countdown
    if eta is not None:
        options["eta"] = parse_eta(eta)
    if dedup_key is not None:
        options["dedup_key"] = dedup_key
    as_json = want_json(json_out)
    with open_console() as console:
        task_id = console.enqueue(task_name, call_args, call_kwargs, **options)
        if wait is None:
            if as_json:
                print_json({"id": task_id})
            else:
                write_line(task_id)
            return
        rec = wait_for(console, task_id, wait)
    _print_outcome(rec, as_json)


def parse_eta(text: str) -> float:
    """An ISO 8601 time as epoch seconds; a time without a zone is read as local time.

    Raises:
        CliError: Not ISO 8601.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"bad --eta {text!r}: use ISO 8601, e.g. 2030-01-01T09:00:00+00:00"
        ) from None
    # Epoch seconds travel over every Console API (a datetime is not JSON).
    return (when if when.tzinfo is not None else when.astimezone()).timestamp()


def wait_for(console: ConsoleAPI, task_id: str, timeout: float) -> TaskRecord:
    """Poll the task's record until it is final.

    Raises:
        CliError: Not final within ``timeout`` (exit 1) or the record vanished.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        rec = console.task(task_id)
        if rec is None:
            raise CliError(f"task {task_id} is unknown or its result expired", code=EXIT_FAILED)
        if rec.state.value in FINAL_STATES:
            return rec
        left = deadline - time.monotonic()
        if left <= 0:
            raise CliError(
                f"task {task_id} still {rec.state.value} after {timeout:g}s "
                "(is a worker serving its queue? wait longer with --wait)",
                code=EXIT_FAILED,
            )
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.25)


def _print_outcome(rec: TaskRecord, as_json: bool) -> None:
    state = rec.state.value
    error = rec.error.to_dict() if rec.error else None
    if as_json:
        print_json(
            {
                "id": rec.id,
                "state": state,
                "result": rec.result,
                "error": error,
                "dead_reason": rec.dead_reason,
            }
        )
    elif state == "SUCCESS":
        write_line(to_json(rec.result, compact=True))
    if state != "SUCCESS":
        if rec.error is not None:
            why = f"{rec.error.type}: {rec.error.message}"
        else:
            why = rec.dead_reason or state.lower()
        raise fail(f"task {rec.id} {state.lower()}: {why}", EXIT_FAILED)


#: The ``dtq enqueue`` command.
app = command_app(enqueue)
