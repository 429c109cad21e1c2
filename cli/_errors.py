"""The one error handler: engine exceptions become one clear line and an exit code.

Exit codes (stable, scripts rely on them):

====  ==============================================================================
0     success
1     the operation failed (a task failed with ``--wait``, a cancel was refused...)
2     usage or input error (bad JSON, unknown task or id, bad cron field, cyclic DAG)
3     the backend cannot be reached (:class:`dtq_core.errors.BackendUnavailable`)
====  ==============================================================================

``-v`` adds the traceback after the line. ``dtq_core.errors`` is only imported when an
exception already came from the engine, so this module costs nothing at start-up.
"""

from __future__ import annotations

import sys
import traceback

import typer

#: The command did what it was asked.
EXIT_OK = 0
#: The operation was carried out and failed, or was refused.
EXIT_FAILED = 1
#: The command line or an input value is wrong; nothing was done.
EXIT_USAGE = 2
#: The backend could not be reached.
EXIT_UNAVAILABLE = 3

#: Engine error class name -> (exit code, advice appended to the message).
_ENGINE_ERRORS: tuple[tuple[str, int, str], ...] = (
    ("BackendUnavailable", EXIT_UNAVAILABLE, ""),
    ("StoreCorrupted", EXIT_FAILED, "run `dtq wal verify PATH`, then `dtq wal repair PATH`"),
    ("StoreFailed", EXIT_FAILED, "the store stopped after an I/O error; restart its owner"),
    ("TaskNotRegistered", EXIT_USAGE, "check the name, or start a worker that registers it"),
    ("TaskNotFound", EXIT_USAGE, "list ids with `dtq tasks list` or `dtq dlq list`"),
    ("CronError", EXIT_USAGE, ""),
    ("DAGError", EXIT_USAGE, ""),
    ("SerializationError", EXIT_USAGE, "arguments must be JSON values"),
    ("ConfigError", EXIT_USAGE, ""),
    ("ReadOnlyError", EXIT_FAILED, "this session is read-only: drop --read-only to change it"),
    ("TaskFailed", EXIT_FAILED, ""),
    ("DTQError", EXIT_FAILED, ""),
)

#: Why a backend is unreachable (a phrase of the engine's message) -> how to fix that.
#: First match wins; a message that already says what to do gets no advice.
_UNAVAILABLE_ADVICE: tuple[tuple[str, str], ...] = (
    ("owned by process", ""),
    ("in use by process", ""),
    ("no embedded store at", ""),
    ("refused the credentials", ""),
    ("redis at", "is the Redis server up, and does --backend / DTQ_BACKEND name it?"),
    (
        "embedded owner",
        "start `dtq worker APP_MODULE --backend embedded://DIR` for that directory first",
    ),
    ("", "check --backend / DTQ_BACKEND and that the broker or server is running"),
)


def _advice(name: str, default: str, text: str) -> str:
    """The "how to fix" that fits this error's own cause."""
    if name != "BackendUnavailable":
        return default
    return next(advice for phrase, advice in _UNAVAILABLE_ADVICE if phrase in text)


class CliError(Exception):
    """An error the CLI reports as one line with an exit code.

    Args:
        message: What is wrong and how to fix it, in one line.
        code: The exit code (:data:`EXIT_USAGE` by default).
    """

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def verbosity() -> int:
    """The ``-v`` count of the running command (0 when none or ``-q``)."""
    from cli._common import state

    return state.verbose


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``exc``."""
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    engine = sys.modules.get("dtq_core.errors")
    if engine is not None:
        for name, code, advice in _ENGINE_ERRORS:
            cls = getattr(engine, name, None)
            if cls is not None and isinstance(exc, cls):
                text = _first_line(exc)
                fix = _advice(name, advice, text)
                return (f"{text} ({fix})" if fix else text), code
    if isinstance(exc, TimeoutError):
        return _first_line(exc), EXIT_FAILED
    return (
        f"internal error: {type(exc).__name__}: {_first_line(exc)} (run with -v for the traceback)",
        EXIT_FAILED,
    )


def _first_line(exc: BaseException) -> str:
    from dtq_core.redact import redact_text

    # Whatever raised it, a URL in the message is shown with its password masked.
    text = redact_text(str(exc).strip()) or type(exc).__name__
    return text.splitlines()[0]


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (plus its traceback at ``-v``); return the code."""
    from dtq_core.text import escape_controls

    message, code = describe(exc)
    if verbosity() > 0:
        tb = "".join(traceback.format_exception(exc))
        sys.stderr.write(escape_controls(tb, multiline=True))
    sys.stderr.write(f"dtq: error: {escape_controls(message)}\n")
    sys.stderr.flush()
    return code


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``message`` as an error line and return the :class:`typer.Exit` to raise.

    Messages quote data (names, ids, server replies): control characters are escaped.
    """
    from dtq_core.text import escape_controls

    sys.stderr.write(f"dtq: error: {escape_controls(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)
