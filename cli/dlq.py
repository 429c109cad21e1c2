"""``dtq dlq``: list, show, replay and purge dead letters.

Targets of ``replay`` and ``purge`` are task ids, ``--all``, or filter terms in the one
filter language (``task:NAME queue:NAME exc:TYPE since:1h text:WORDS``): as soon as one
word holds a ``:`` the words are a filter, otherwise they are ids.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import _complete
from cli._common import (
    AllOpt,
    ArgsOpt,
    DryRunOpt,
    FilterArgs,
    JsonOpt,
    KwargsOpt,
    LimitOpt,
    YesOpt,
    make_group,
    open_console,
    resolve_id,
    run_alone,
    want_json,
)
from cli._errors import CliError
from cli._input import filter_text, parse_json, split_targets
from cli._output import (
    Column,
    confirm,
    fmt_time,
    fmt_value,
    info,
    print_blocks,
    print_json,
    print_table,
    progress,
)
from cli.tasks import RECORD_COLUMNS, record_blocks, record_row

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI
    from dtq_core.reliability.deadletter import ReplayPlan

app = make_group("dlq", "Dead letters: list (the default), show, replay and purge.")

#: Ids sent to the Console API per bulk call (the progress bar advances per chunk).
CHUNK = 100
_PAGE = 1000

TargetArgs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="TARGET",
        help="Dead task ids (or unique prefixes), or filter terms (task:NAME queue:NAME "
        "exc:TYPE since:1h id:PREFIX reason:TEXT text:WORDS); a word with a ':' makes them "
        "all filter terms.",
        show_default=False,
        autocompletion=_complete.dead_targets,
    ),
]
AgainOpt = Annotated[
    bool,
    typer.Option(
        "--again",
        help="Also replay dead tasks that were replayed before (they are skipped otherwise).",
    ),
]
OptLimit = Annotated[
    int | None, typer.Option("--limit", "-n", min=1, help="At most this many (oldest first).")
]


class GroupBy(StrEnum):
    """What ``dtq dlq list --group-by`` groups on."""

    cause = "cause"


@app.command("list")
def list_dead(
    filters: FilterArgs = None,
    group_by: Annotated[
        GroupBy | None,
        typer.Option("--group-by", help="Group dead tasks by cause (task, exception, message)."),
    ] = None,
    limit: LimitOpt = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Dead tasks matching the filter terms, newest first (or grouped by cause)."""
    flt = filter_text(list(filters or []))
    as_json = want_json(json_out)
    with open_console() as console:
        if group_by is not None:
            groups = console.dead_groups(flt)
            if as_json:
                print_json([g.to_dict() for g in groups])
                return
            print_table(
                [Column("count", justify="right"), "task", "exception", "message", "first",
                 "last", "reasons", Column("replayed", justify="right")],
                [
                    [g.count, g.task, g.exc_type, fmt_value(g.message, 60),
                     fmt_time(g.first_seen), fmt_time(g.last_seen), ", ".join(g.reasons),
                     g.replayed or ""]
                    for g in groups
                ],
                empty="no dead tasks match",
            )  # fmt: skip
            return
        recs = console.dead_letters(flt, offset=offset, limit=limit)
    if as_json:
        print_json([r.to_dict() for r in recs])
        return
    print_table(
        [*RECORD_COLUMNS, "replayed as"],
        [[*record_row(r), ", ".join(r.replayed_to)] for r in recs],
        empty="no dead tasks match",
    )


run_alone(app, list_dead)


