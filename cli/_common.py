"""Shared pieces of every command: global state, option aliases, the group factory.

Options read the same everywhere because every command takes them from here. Nothing
in this module imports ``dtq_core`` or ``rich`` at import time: ``dtq --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._errors import CliError

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI

#: The help line of the filter language, shown by every command that takes filters.
FILTER_HELP = (
    "Filter terms: task:NAME queue:NAME exc:TYPE state:STATE since:1h id:PREFIX "
    "reason:TEXT text:WORDS (bare words are text)."
)


@dataclass(slots=True)
class State:
    """Global options of the running command (set by :func:`root`)."""

    backend: str | None = None
    verbose: int = 0
    quiet: bool = False
    json: bool = False
    app: str | None = None
    connect_timeout: float = 3.0
    read_only: bool = False


#: The global options of the command being run (reset on every invocation).
state = State()


# -- option aliases --------------------------------------------------------------------


def _note_json(value: bool) -> bool:
    # A command's own --json counts for the whole run: nothing but JSON is printed.
    if value:
        state.json = True
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print JSON (shapes documented in cli/README.md).", callback=_note_json
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done and change nothing.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead task.")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")]
FilterArgs = Annotated[
    list[str] | None, typer.Argument(help=FILTER_HELP, show_default=False, metavar="FILTER")
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        envvar="DTQ_BACKEND",
        metavar="URL",
        help="Backend URL: memory://, embedded://PATH, redis://HOST:PORT/DB or "
        "redis+cluster://HOST:PORT [env: DTQ_BACKEND; default: the engine's default].",
        show_envvar=False,
        show_default=False,
    ),
]
ArgsOpt = Annotated[
    str | None,
    typer.Option("--args", metavar="JSON", help="Positional arguments as a JSON array."),
]
KwargsOpt = Annotated[
    str | None,
    typer.Option("--kwargs", metavar="JSON", help="Keyword arguments as a JSON object."),
]


#: Context settings of every command.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def make_group(name: str, help: str) -> typer.Typer:
    """A command group; every group is built the same way."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        context_settings=CONTEXT,
    )


def run_alone(group: typer.Typer, command: Any) -> None:
    """Make ``dtq GROUP`` alone run ``command`` with its defaults (``dtq tasks`` lists)."""

    def default(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            command()

    group.callback(invoke_without_command=True, no_args_is_help=False)(default)


def command_app(fn: Any, **context: Any) -> typer.Typer:
    """A Typer app serving the one command ``fn`` (extra context settings allowed)."""
    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    app.command(context_settings={**CONTEXT, **context})(fn)
    return app


# -- the root callback -------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("dtq")
        except PackageNotFoundError:  # a source checkout that is not installed
            v = "unknown"
        typer.echo(f"dtq {v}")
        raise typer.Exit(0)


VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="More output: -v tracebacks and events, -vv debug.",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only results and errors; no progress.")
]
GlobalJsonOpt = Annotated[bool, typer.Option("--json", help="JSON output for every command.")]
AppOpt = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="DTQ_APP",
        metavar="MODULE[:ATTR]",
        show_envvar=False,
        help="Import this module first (it registers tasks); if it has a Broker named "
        "`broker` (or ATTR), talk to that broker in this process [env: DTQ_APP].",
    ),
]
ConnectTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        envvar="DTQ_CONNECT_TIMEOUT",
        min=0.1,
        metavar="SECONDS",
        show_envvar=False,
        help="Give up reaching the backend after this long (exit 3) "
        "[env: DTQ_CONNECT_TIMEOUT; default: 3].",
        show_default=False,
    ),
]
ReadOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--read-only",
        envvar="DTQ_READ_ONLY",
        show_envvar=False,
        help="Change nothing: every command that would (replay, purge, cancel, enqueue, "
        "pause...) is refused by the engine [env: DTQ_READ_ONLY].",
    ),
]

#: Parameter names of the global options: the root takes them, and :mod:`cli._group`
#: gives every command and group a copy, so they work before or after the command.
GLOBAL_OPTIONS = ("backend", "app", "json_", "verbose", "quiet", "connect_timeout", "read_only")


