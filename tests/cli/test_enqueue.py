"""``dtq enqueue``: ids, results with --wait, and bad input for each option."""

from __future__ import annotations

import json
import time

import pytest

from dtq_core import Broker


def test_enqueue_prints_the_id(dtq, broker: Broker) -> None:
    result = dtq("enqueue", "add", "--args", "[2, 3]")
    assert result.exit_code == 0, result.stderr
    task_id = result.stdout.strip()
    rec = broker.control.task(task_id)
    assert rec is not None and rec.args == [2, 3] and rec.state.value == "PENDING"


def test_enqueue_json_shape(dtq, broker: Broker) -> None:
    data = dtq.json("enqueue", "echo", "--kwargs", '{"x": 1}', "--queue", "q2", "--priority", "-3")
    assert set(data) == {"id"}
    rec = broker.control.task(data["id"])
    assert rec is not None
    assert (rec.queue, rec.priority, rec.kwargs) == ("q2", -3, {"x": 1})


def test_countdown_and_eta_delay_the_task(dtq, broker: Broker) -> None:
    out = dtq.json("enqueue", "add", "--args", "[1, 1]", "--countdown", "60")
    rec = broker.control.task(out["id"])
    assert rec is not None and rec.eta is not None and rec.eta > time.time() + 50
    out = dtq.json("enqueue", "add", "--args", "[1, 1]", "--eta", "2099-01-01T00:00:00+00:00")
    rec = broker.control.task(out["id"])
    assert rec is not None and rec.eta == pytest.approx(4070908800.0)


def test_wait_prints_the_result(dtq, live_broker: Broker) -> None:
    result = dtq("enqueue", "add", "--args", "[2, 3]", "--wait", "10")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "5\n"


def test_wait_json_shape(dtq, live_broker: Broker) -> None:
    data = dtq.json("enqueue", "echo", "--args", '["a"]', "--wait", "10")
    assert set(data) == {"id", "state", "result", "error", "dead_reason"}
    assert data["state"] == "SUCCESS"
    assert data["result"] == {"args": ["a"], "kwargs": {}}


def test_wait_on_a_failing_task_exits_1(dtq, live_broker: Broker) -> None:
    result = dtq("enqueue", "boom", "--args", "[7]", "--wait", "10")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "dtq: error: task " in result.stderr
    assert "dead: ValueError: bad value 7" in result.stderr


def test_wait_failure_in_json_still_exits_1(dtq, live_broker: Broker) -> None:
    result = dtq("enqueue", "boom", "--wait", "10", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["state"] == "DEAD"
    assert data["error"]["type"].endswith("ValueError")


def test_wait_times_out_with_exit_1(dtq, broker: Broker) -> None:
    result = dtq("enqueue", "add", "--args", "[1, 2]", "--wait", "0.2")
    assert result.exit_code == 1
    assert "still PENDING after 0.2s" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--args", "[1, 2"], "--args is not valid JSON"),
        (["--args", '{"a": 1}'], "--args must be a JSON array, not dict"),
        (["--kwargs", "[1]"], "--kwargs must be a JSON object, not list"),
        (["--kwargs", "{x: 1}"], "--kwargs is not valid JSON"),
        (["--eta", "tomorrow"], "bad --eta 'tomorrow': use ISO 8601"),
        (["--countdown", "5", "--eta", "2030-01-01T00:00:00"], "give --countdown or --eta"),
    ],
)
def test_bad_input_is_one_line_exit_2(dtq, broker: Broker, args: list[str], needle: str) -> None:
    result = dtq("enqueue", "add", *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1
    assert broker.control.tasks() == []


def test_unknown_task_names_the_known_ones(dtq, broker: Broker) -> None:
    result = dtq("enqueue", "ad")
    assert result.exit_code == 2
    assert "unknown task 'ad'" in result.stderr
    assert "add" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--countdown", "-1"], ["--priority", "high"], ["--wait", "soon"]],
)
def test_bad_option_types_are_usage_errors(dtq, broker: Broker, args: list[str]) -> None:
    result = dtq("enqueue", "add", *args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_enqueue_with_dedup_key_returns_the_first_id(dtq, broker: Broker) -> None:
    first = dtq.json("enqueue", "add", "--args", "[1, 1]", "--dedup-key", "k1")["id"]
    second = dtq.json("enqueue", "add", "--args", "[1, 1]", "--dedup-key", "k1")["id"]
    assert first == second
