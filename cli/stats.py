"""``dtq stats``, ``dtq health`` and ``dtq metrics``: the system's state at a glance."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli._common import JsonOpt, command_app, open_console, want_json
from cli._errors import EXIT_FAILED, CliError
from cli._output import (
    Block,
    Column,
    FieldsBlock,
    TableBlock,
    fmt_duration,
    fmt_rate,
    fmt_time,
    info,
    is_tty,
    print_blocks,
    print_json,
    print_table,
    render_plain,
    render_rich,
    rich_console,
    state_style,
    write_line,
)

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI
    from dtq_core.snapshot import Health, SystemSnapshot

#: Exit code of ``dtq health`` by status.
HEALTH_EXIT = {"ok": 0, "degraded": 1, "down": 2}

_STATE_ORDER = ("PENDING", "RUNNING", "RETRY", "SUCCESS", "FAILED", "DEAD", "CANCELLED")


def _right(header: str) -> Column:
    return Column(header, justify="right")


def stats(
    json_out: JsonOpt = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            "-w",
            min=0.1,
            metavar="SECONDS",
            help="Refresh every SECONDS until Ctrl-C (JSON: one snapshot per line).",
        ),
    ] = None,
) -> None:
    """Queues, counts, rates, latency, workers, breakers, limits.

    Counts are by state; rates per second over 1, 10 and 60 s; latency percentiles per
    queue and task. --json prints the Console API snapshot (SystemSnapshot.to_dict()),
    the data the console's dashboard shows.
    """
    as_json = want_json(json_out)
    with open_console() as console:
        if watch is None:
            snap = console.snapshot()
            if as_json:
                print_json(snap.to_dict())
            else:
                print_blocks(stats_blocks(snap))
            return
        _watch(console, watch, as_json)


def _watch(console: ConsoleAPI, every: float, as_json: bool) -> None:
    try:
        if as_json:
            while True:
                print_json(console.snapshot().to_dict(), compact=True)
                time.sleep(every)
        elif is_tty():
            from rich.live import Live

            with Live(
                render_rich(stats_blocks(console.snapshot())),
                console=rich_console(),
                refresh_per_second=4,
                auto_refresh=False,
            ) as live:
                while True:
                    time.sleep(every)
                    live.update(render_rich(stats_blocks(console.snapshot())), refresh=True)
        else:
            while True:
                sys.stdout.write(render_plain(stats_blocks(console.snapshot())) + "\n\n")
                sys.stdout.flush()
                time.sleep(every)
    except KeyboardInterrupt:
        pass


def _rates(r: Any) -> str:
    return f"{fmt_rate(r.r1)} / {fmt_rate(r.r10)} / {fmt_rate(r.r60)}"


def fmt_window(seconds: float) -> str:
    """A window length: ``30s``, ``1m``, ``10m``, ``1h``."""
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def stats_blocks(snap: SystemSnapshot) -> list[Block]:
    """The snapshot as printable blocks (also used by ``--watch``)."""
    tp = snap.throughput
    health = snap.health.status + (
        f" ({'; '.join(snap.health.reasons)})" if snap.health.reasons else ""
    )
    busy = f"{snap.workers_busy}/{len(snap.workers)}"
    blocks: list[Block] = [
        FieldsBlock(
            [
                ("backend", snap.backend),
                ("taken at", fmt_time(snap.taken_at)),
                ("uptime", fmt_duration(snap.uptime)),
                ("health", health),
                ("in flight", snap.in_flight),
                ("workers busy", busy),
                ("dead letters", snap.dead_letters),
                ("enqueued/s 1s/10s/60s", _rates(tp.enqueued)),
                ("succeeded/s", _rates(tp.succeeded)),
                ("failed/s", _rates(tp.failed)),
                ("retried/s", _rates(tp.retried)),
                ("dead/s", _rates(tp.dead)),
            ],
            title="DTQ",
        ),
        TableBlock(
            [_right(s) for s in _STATE_ORDER],
            [[snap.counts.get(s, 0) for s in _STATE_ORDER]],
            title="Tasks by state",
        ),
        TableBlock(
            ["queue", _right("ready"), _right("delayed"), _right("running"), "paused",
             _right("in/s 10s"), _right("done/s 10s"), _right("failed/s 10s")],
            [
                [q.name, q.ready, q.delayed, q.running, "paused" if q.paused else "",
                 fmt_rate(q.enqueued.r10), fmt_rate(q.succeeded.r10), fmt_rate(q.failed.r10)]
                for q in snap.queues
            ],
            title="Queues",
            empty="none",
        ),
    ]  # fmt: skip
    if snap.latency:
        blocks.append(
            TableBlock(
                ["scope", "key", "kind", _right("window"), _right("count"), _right("p50"),
                 _right("p95"), _right("p99"), _right("p99.9"), _right("max")],
                [
                    [lat.scope, lat.key, lat.kind, fmt_window(lat.window_s), lat.count,
                     fmt_duration(lat.p50), fmt_duration(lat.p95), fmt_duration(lat.p99),
                     fmt_duration(lat.p999), fmt_duration(lat.max)]
                    for lat in snap.latency
                ],
                title="Latency",
            )
        )  # fmt: skip
    if snap.processes:
        blocks.append(
            TableBlock(
                ["process", "role", "version", "pool", _right("concurrency"), _right("busy"),
                 _right("tasks/s"), _right("RSS MiB"), _right("CPU %"), _right("heartbeat")],
                [
                    [p.id, p.role, p.version, p.pool, p.concurrency, p.busy,
                     f"{p.tasks_per_s:.1f}", f"{p.rss_bytes / 2**20:.0f}",
                     f"{p.cpu_percent:.0f}", fmt_duration(p.heartbeat_age) + " ago"]
                    for p in snap.processes
                ],
                title="Processes",
            )
        )  # fmt: skip
    blocks.append(
        TableBlock(
            ["worker", "pool", Column("state", style=state_style), "task", _right("running for"),
             _right("processed"), _right("failed"), _right("heartbeat")],
            [
                [w.id, w.pool, w.state, w.task_name or "", fmt_duration(w.task_runtime)
                 if w.task_runtime is not None else "", w.processed, w.failed,
                 fmt_duration(w.heartbeat_age) + " ago"]
                for w in snap.workers
            ],
            title="Workers",
            empty="none",
        )
    )  # fmt: skip
    if snap.breakers:
        blocks.append(
            TableBlock(
                ["breaker", Column("state", style=state_style), _right("failures"),
                 _right("threshold"), _right("held"), "next probe", "manual"],
                [
                    [b.key, b.state, b.failures, b.threshold, b.held, fmt_time(b.next_probe_at)
                     if b.next_probe_at else "", "yes" if b.manual else ""]
                    for b in snap.breakers
                ],
                title="Circuit breakers",
            )
        )  # fmt: skip
    if snap.limits:
        blocks.append(
            TableBlock(
                ["scope", "key", _right("rate/s"), _right("burst"), _right("tokens"),
                 _right("throttled")],
                [[lim.scope, lim.key, f"{lim.rate:g}", lim.burst, f"{lim.tokens:.1f}",
                  lim.throttled] for lim in snap.limits],
                title="Rate limits",
            )
        )  # fmt: skip
    if snap.dedup is not None:
        d = snap.dedup
        blocks.append(
            FieldsBlock(
                [
                    ("keys", f"{d.keys}/{d.capacity}"),
                    ("fill", f"{d.fill_ratio:.1%}"),
                    ("false positives", f"~{d.est_fp_rate:.2%}"),
                    ("dropped", d.dropped),
                ],
                title="Deduplication",
            )
        )
    if snap.alerts:
        blocks.append(FieldsBlock([("alert", a) for a in snap.alerts], title="Alerts"))
    return blocks


def current_health(console: ConsoleAPI) -> Health:
    """The Console API's health (``down`` when the backend is unreachable)."""
    return console.health()