def root(
    backend: BackendOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    json_: GlobalJsonOpt = False,
    app: AppOpt = None,
    connect_timeout: ConnectTimeoutOpt = 3.0,
    read_only: ReadOnlyOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """DTQ: run workers, enqueue tasks, inspect and repair queues from scripts.

    Global options work before or after the command: dtq stats --backend URL.

    Exit codes: 0 success, 1 the operation failed, 2 usage or input error,
    3 backend unreachable.
    """
    state.backend = backend
    state.verbose = 0
    state.quiet = False
    state.json = json_
    state.app = app
    state.connect_timeout = connect_timeout
    state.read_only = read_only
    set_global("verbose", verbose)
    set_global("quiet", quiet)


def set_global(name: str, value: Any) -> None:
    """Apply one global option given on the command line (before or after the command).

    ``-v`` counts add up wherever they are written; ``-q`` wins over any ``-v``.
    """
    if name == "verbose":
        if not state.quiet:
            state.verbose += int(value)
            if state.verbose >= 2:
                import logging

                from dtq_core.text import SafeFormatter

                root = logging.getLogger()
                if not root.handlers:
                    handler = logging.StreamHandler()
                    handler.setFormatter(SafeFormatter("%(asctime)s %(name)s %(message)s"))
                    root.addHandler(handler)
                root.setLevel(logging.DEBUG)
    elif name == "quiet":
        if value:
            state.quiet = True
            state.verbose = 0
    elif name == "json_":
        state.json = state.json or bool(value)
    elif name in ("backend", "app", "connect_timeout"):
        setattr(state, name, value)
    elif name == "read_only":
        state.read_only = state.read_only or bool(value)
    else:  # pragma: no cover - GLOBAL_OPTIONS and this function change together
        raise KeyError(name)


def want_json(flag: bool) -> bool:
    """Whether a command prints JSON (its own ``--json`` or the global one)."""
    return flag or state.json


# -- the Console API ----------------------------------------------------------------------


def connect(url: str | None) -> ConsoleAPI:
    """Open the Console API at ``url`` within ``--connect-timeout`` (tests replace this)."""
    from dtq_core.control import connect as open_console

    with connecting(url):
        return open_console(url, connect_timeout=state.connect_timeout, read_only=state.read_only)


#: Seconds a connection may take before a terminal is told what it waits for.
SAY_CONNECTING_AFTER = 0.5


@contextmanager
def connecting(url: str | None) -> Iterator[None]:
    """Say ``connecting to URL…`` on stderr if connecting takes over half a second.

    Only on a terminal (stdout and stderr), never with ``--json`` or ``-q``; the URL is
    shown redacted.
    """
    import threading

    from cli._output import is_tty

    if state.json or state.quiet or not (is_tty(sys.stdout) and is_tty(sys.stderr)):
        yield
        return
    from dtq_core.config import default_backend_url
    from dtq_core.redact import redact_url

    shown = redact_url(url or default_backend_url())

    def say() -> None:
        sys.stderr.write(f"dtq: connecting to {shown}…\n")
        sys.stderr.flush()

    timer = threading.Timer(SAY_CONNECTING_AFTER, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


#: Candidates an ambiguous id prefix lists at most.
CANDIDATES = 10


def resolve_id(console: ConsoleAPI, text: str, listing: str = "dtq tasks list") -> str:
    """The one task id that ``text`` is, or is a unique prefix of (as git and k9s take).

    Raises:
        CliError: No task id starts with ``text``, or several do (listing them); exit 2.
    """
    text = text.strip()
    if not text:
        raise CliError(f"give a task id or a unique prefix of one (list them with `{listing}`)")
    ids = console.resolve_id(text, CANDIDATES)
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise CliError(f"no task id starts with {text!r} (list them with `{listing}`)")
    more = "or more " if len(ids) >= CANDIDATES else ""
    raise CliError(
        f"{text!r} is ambiguous: {len(ids)} {more}task ids start with it "
        f"({', '.join(ids)}); type more of the id"
    )


def import_app(spec: str) -> Any:
    """Import the user's app module ``MODULE[:ATTR]``; return ``(module, attr)``.

    The current directory is searched first, as ``python -m`` would.

    Raises:
        CliError: The module cannot be imported (naming it and the fix).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise CliError(f"bad app module {spec!r}: write MODULE or MODULE:ATTR")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f"cannot import app module {module_name!r}: {exc}; run dtq from the "
                "project directory or add it to PYTHONPATH"
            ) from exc
        raise
    return module, attr


def _app_console() -> ConsoleAPI | None:
    if not state.app:
        return None
    module, attr = import_app(state.app)
    obj = getattr(module, attr or "broker", None)
    if obj is None:
        if attr:
            raise CliError(f"app module {module.__name__!r} has no attribute {attr!r}")
        return None
    from dtq_core.broker import Broker
    from dtq_core.control import LocalConsole

    if not isinstance(obj, Broker):
        raise CliError(
            f"{module.__name__}.{attr or 'broker'} is not a Broker: point --app at a module "
            "whose `broker` is a dtq Broker, or at MODULE:ATTR"
        )
    obj.open()
    return LocalConsole(obj, read_only=state.read_only)


@contextmanager
def open_console() -> Iterator[ConsoleAPI]:
    """The Console API for this command, closed when the command ends."""
    app_console = _app_console()
    if app_console is not None:
        yield app_console
        return
    console = connect(state.backend)
    try:
        yield console
    finally:
        close_console(console)


def close_console(console: Any) -> None:
    """Release what :func:`connect` opened (its connection, or its producer-only broker).

    Every console :func:`dtq_core.control.connect` returns has ``close()``; a stand-in
    a test passes may not.
    """
    close = getattr(console, "close", None)
    if callable(close):
        close()
