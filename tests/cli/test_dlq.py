"""``dtq dlq``: list, group, show, and replay/purge by id, filter or --all."""

from __future__ import annotations

import json

import pytest

from cli import _output
from dtq_core import Broker


def dead_ids(broker: Broker) -> set[str]:
    return {r.id for r in broker.control.dead_letters(None, 0, 1000)}


def test_list_and_json_shape(dtq, dead: list[str]) -> None:
    result = dtq("dlq", "list")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 4
    data = dtq.json("dlq", "list", "task:boom")
    assert {d["id"] for d in data} == set(dead)
    assert all(d["state"] == "DEAD" for d in data)


def test_group_by_cause(dtq, dead: list[str]) -> None:
    data = dtq.json("dlq", "list", "--group-by", "cause")
    assert len(data) == 1
    group = data[0]
    assert set(group) == {
        "key", "task", "exc_type", "message", "count", "first_seen", "last_seen", "task_ids",
        "reasons", "beside", "replayed_ids",
    }  # fmt: skip
    assert group["count"] == 3 and group["message"] == "bad value <n>"
    text = dtq("dlq", "list", "--group-by", "cause").stdout
    assert "bad value <n>" in text


def test_group_by_rejects_other_keys(dtq, dead: list[str]) -> None:
    result = dtq("dlq", "list", "--group-by", "queue")
    assert result.exit_code == 2


def test_show(dtq, dead: list[str], broker: Broker) -> None:
    assert dtq.json("dlq", "show", dead[0])["id"] == dead[0]
    ok = broker.control.tasks("state:success")[0].id
    result = dtq("dlq", "show", ok)
    assert result.exit_code == 2
    assert "is SUCCESS, not dead" in result.stderr


def test_replay_by_filter_dry_run_changes_nothing(dtq, dead: list[str], broker: Broker) -> None:
    before = len(broker.control.tasks(None, 0, 1000))
    data = dtq.json("dlq", "replay", "task:boom", "text:value 1", "--dry-run")
    assert data["dry_run"] is True and data["count"] == 1
    plan = data["plans"][0]
    assert set(plan) == {
        "dead_id",
        "name",
        "queue",
        "args",
        "kwargs",
        "new_id",
        "edited",
        "replayed_to",
        "skipped",
    }
    assert plan["dead_id"] == dead[1] and plan["new_id"] is None and plan["args"] == [1]
    assert len(broker.control.tasks(None, 0, 1000)) == before
    assert dead_ids(broker) == set(dead)


def test_replay_by_filter_with_yes(dtq, dead: list[str], broker: Broker) -> None:
    result = dtq("dlq", "replay", "exc:ValueError", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["count"] == 3
    # Oldest first, each a new pending task linked to its dead original.
    assert [p["dead_id"] for p in data["plans"]] == dead
    for p in data["plans"]:
        rec = broker.control.task(p["new_id"])
        assert rec is not None and rec.replayed_from == p["dead_id"]


def test_replay_ids_with_edited_args_and_note(dtq, dead: list[str], broker: Broker) -> None:
    result = dtq("dlq", "replay", dead[0], "--args", "[42]", "--note", "fixed input", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "replayed 1 dead task(s)" in result.stderr
    new = broker.control.task(dead[0]).replayed_to[0]
    rec = broker.control.task(new)
    assert rec.args == [42]
    assert rec.edits and rec.edits[0]["note"] == "fixed input"


def test_replay_limit_takes_the_oldest(dtq, dead: list[str]) -> None:
    data = dtq.json("dlq", "replay", "--all", "--limit", "2", "--dry-run")
    assert [p["dead_id"] for p in data["plans"]] == dead[:2]


def test_bulk_action_without_a_terminal_or_yes_refuses(dtq, dead: list[str], broker) -> None:
    result = dtq("dlq", "replay", "--all")
    assert result.exit_code == 2
    assert result.stderr == (
        "dtq: error: refusing to replay 3 dead task(s) without confirmation: stdin is not a "
        "terminal; pass --yes to confirm, or --dry-run to preview\n"
    )
    assert dead_ids(broker) == set(dead)


def test_confirmation_on_a_terminal(dtq, dead: list[str], broker, monkeypatch) -> None:
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: stream is not None)
    result = dtq("dlq", "purge", "--all", input="n\n")
    assert result.exit_code == 1
    assert "Delete 3 dead task(s) for good?" in result.output
    assert dead_ids(broker) == set(dead)
    result = dtq("dlq", "purge", "--all", input="y\n")
    assert result.exit_code == 0
    assert dead_ids(broker) == set()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "name what to replay: dead task ids, filter terms"),
        (["--all", "task:boom"], "give ids, filter terms or --all to replay, not several"),
        (["nope"], "no task id starts with 'nope' (list them with `dtq dlq list`)"),
        (["--all", "--args", "[1"], "--args is not valid JSON"),
        (["--all", "--kwargs", "[1]"], "--kwargs must be a JSON object"),
        (["bogus:1"], "unknown filter key 'bogus'"),
    ],
)
def test_replay_bad_input(dtq, dead: list[str], args: list[str], needle: str) -> None:
    result = dtq("dlq", "replay", *args, "--yes")
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_purge_by_filter_dry_run_then_yes(dtq, dead: list[str], broker: Broker) -> None:
    data = dtq.json("dlq", "purge", "text:value 2", "--dry-run")
    assert data == {"dry_run": True, "count": 1, "ids": [dead[2]]}
    assert dead_ids(broker) == set(dead)
    result = dtq("dlq", "purge", "text:value 2", "--dry-run")
    assert "would purge 1 dead task(s)" in result.stderr
    data = dtq.json("dlq", "purge", "text:value 2", "--yes")
    assert data == {"dry_run": False, "count": 1, "ids": [dead[2]]}
    assert dead_ids(broker) == set(dead[:2])


def test_purge_ids_and_nothing_matching(dtq, dead: list[str], broker: Broker) -> None:
    result = dtq("dlq", "purge", dead[0], dead[1], "--yes")
    assert result.exit_code == 0
    assert result.stdout == "purged 2 dead task(s)\n"
    result = dtq("dlq", "purge", "task:add", "--yes")
    assert result.exit_code == 0
    assert "nothing to purge" in result.stderr


def test_replaying_twice_needs_again(dtq, dead: list[str], broker: Broker) -> None:
    assert dtq("dlq", "replay", dead[0], "--yes").exit_code == 0
    first = broker.control.task(dead[0]).replayed_to
    result = dtq("dlq", "replay", dead[0], "--yes")
    assert result.exit_code == 2  # refused, as every CLI error
    assert f"{dead[0]} was already replayed as {first[0]}" in result.stderr
    assert "pass --again" in result.stderr
    assert broker.control.task(dead[0]).replayed_to == first
    result = dtq("dlq", "replay", dead[0], "--again", "--yes")
    assert result.exit_code == 0, result.stderr
    assert len(broker.control.task(dead[0]).replayed_to) == 2


def test_replaying_a_filter_twice_enqueues_nothing_twice(
    dtq, dead: list[str], broker: Broker
) -> None:
    assert dtq.json("dlq", "replay", "task:boom", "--yes")["count"] == 3
    result = dtq("dlq", "replay", "task:boom", "--yes")
    assert result.exit_code == 0
    assert "left out 3 matching dead task(s) replayed before" in result.stderr
    assert "nothing to replay" in result.stderr
    assert all(len(broker.control.task(i).replayed_to) == 1 for i in dead)
    assert dtq.json("dlq", "replay", "task:boom", "--again", "--yes")["count"] == 3
