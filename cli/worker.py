"""``dtq worker``: run workers for an app module until SIGTERM/SIGINT."""

from __future__ import annotations

import sys
import threading
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import _complete
from cli._common import JsonOpt, command_app, import_app, state, want_json
from cli._errors import EXIT_FAILED, CliError
from cli._output import info, print_json, write_line

if TYPE_CHECKING:
    from dtq_core.broker import Broker, StopSummary
    from dtq_core.events import Event


class PoolKind(StrEnum):
    """Worker pool kinds (see ``BrokerConfig.pool``)."""

    thread = "thread"
    process = "process"
    async_ = "async"


def worker(
    app_module: Annotated[
        str | None,
        typer.Argument(
            metavar="[APP_MODULE]",
            help="The module that registers your tasks (MODULE, searched from the current "
            "directory and PYTHONPATH) [default: the global --app / DTQ_APP].",
            show_default=False,
        ),
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            metavar="Q1,Q2",
            help="Queues to serve, in strict priority order [default: every queue].",
            autocompletion=_complete.queue_lists,
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=0,
            help="Tasks run at once; 0 on embedded:// only owns and serves the store "
            "(worker processes attach to it).",
        ),
    ] = 4,
    pool: Annotated[
        PoolKind, typer.Option("--pool", "-P", help="thread, process (CPU-bound) or async.")
    ] = PoolKind.thread,
    drain_timeout: Annotated[
        float | None,
        typer.Option(
            "--drain-timeout", min=0, help="Seconds a graceful stop waits for running tasks."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            metavar="PORT",
            help="Serve Prometheus metrics of the whole system at http://0.0.0.0:PORT/metrics "
            "(0: any free port, printed in the banner).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run workers for an app module until SIGTERM or SIGINT.

    The first signal drains (running tasks finish, queued tasks stay queued); a second
    stops at once (running tasks are requeued). A summary is printed on exit; with -v
    every state change is logged on stderr, one line each.
    """
    _configure_logging()
    if app_module is None:
        if not state.app:
            raise CliError(
                "which app module registers your tasks? give it: dtq worker APP_MODULE "
                "(or set --app / DTQ_APP)"
            )
        app_module = state.app
    try:
        import_app(app_module)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(
            f"importing app module {app_module!r} failed: {type(exc).__name__}: {exc} "
            "(run with -v for the traceback)"
        ) from exc

    from dtq_core import Broker, BrokerConfig, set_default_broker
    from dtq_core.config import default_backend_url

    names = tuple(q.strip() for q in (queues or "").split(",") if q.strip()) or None
    opts: dict[str, Any] = {
        "num_workers": concurrency,
        "pool": pool.value,
        "queues": names,
        "install_signal_handlers": True,
        # A worker may own an embedded store (and takes it over when its owner dies);
        # with another worker owning it, this one attaches to its socket.
        "own": True,
    }
    if state.backend:
        opts["backend"] = state.backend
    if concurrency == 0 and not str(opts.get("backend") or default_backend_url()).startswith(
        "embedded://"
    ):
        raise CliError(
            "--concurrency 0 only owns and serves an embedded:// store; on this backend a "
            "worker needs --concurrency 1 or more"
        )
    if drain_timeout is not None:
        opts["drain_timeout"] = drain_timeout
    broker = Broker(BrokerConfig(**opts))
    set_default_broker(broker)
    summaries = _record_stops(broker)
    if state.verbose > 0:
        broker.events.subscribe(_log_event)
    broker.start()
    server = _serve_metrics(broker, metrics_port)
    tasks = ", ".join(broker.registry.names()) or "none"
    from dtq_core.redact import redact_url

    role = broker.backend.role
    info(
        f"dtq worker: {concurrency} {pool.value} worker(s) on "
        f"{', '.join(names) if names else 'every queue'} at {redact_url(broker.config.backend)}"
        + (f" ({role})" if role else "")
        + "; "
        f"tasks: {tasks}."
        + (f" Metrics: http://{_shown_host(server)}/metrics." if server is not None else "")
        + " SIGTERM/Ctrl-C drains, a second stops at once."
    )
    try:
        while not broker.wait_until_stopped(0.25):
            pass
    finally:
        if server is not None:
            server.shutdown()
    # The broker counts signals; a second one means running tasks were cut short.
    summary = _merge(summaries, forced=broker.signals_received > 1)
    if want_json(json_out):
        print_json(
            {
                "processed": summary.processed,
                "failed": summary.failed,
                "left_queued": summary.left_queued,
                "drained": summary.drained,
                "failure": None if broker.failure is None else str(broker.failure),
            }
        )
    else:
        write_line(
            f"worker stopped: processed {summary.processed}, failed {summary.failed}, "
            f"left queued {summary.left_queued}, "
            + ("drained" if summary.drained else "not drained (running tasks were requeued)")
        )
    if broker.failure is not None:
        # Exit non-zero so that a supervisor restarts the worker: the restart's recovery
        # brings back everything the store acknowledged.
        raise CliError(
            f"store failed ({broker.failure}); the worker stopped, restart it",
            EXIT_FAILED,
        )


def _serve_metrics(broker: Broker, port: int | None) -> Any:
    """Start the ``--metrics-port`` endpoint (the system's metrics, rendered per scrape)."""
    if port is None:
        return None
    from dtq_core.monitoring.prometheus import serve

    console = broker.control
    try:
        return serve(console.metrics_text, "0.0.0.0", port)
    except OSError as exc:
        broker.stop(drain_timeout=0.0)
        raise CliError(
            f"--metrics-port {port}: cannot listen there ({exc.strerror or exc}); pick a free port"
        ) from None


def _shown_host(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"


def _configure_logging() -> None:
    import logging

    from dtq_core.text import SafeFormatter

    level = logging.WARNING
    if state.verbose:
        level = logging.DEBUG if state.verbose >= 2 else logging.INFO
    root = logging.getLogger()
    if not root.handlers:
        # Log lines carry data (task names, error messages): escaped, never terminal codes.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def _record_stops(broker: Broker) -> list[StopSummary]:
    """Keep the summary of every ``stop`` (the signal handler runs it in a thread).

    A stop-gap until the engine keeps the last :class:`StopSummary` itself.
    """
    summaries: list[StopSummary] = []
    lock = threading.Lock()
    original = broker.stop

    def stop(drain_timeout: float | None = None) -> StopSummary:
        result = original(drain_timeout)
        with lock:
            summaries.append(result)
        return result

    broker.stop = stop  # type: ignore[method-assign]
    return summaries


def _merge(summaries: list[StopSummary], forced: bool) -> StopSummary:
    from dtq_core.broker import StopSummary

    if not summaries:
        return StopSummary(0, 0, 0, not forced)
    return StopSummary(
        processed=max(s.processed for s in summaries),
        failed=max(s.failed for s in summaries),
        left_queued=summaries[-1].left_queued,
        drained=all(s.drained for s in summaries) and not forced,
    )


def _log_event(ev: Event) -> None:
    from datetime import datetime

    from dtq_core.text import escape_controls

    when = datetime.fromtimestamp(ev.ts).strftime("%H:%M:%S.%f")[:-3]
    old = ev.old or "new"
    parts = [when, f"{ev.name}[{ev.task_id}]", f"{old} -> {ev.new}", f"queue={ev.queue}"]
    if ev.worker:
        parts.append(f"worker={ev.worker}")
    if ev.note:
        parts.append(ev.note)
    # One line per event whatever the data holds (a name or note with a newline or an
    # escape sequence is shown escaped).
    sys.stderr.write(escape_controls("  ".join(parts)) + "\n")
    sys.stderr.flush()


#: The ``dtq worker`` command.
app = command_app(worker)
