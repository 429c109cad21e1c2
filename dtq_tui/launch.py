"""``dtq-tui`` arguments: attach to a backend or start the demo, then run the app."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dtq_core.errors import ConfigError, DTQError
from dtq_tui.connection import ReconnectingConsole


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="dtq-tui",
        description="DTQ's live operations console.",
        epilog="Keys: ? help, : jump to a screen, ctrl+p command palette, q quit.",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run an in-process engine with a built-in workload (nothing to set up; "
        "overrides --backend)",
    )
    p.add_argument(
        "--backend",
        metavar="URL",
        default=None,
        help="attach to embedded://PATH or redis://... (default: $DTQ_BACKEND, else the "
        "engine's default directory if it exists)",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="disable every action that changes state (replay, purge, cancel, pause...)",
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=0.33,
        metavar="SECONDS",
        help="seconds between refreshes (default 0.33)",
    )
    p.add_argument("--seed", type=int, default=None, metavar="N", help="demo workload seed")
    p.add_argument(
        "--screen",
        default="overview",
        metavar="NAME",
        help="screen to open first: overview, latency, tasks, dead, workflows, schedules, "
        "limits, workers",
    )
    return p


def run(argv: list[str] | None = None, *, headless: bool = False) -> int:
    """Parse, connect, run the app; return the exit status.

    A crash inside the app exits with status 1 (Textual restores the terminal first and
    then prints the traceback), so scripts and supervisors see the failure.
    """
    args = parser().parse_args(argv)
    from dtq_tui.screens import resolve

    if resolve(args.screen) is None:
        print(f"dtq-tui: no screen {args.screen!r}", file=sys.stderr)
        return 2
    if args.refresh <= 0:
        print("dtq-tui: --refresh must be above 0 seconds", file=sys.stderr)
        return 2
    demo: Any = None
    if args.demo:
        from dtq_tui.demo import Demo

        try:
            demo = Demo(seed=args.seed).start()
        except DTQError as exc:
            print(f"dtq-tui: the demo could not start: {exc}", file=sys.stderr)
            return 1
        console: Any = demo.console
    else:
        url = args.backend or _default_url()
        if not url:
            print(
                "dtq-tui: no backend: pass --backend URL (embedded://PATH, redis://...), "
                "set DTQ_BACKEND, or try --demo",
                file=sys.stderr,
            )
            return 2
        if url.startswith("memory://"):
            print(
                "dtq-tui: memory:// lives inside one process and cannot be attached to; "
                "use --demo, embedded://PATH or redis://...",
                file=sys.stderr,
            )
            return 2
        try:
            console = _connect(url, args.read_only)
        except ConfigError as exc:
            print(f"dtq-tui: {exc}", file=sys.stderr)
            return 2
    from dtq_tui.app import DTQApp

    app = DTQApp(console, read_only=args.read_only, refresh_s=args.refresh, screen=args.screen)
    try:
        app.run(headless=headless)
    finally:
        if demo is not None:
            demo.stop()
    code = app.return_code or 0
    if code:
        print(
            f"dtq-tui: the console stopped on an error (exit status {code}); "
            "the traceback is above - please report it",
            file=sys.stderr,
        )
    return code


def _default_url() -> str | None:
    """``$DTQ_BACKEND``, else the engine's default store if it exists here.

    A console only looks: it does not create an empty store by being started.
    """
    from dtq_core.config import DEFAULT_BACKEND

    env = os.environ.get("DTQ_BACKEND")
    if env:
        return env
    prefix = "embedded://"
    if DEFAULT_BACKEND.startswith(prefix) and os.path.isdir(DEFAULT_BACKEND[len(prefix) :]):
        return DEFAULT_BACKEND
    return None


def _connect(url: str, read_only: bool = False) -> Any:
    """A console for ``url``; an unreachable backend gives a reconnecting console.

    Raises:
        ConfigError: A malformed URL (reported before the app starts).
    """
    from dtq_core.control import connect

    try:
        return connect(url, read_only=read_only)
    except ConfigError:
        raise
    except Exception as exc:  # unreachable now: the app shows a banner and retries
        return ReconnectingConsole(
            url, exc, lambda u: connect(u, read_only=read_only), read_only=read_only
        )
