"""``dtq stats``, ``dtq health``, ``dtq metrics`` and ``dtq queues``."""

from __future__ import annotations

import json

import pytest

from cli import _output, stats
from dtq_core import Broker
from dtq_core.snapshot import Health

#: Top-level keys of ``dtq stats --json`` (SystemSnapshot.to_dict()).
SNAPSHOT_KEYS = {
    "taken_at", "backend", "backend_info", "uptime", "counts", "queues", "workers",
    "in_flight", "workers_busy", "throughput", "dead_letters", "counters", "last_event",
    "latency", "breakers", "limits", "schedules", "workflows", "dedup", "health", "alerts",
    "extra",
}  # fmt: skip


def test_stats_json_is_the_snapshot(dtq, dead: list[str]) -> None:
    data = dtq.json("stats")
    assert set(data) >= SNAPSHOT_KEYS
    assert data["counts"]["DEAD"] == 3 and data["counts"]["SUCCESS"] == 1
    assert data["dead_letters"] == 3
    assert {q["name"] for q in data["queues"]} == {"default"}
    assert set(data["health"]) == {"status", "reasons"}


def test_stats_text(dtq, dead: list[str]) -> None:
    result = dtq("stats")
    assert result.exit_code == 0
    for title in ("Tasks by state", "Queues", "Workers: none", "dead letters"):
        assert title in result.stdout


def test_stats_on_a_terminal_uses_rich(dtq, dead: list[str], monkeypatch) -> None:
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: True)
    monkeypatch.setattr(stats, "is_tty", lambda stream=None: True)
    result = dtq("stats")
    assert result.exit_code == 0
    assert "━" in result.stdout


def test_stats_watch_json_streams_one_snapshot_per_line(dtq, broker, monkeypatch) -> None:
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(stats.time, "sleep", sleep)
    result = dtq("stats", "--watch", "0.5", "--json")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and calls == [0.5, 0.5, 0.5]
    assert all(set(json.loads(line)) >= SNAPSHOT_KEYS for line in lines)


def test_stats_watch_live_on_a_terminal(dtq, broker, monkeypatch) -> None:
    monkeypatch.setattr(stats, "is_tty", lambda stream=None: True)
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: True)
    n = []

    def sleep(seconds: float) -> None:
        n.append(seconds)
        if len(n) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(stats.time, "sleep", sleep)
    result = dtq("stats", "-w", "1")
    assert result.exit_code == 0
    assert "Queues" in result.stdout


@pytest.mark.parametrize(("status", "code"), [("ok", 0), ("degraded", 1), ("down", 2)])
def test_health_exit_codes(dtq, broker, monkeypatch, status: str, code: int) -> None:
    reasons = () if status == "ok" else (f"{status} because",)
    monkeypatch.setattr(stats, "current_health", lambda console: Health(status, reasons))
    result = dtq("health")
    assert result.exit_code == code
    assert result.stdout.startswith(status)
    result = dtq("health", "--json")
    assert result.exit_code == code
    assert json.loads(result.stdout) == {"status": status, "reasons": list(reasons)}


def test_health_of_the_real_console(dtq, dead: list[str]) -> None:
    result = dtq("health", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == stats.HEALTH_EXIT[data["status"]]


def test_metrics_prometheus_json_and_table(dtq, dead: list[str]) -> None:
    result = dtq("metrics", "--prometheus")
    assert result.exit_code == 0
    assert "# TYPE" in result.stdout and "dtq_" in result.stdout
    samples = dtq.json("metrics")
    assert samples and all(set(s) == {"name", "labels", "value"} for s in samples)
    assert any(s["name"] == "dtq_dead_letters" and s["value"] == 3 for s in samples)
    table = dtq("metrics").stdout
    assert table.splitlines()[0].split() == ["METRIC", "LABELS", "VALUE"]


def test_parse_prometheus() -> None:
    text = '# HELP x y\nx_total{queue="a",b="c\\"d"} 3\nplain 1.5e3\nbad line\n'
    assert stats.parse_prometheus(text) == [
        {"name": "x_total", "labels": {"queue": "a", "b": 'c\\"d'}, "value": 3.0},
        {"name": "plain", "labels": {}, "value": 1500.0},
    ]


def test_queues_list_pause_resume(dtq, broker: Broker) -> None:
    broker.send("add", [1, 1])
    broker.send("add", [1, 1], queue="mail")
    data = dtq.json("queues", "list")
    assert {q["name"] for q in data} == {"default", "mail"}
    assert {"name", "ready", "delayed", "running", "paused", "depth"} <= set(data[0])
    assert dtq("queues", "pause", "mail").stdout == "paused queue mail\n"
    paused = {q["name"]: q["paused"] for q in dtq.json("queues", "list")}
    assert paused == {"default": False, "mail": True}
    assert dtq.json("queues", "resume", "mail") == {"queue": "mail", "paused": False}
    assert not any(q["paused"] for q in dtq.json("queues", "list"))
    text = dtq("queues", "list").stdout
    assert text.splitlines()[0].split()[:2] == ["QUEUE", "READY"]


def test_global_json_flag(dtq, broker: Broker) -> None:
    result = dtq("--json", "queues", "list")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
