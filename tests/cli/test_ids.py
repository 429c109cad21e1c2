"""Listing by default and id prefixes everywhere an id is taken (issue 17, point 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtq_core import Broker, BrokerConfig
from dtq_core.control import connect
from dtq_core.rpc import RemoteConsole


@pytest.fixture
def named(broker: Broker) -> dict[str, str]:
    """Dead tasks with chosen ids (two share a prefix) and one pending task."""
    for tid, x in (("d00d-aa11", 1), ("d00d-aa22", 2), ("beef-0001", 3)):
        broker.send("boom", [x], task_id=tid)
    broker.work()
    broker.send("add", [1, 2], task_id="cafe-0001")
    return {"one": "d00d-aa11", "two": "d00d-aa22", "other": "beef-0001", "pending": "cafe-0001"}


@pytest.mark.parametrize("group", ["tasks", "dlq", "queues", "cron"])
def test_a_group_alone_lists(dtq, named, group: str) -> None:
    alone = dtq(group)
    assert alone.exit_code == 0, alone.output
    assert alone.stdout == dtq(group, "list").stdout


def test_tasks_alone_lists_as_json_too(dtq, named) -> None:
    data = json.loads(dtq("tasks", "--json").stdout)
    assert {r["id"] for r in data} == set(named.values())


@pytest.mark.parametrize(
    "command",
    [["tasks", "show"], ["dlq", "show"], ["tasks", "show", "--json"], ["dlq", "show", "--json"]],
)
def test_show_takes_a_unique_prefix(dtq, named, command: list[str]) -> None:
    result = dtq(*command[:2], "beef", *command[2:])
    assert result.exit_code == 0, result.output
    assert named["other"] in result.stdout


def test_replay_and_purge_take_prefixes(dtq, named, broker: Broker) -> None:
    result = dtq("dlq", "replay", "beef", "--yes", "--json")
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    assert [p["dead_id"] for p in plans] == [named["other"]]
    result = dtq("dlq", "purge", "d00d-aa1", "d00d-aa2", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ids"] == [named["one"], named["two"]]
    assert broker.control.task(named["one"]) is None


def test_cancel_takes_a_prefix(dtq, named) -> None:
    result = dtq("tasks", "cancel", "cafe")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cancelled {named['pending']}\n"


@pytest.mark.parametrize(
    "command",
    [
        ["tasks", "show"],
        ["tasks", "cancel"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "purge"],
    ],
)
def test_an_ambiguous_prefix_lists_the_candidates(dtq, named, broker: Broker, command) -> None:
    bulk = command[0] == "dlq" and command[1] != "show"
    result = dtq(*command, "d00d", *(["--yes"] if bulk else []))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "'d00d' is ambiguous: 2 task ids start with it (d00d-aa11, d00d-aa22)" in result.stderr
    assert broker.control.task(named["one"]).state.value == "DEAD"  # nothing was done


def test_an_unknown_prefix_says_so(dtq, named) -> None:
    result = dtq("tasks", "show", "f00")
    assert result.exit_code == 2
    assert "no task id starts with 'f00'" in result.stderr


def test_many_candidates_are_capped(dtq, broker: Broker) -> None:
    for i in range(12):
        broker.send("add", [i, i], task_id=f"feed-{i:02d}")
    result = dtq("tasks", "show", "feed")
    assert result.exit_code == 2
    assert "10 or more task ids start with it" in result.stderr


def test_resolve_id_over_the_owner_socket(cli_registry, tmp_path: Path) -> None:
    url = f"embedded://{tmp_path / 'data'}"
    owner = Broker(BrokerConfig(backend=url, num_workers=1, registry=cli_registry))
    owner.start()
    try:
        for tid in ("d00d-aa11", "d00d-aa22", "beef-0001"):
            owner.send("add", [1, 1], task_id=tid).get(timeout=20)
        remote = connect(url, connect_timeout=5)
        assert isinstance(remote, RemoteConsole)
        try:
            assert remote.resolve_id("d00d", 10) == ["d00d-aa11", "d00d-aa22"]
            assert remote.resolve_id("beef") == ["beef-0001"]
            assert {"add", "boom", "echo"} <= set(remote.task_names())
        finally:
            remote.close()
    finally:
        owner.stop(drain_timeout=1)


def test_dag_show_takes_a_prefix_of_a_recent_run(dtq, live_broker: Broker, tmp_path: Path) -> None:
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"nodes": [{"id": "a", "task": "add", "args": [1, 1]}]}))
    first = dtq("dag", "run", str(spec), "--wait", "--timeout", "20", "--json")
    run_id = json.loads(first.stdout)["id"]
    shown = dtq("dag", "show", run_id[:-3], "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == run_id
    dtq("dag", "run", str(spec), "--wait", "--timeout", "20")
    ambiguous = dtq("dag", "show", "wf")
    assert ambiguous.exit_code == 2
    assert "'wf' is ambiguous: 2 recent runs start with it" in ambiguous.stderr
    missing = dtq("dag", "show", "nope")
    assert missing.exit_code == 2
    assert "no workflow run 'nope'" in missing.stderr