def health(json_out: JsonOpt = False) -> None:
    """Exit 0 when ok, 1 when degraded, 2 when down.

    Prints the status and the reasons.
    """
    with open_console() as console:
        h = current_health(console)
    code = HEALTH_EXIT.get(h.status, 2)
    if want_json(json_out):
        print_json({"status": h.status, "reasons": list(h.reasons)})
    else:
        write_line(h.status + (": " + "; ".join(h.reasons) if h.reasons else ""))
    raise typer.Exit(code)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[dict[str, Any]]:
    """Samples of a Prometheus text exposition as ``{name, labels, value}`` dicts."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.append({"name": m.group(1), "labels": labels, "value": value})
    return out


def metrics(
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="The Prometheus text exposition format.")
    ] = False,
    serve: Annotated[
        str | None,
        typer.Option(
            "--serve",
            metavar="HOST:PORT",
            help="Serve the Prometheus text at http://HOST:PORT/metrics until Ctrl-C, "
            "rendered anew on each scrape (e.g. 0.0.0.0:9808, or :9808).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The metrics, or the Prometheus text format.

    A table on a terminal; --json gives the samples as {name, labels, value}; --serve
    makes this command a scrape endpoint of the whole system.
    """
    if serve is not None:
        _serve(parse_address(serve))
        return
    with open_console() as console:
        text = console.metrics_text()
    if prometheus:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    samples = parse_prometheus(text)
    if want_json(json_out):
        print_json(samples)
        return
    print_table(
        ["metric", "labels", Column("value", justify="right")],
        [
            [
                s["name"],
                ",".join(f"{k}={v}" for k, v in s["labels"].items()),
                f"{s['value']:g}",
            ]
            for s in samples
        ],
        empty="no metrics yet",
    )


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means every interface; ``[::1]:PORT`` for IPv6).

    Raises:
        CliError: Not a host and a port from 0 to 65535.
    """
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise CliError(f"--serve {text!r}: expected HOST:PORT, e.g. 0.0.0.0:9808 or :9808")
    return host, int(port)


def _serve(address: tuple[str, int]) -> None:
    from dtq_core.monitoring.prometheus import serve

    host, port = address
    with open_console() as console:
        try:
            server = serve(console.metrics_text, host, port)
        except OSError as exc:
            raise CliError(
                f"--serve {host}:{port}: cannot listen there ({exc.strerror or exc}); "
                "pick a free port or another address",
                code=EXIT_FAILED,
            ) from None
        bound_port = server.server_address[1]
        info(f"dtq metrics: serving http://{host}:{bound_port}/metrics (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()


#: The ``dtq stats`` command.
app = command_app(stats)
#: The ``dtq health`` command.
health_app = command_app(health)
#: The ``dtq metrics`` command.
metrics_app = command_app(metrics)
