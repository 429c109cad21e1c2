"""The ``dtq`` command: composes the command groups; no command body lives here.

Each entry names the module whose Typer app serves the command and the one-line help of
``dtq --help``. Modules load on use (see :mod:`cli._group`), which keeps start-up fast.
"""

from __future__ import annotations

import typer

from cli._common import root
from cli._group import root_group

#: ``command -> ("module:Typer app", short help)``, in the order ``dtq --help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "worker": ("cli.worker:app", "Run workers for an app module until SIGTERM or SIGINT."),
    "enqueue": ("cli.enqueue:app", "Enqueue a task by name; print its id or its result."),
    "stats": ("cli.stats:app", "Queues, counts, rates, latency, workers, breakers, limits."),
    "health": ("cli.stats:health_app", "Exit 0 when ok, 1 when degraded, 2 when down."),
    "metrics": ("cli.stats:metrics_app", "The metrics, or the Prometheus text format."),
    "tasks": ("cli.tasks:app", "List (the default), show and cancel tasks."),
    "dlq": ("cli.dlq:app", "Dead letters: list (the default), show, replay and purge."),
    "queues": ("cli.queues:app", "List queues (the default); pause and resume consumption."),
    "cron": ("cli.cron:app", "Cron schedules: list (the default), check and explain."),
    "dag": ("cli.dag:app", "DAG workflows: validate a file, start a run, show a run."),
    "wal": ("cli.wal:app", "The embedded store's log: verify, repair, inspect, compact, upgrade."),
    "tui": ("cli.tui:app", "Start the live console (dtq-tui)."),
}

app = typer.Typer(
    name="dtq",
    cls=root_group(COMMANDS),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.callback()(root)


def main() -> None:
    """Entry point of the ``dtq`` script."""
    app(prog_name="dtq")


if __name__ == "__main__":
    main()
