"""``dtq tui``: start the live operations console (textual is imported only here)."""

from __future__ import annotations

import inspect
import sys

import typer

from cli._common import command_app, state
from cli._errors import CliError


def tui(ctx: typer.Context) -> None:
    """Start the live console (dtq-tui).

    Extra arguments go to the console.

    The global --backend and --read-only are passed on. Use `dtq tui -- --help` for the
    console's help.
    """
    try:
        from dtq_tui.app import main as tui_main
    except ImportError as exc:
        raise CliError(f"the console is not available in this build: {exc}") from exc
    argv = ["--backend", state.backend] if state.backend else []
    if state.read_only and "--read-only" not in ctx.args:
        argv.append("--read-only")
    argv += list(ctx.args)
    if inspect.signature(tui_main).parameters:
        code = tui_main(argv)
    else:
        saved = sys.argv
        sys.argv = ["dtq-tui", *argv]
        try:
            code = tui_main()
        finally:
            sys.argv = saved
    if isinstance(code, int) and code:
        raise typer.Exit(code)


#: The ``dtq tui`` command; unknown options and extra arguments go to the console as is.
app = command_app(tui, allow_extra_args=True, ignore_unknown_options=True)
