"""``dtq cron next|explain|list``."""

from __future__ import annotations

import pytest


def test_next_plain_lines(dtq) -> None:
    result = dtq("cron", "next", "0 9 * * mon-fri", "--after", "2030-01-04T10:00:00", "-n", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2030-01-07T09:00:00+00:00",
        "2030-01-08T09:00:00+00:00",
        "2030-01-09T09:00:00+00:00",
    ]


def test_next_json_shape_with_zone(dtq) -> None:
    data = dtq.json(
        "cron", "next", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "2030-03-30T12:00",
        "--count", "2",
    )  # fmt: skip
    assert set(data) == {"expr", "tz", "description", "after", "next"}
    assert data["tz"] == "Europe/Berlin"
    # 02:30 does not exist on 2030-03-31 in Berlin (spring forward): skipped.
    assert data["next"] == ["2030-04-01T02:30:00+02:00", "2030-04-02T02:30:00+02:00"]


def test_unquoted_expression_words_are_joined(dtq) -> None:
    result = dtq(
        "cron", "next", "*/15", "*", "*", "*", "*", "--after", "2030-01-01T00:00Z", "-n", "1"
    )
    assert result.stdout.strip() == "2030-01-01T00:15:00+00:00"


def test_explain(dtq) -> None:
    result = dtq("cron", "explain", "30 9 * * mon-fri")
    assert result.exit_code == 0
    assert result.stdout.strip() == "at 09:30 on Monday through Friday"
    data = dtq.json("cron", "explain", "@daily")
    assert set(data) == {"expr", "tz", "description", "next"} and len(data["next"]) == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["next", "61 * * * *"], "minute"),
        (["next", "* * *"], "field"),
        (["explain", "0 0 30 2 *"], "never fires"),
        (["next", "* * * * *", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["next", "* * * * *", "--after", "yesterday"], "bad --after 'yesterday'"),
    ],
)
def test_bad_cron_input_is_one_line_exit_2(dtq, args: list[str], needle: str) -> None:
    result = dtq("cron", *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_count_must_be_positive(dtq) -> None:
    assert dtq("cron", "next", "* * * * *", "--count", "0").exit_code == 2


def test_list_without_schedules(dtq, broker) -> None:
    assert dtq("cron", "list").stdout == "no cron schedules\n"
    assert dtq.json("cron", "list") == []


def test_list_with_a_schedule(dtq, cli_registry, monkeypatch) -> None:
    from cli import _common
    from dtq_core import Broker, BrokerConfig
    from dtq_core.scheduling.periodic import PeriodicHook, ScheduleRegistry, periodic

    from .conftest import KeptConsole

    schedules = ScheduleRegistry()
    periodic("0 3 * * *", name="nightly", registry=cli_registry, schedules=schedules)(lambda: None)
    broker = Broker(
        BrokerConfig(
            backend="memory://",
            num_workers=0,
            registry=cli_registry,
            hooks=[PeriodicHook(schedules)],
        )
    )
    broker.open()
    monkeypatch.setattr(_common, "connect", lambda url: KeptConsole(broker))
    try:
        data = dtq.json("cron", "list")
        text = dtq("cron", "list").stdout
    finally:
        broker.stop(drain_timeout=0)
    assert [s["name"] for s in data] == ["nightly"]
    assert data[0]["expr"] == "0 3 * * *" and len(data[0]["next_runs"]) >= 1
    assert "nightly" in text and "at 03:00" in text
