"""``dtq cron``: list schedules, show next fire times, explain an expression."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cli._common import JsonOpt, make_group, open_console, run_alone, want_json
from cli._errors import CliError
from cli._output import (
    Column,
    FieldsBlock,
    TableBlock,
    fmt_time,
    is_tty,
    print_blocks,
    print_json,
    print_table,
    state_style,
    write_line,
)

if TYPE_CHECKING:
    from dtq_core.scheduling.cron import CronExpression

app = make_group("cron", "Cron schedules: list (the default), check and explain.")

ExprArg = Annotated[
    list[str],
    typer.Argument(
        metavar="EXPR",
        help="A cron expression, quoted: '*/15 9-17 * * mon-fri' (five fields, or six "
        "with seconds first; @daily and friends).",
        show_default=False,
    ),
]
TzOpt = Annotated[
    str | None,
    typer.Option("--tz", metavar="ZONE", help="Time zone, e.g. Europe/Berlin [default: UTC]."),
]


def _expression(words: list[str], tz: str | None) -> CronExpression:
    from dtq_core.scheduling.cron import CronExpression

    return CronExpression(" ".join(words), tz)


def _after(text: str | None, expr: CronExpression) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"bad --after {text!r}: use ISO 8601, e.g. 2030-01-01T09:00 or 2030-01-01T09:00+02:00"
        ) from None
    # A time without a zone is read on the expression's wall clock.
    return when if when.tzinfo is not None else when.replace(tzinfo=expr.tz)


@app.command("list")
def list_schedules(json_out: JsonOpt = False) -> None:
    """The cron schedules the workers run, with their next and last fire."""
    with open_console() as console:
        schedules = console.snapshot().schedules
    if want_json(json_out):
        print_json([dataclasses.asdict(s) for s in schedules])
        return
    print_table(
        ["name", "task", "expr", "when", "next run", "last fire",
         Column("last state", style=state_style), "paused", Column("fired", justify="right")],
        [
            [s.name, s.task, s.expr, s.description, fmt_time(s.next_runs[0]) if s.next_runs
             else "-", fmt_time(s.last_fire), s.last_state or "", "paused" if s.paused else "",
             s.fired]
            for s in schedules
        ],
        empty="no cron schedules",
    )  # fmt: skip


run_alone(app, list_schedules)


@app.command("next")
def next_runs(
    expr: ExprArg,
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, max=10_000, help="How many fire times.")
    ] = 5,
    after: Annotated[
        str | None,
        typer.Option("--after", metavar="ISO", help="Start after this time [default: now]."),
    ] = None,
    tz: TzOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The next fire times of EXPR (also the way to check an expression)."""
    cron = _expression(expr, tz)
    start = _after(after, cron)
    times = cron.next_n(start, count)
    if want_json(json_out):
        print_json(
            {
                "expr": cron.expr,
                "tz": str(cron.tz),
                "description": cron.describe(),
                "after": start.isoformat(),
                "next": [t.isoformat() for t in times],
            }
        )
        return
    if is_tty():
        print_blocks(
            [
                FieldsBlock([("expression", cron.expr), ("meaning", cron.describe())]),
                TableBlock(
                    [Column("#", justify="right"), "fire time", "weekday"],
                    [[i, t.isoformat(), t.strftime("%A")] for i, t in enumerate(times, 1)],
                ),
            ]
        )
        return
    for t in times:
        write_line(t.isoformat())


@app.command("explain")
def explain(expr: ExprArg, tz: TzOpt = None, json_out: JsonOpt = False) -> None:
    """EXPR in words, with its next three fire times."""
    cron = _expression(expr, tz)
    times = cron.next_n(datetime.now(UTC), 3)
    if want_json(json_out):
        print_json(
            {
                "expr": cron.expr,
                "tz": str(cron.tz),
                "description": cron.describe(),
                "next": [t.isoformat() for t in times],
            }
        )
        return
    if not is_tty():
        write_line(cron.describe())
        return
    print_blocks(
        [
            FieldsBlock(
                [
                    ("expression", cron.expr),
                    ("meaning", cron.describe()),
                    ("zone", str(cron.tz)),
                    *((f"next #{i}", t.isoformat()) for i, t in enumerate(times, 1)),
                ]
            )
        ]
    )