@app.command("show")
def show(
    task_id: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="A dead task's id, or a unique prefix of one.",
            autocompletion=_complete.dead_targets,
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """One dead task: arguments, attempts, error and traceback, edits."""
    with open_console() as console:
        task_id = resolve_id(console, task_id, "dtq dlq list")
        rec = console.task(task_id)
    if rec is None:
        raise CliError(f"no dead task {task_id!r} (list them with `dtq dlq list`)")
    if rec.state.value != "DEAD":
        raise CliError(
            f"task {task_id} is {rec.state.value}, not dead (see `dtq tasks show {task_id}`)"
        )
    if want_json(json_out):
        print_json(rec.to_dict())
        return
    print_blocks(record_blocks(rec, f"Dead task {rec.id}"))


def resolve_targets(
    console: ConsoleAPI,
    targets: list[str] | None,
    all_: bool,
    limit: int | None,
    verb: str,
    fresh_only: bool = False,
    left_out: list[str] | None = None,
) -> list[str]:
    """The dead task ids named by ids, a filter or ``--all`` (oldest first, capped).

    With ``fresh_only``, a filter or ``--all`` leaves out dead tasks replayed before
    (before the limit is applied), as the engine's ``replay_matching`` does; their ids
    are appended to ``left_out``.

    Raises:
        CliError: Nothing or several kinds of target given, or an id that is not dead.
    """
    ids, terms = split_targets(targets)
    if all_ and (ids or terms):
        raise CliError(f"give ids, filter terms or --all to {verb}, not several")
    if not (all_ or ids or terms):
        raise CliError(
            f"name what to {verb}: dead task ids, filter terms "
            "(e.g. task:send_email exc:TimeoutError since:1h) or --all"
        )
    if ids:
        ids = [resolve_id(console, i, "dtq dlq list") for i in ids]
        for task_id in ids:
            rec = console.task(task_id)
            if rec is None or rec.state.value != "DEAD":
                found = "no such task" if rec is None else f"it is {rec.state.value}"
                raise CliError(
                    f"{task_id!r} is not a dead task ({found}); list them with `dtq dlq list`"
                )
        return ids[:limit] if limit else ids
    flt = filter_text(terms)
    found_ids: list[str] = []
    offset = 0
    while True:
        page = console.dead_letters(flt, offset=offset, limit=_PAGE)
        for r in page:
            if fresh_only and r.replayed_to:
                if left_out is not None:
                    left_out.append(r.id)
            else:
                found_ids.append(r.id)
        if len(page) < _PAGE:
            break
        offset += _PAGE
    found_ids.reverse()  # oldest first
    return found_ids[:limit] if limit else found_ids


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


@app.command("replay")
def replay(
    targets: TargetArgs = None,
    all_: AllOpt = False,
    args: ArgsOpt = None,
    kwargs: KwargsOpt = None,
    note: Annotated[str, typer.Option("--note", help="Why (recorded with an edit).")] = "",
    dry_run: DryRunOpt = False,
    limit: OptLimit = None,
    again: AgainOpt = False,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Enqueue dead tasks again as new tasks, optionally with new args/kwargs.

    A dead task is replayed once: one replayed before is skipped unless --again (or
    new --args/--kwargs) is given, so running the same replay twice enqueues nothing twice.

    Examples:
      dtq dlq replay ID                             one task (a unique id prefix will do)
      dtq dlq replay task:send_email exc:Timeout --dry-run
      dtq dlq replay ID --args '[1, 2]' --note 'fixed input'
      dtq dlq replay ID --again                      replay it a second time
    """
    new_args = parse_json(args, "--args", list, "[1, 2]")
    new_kwargs = parse_json(kwargs, "--kwargs", dict, '{"x": 1}')
    as_json = want_json(json_out)
    with open_console() as console:
        left_out: list[str] = []
        ids = resolve_targets(
            console, targets, all_, limit, "replay", fresh_only=not again, left_out=left_out
        )
        if left_out:
            info(
                f"left out {len(left_out)} matching dead task(s) replayed before "
                "(pass --again to include them)"
            )
        planned: list[ReplayPlan] = []
        for chunk in _chunks(ids):
            planned += console.replay(chunk, new_args, new_kwargs, note, dry_run=True, again=again)
        skipped = [p for p in planned if p.skipped]
        if dry_run or not ids:
            _print_plans(planned, as_json, dry_run=True)
            return
        todo = [p.dead_id for p in planned if not p.skipped]
        if not todo:
            _print_plans(planned, as_json, dry_run=False)
            raise CliError(
                f"{_already(skipped)}; nothing replayed (pass --again to replay "
                f"{'it' if len(skipped) == 1 else 'them'} again)"
            )
        confirm(
            f"Replay {len(todo)} dead task(s)?", yes=yes, action=f"replay {len(todo)} dead task(s)"
        )
        done: list[ReplayPlan] = []
        try:
            with progress(len(todo), "replaying") as bar:
                for chunk in _chunks(todo):
                    done += console.replay(
                        chunk, new_args, new_kwargs, note, dry_run=False, again=again
                    )
                    bar.advance(len(chunk))
        except Exception:
            if done:
                info(f"replayed {len(done)} of {len(todo)} before the error")
            raise
    _print_plans(done + skipped, as_json, dry_run=False)


def _already(plans: list[ReplayPlan]) -> str:
    """``ID was already replayed as NEW`` / ``3 dead tasks were already replayed``."""
    if len(plans) == 1:
        p = plans[0]
        return f"{p.dead_id} was already replayed as {', '.join(p.replayed_to)}"
    return f"{len(plans)} dead tasks were already replayed"


def _print_plans(plans: list[ReplayPlan], as_json: bool, dry_run: bool) -> None:
    skipped = [p for p in plans if p.skipped]
    plans = [p for p in plans if not p.skipped]
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "count": len(plans),
                "plans": [p.to_dict() for p in plans],
                "skipped": [p.to_dict() for p in skipped],
            }
        )
        return
    if not plans and not skipped:
        info("no dead tasks match; nothing to replay")
        return
    if dry_run and plans:
        print_table(
            ["dead id", "task", "queue", "args", "kwargs", "edited", "replayed before"],
            [
                [p.dead_id, p.name, p.queue, fmt_value(p.args, 40), fmt_value(p.kwargs, 40),
                 "yes" if p.edited else "", ", ".join(p.replayed_to)]
                for p in plans
            ],
        )  # fmt: skip
    elif plans:
        print_table(
            ["dead id", "new id", "task", "queue", "edited"],
            [[p.dead_id, p.new_id, p.name, p.queue, "yes" if p.edited else ""] for p in plans],
        )
    if skipped:
        info(f"skipped: {_already(skipped)} (pass --again to replay them again)")
    if dry_run:
        info(f"dry run: would replay {len(plans)} dead task(s); nothing changed")
    elif plans:
        info(f"replayed {len(plans)} dead task(s)")


@app.command("purge")
def purge(
    targets: TargetArgs = None,
    all_: AllOpt = False,
    dry_run: DryRunOpt = False,
    limit: OptLimit = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete dead tasks for good (ids, filter terms or --all)."""
    as_json = want_json(json_out)
    with open_console() as console:
        ids = resolve_targets(console, targets, all_, limit, "purge")
        if dry_run or not ids:
            recs: list[Any] = [r for r in (console.task(i) for i in ids) if r is not None]
            if as_json:
                print_json({"dry_run": True, "count": len(ids), "ids": ids})
            elif not ids:
                info("no dead tasks match; nothing to purge")
            else:
                print_table(RECORD_COLUMNS, [record_row(r) for r in recs])
                info(f"dry run: would purge {len(ids)} dead task(s); nothing changed")
            return
        confirm(
            f"Delete {len(ids)} dead task(s) for good?",
            yes=yes,
            action=f"purge {len(ids)} dead task(s)",
        )
        purged = 0
        try:
            with progress(len(ids), "purging") as bar:
                for chunk in _chunks(ids):
                    purged += console.purge(chunk)
                    bar.advance(len(chunk))
        except Exception:
            if purged:
                info(f"purged {purged} of {len(ids)} before the error")
            raise
    if as_json:
        print_json({"dry_run": False, "count": purged, "ids": ids})
    else:
        sys.stdout.write(f"purged {purged} dead task(s)\n")
