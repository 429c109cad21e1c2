"""``dtq tasks list|show|cancel``."""

from __future__ import annotations

import pytest

from cli import _output
from dtq_core import Broker

#: Keys of TaskRecord.to_dict(), the JSON shape of tasks list/show.
RECORD_KEYS = {
    "id", "name", "queue", "priority", "state", "args", "kwargs", "options", "created_at",
    "enqueued_at", "eta", "max_retries", "time_limit", "attempt", "deliveries", "started_at",
    "finished_at", "result", "error", "history", "replayed_from", "replayed_to", "dead_reason",
    "worker", "lease_deadline", "edits", "dedup_key", "workflow",
}  # fmt: skip


@pytest.fixture
def mixed(broker: Broker) -> dict[str, str]:
    ids = {
        "ok": broker.send("add", [1, 2]).id,
        "dead": broker.send("boom", [1]).id,
    }
    broker.work()
    ids["pending"] = broker.send("add", [5, 5], queue="other").id
    return ids


def test_list_plain_text_when_piped(dtq, mixed: dict[str, str]) -> None:
    result = dtq("tasks", "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "QUEUE", "STATE"]
    assert len(lines) == 4
    assert "┃" not in result.stdout and "\x1b[" not in result.stdout


def test_list_json_shape(dtq, mixed: dict[str, str]) -> None:
    data = dtq.json("tasks", "list")
    assert isinstance(data, list) and len(data) == 3
    assert all(set(d) == RECORD_KEYS for d in data)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "dead"], {"dead"}),
        (["--state", "success,pending"], {"ok", "pending"}),
        (["--queue", "other"], {"pending"}),
        (["--name", "boom"], {"dead"}),
        (["task:add", "state:success"], {"ok"}),
        (["--limit", "1"], {"pending"}),
    ],
)
def test_list_filters(dtq, mixed: dict[str, str], args: list[str], expected: set[str]) -> None:
    data = dtq.json("tasks", "list", *args)
    want = {mixed[k] for k in expected}
    assert {d["id"] for d in data} == want


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--state", "done"], "unknown state 'done'"),
        (["colour:red"], "unknown filter key 'colour'"),
        (["since:soon"], "bad duration 'soon'"),
    ],
)
def test_bad_filters_are_one_line_exit_2(dtq, broker: Broker, args: list[str], needle: str) -> None:
    result = dtq("tasks", "list", *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_show_json_and_text(dtq, mixed: dict[str, str]) -> None:
    data = dtq.json("tasks", "show", mixed["dead"])
    assert set(data) == RECORD_KEYS
    assert data["state"] == "DEAD" and data["error"]["message"] == "bad value 1"
    result = dtq("tasks", "show", mixed["dead"])
    assert result.exit_code == 0
    assert "ValueError: bad value 1" in result.stdout
    assert "Attempts" in result.stdout and "Traceback" in result.stdout


def test_show_unknown_id_exits_2(dtq, broker: Broker) -> None:
    result = dtq("tasks", "show", "nope")
    assert result.exit_code == 2
    assert (
        result.stderr
        == "dtq: error: no task id starts with 'nope' (list them with `dtq tasks list`)\n"
    )


def test_cancel_pending_then_finished(dtq, mixed: dict[str, str]) -> None:
    result = dtq("tasks", "cancel", mixed["pending"])
    assert result.exit_code == 0
    assert result.stdout == f"cancelled {mixed['pending']}\n"
    result = dtq("tasks", "cancel", mixed["ok"], "--json")
    assert result.exit_code == 1
    assert '"cancelled": false' in result.stdout
    result = dtq("tasks", "cancel", mixed["ok"])
    assert result.exit_code == 1
    assert "is SUCCESS: only PENDING or RETRY tasks can be cancelled" in result.stderr


def test_cancel_unknown_id_exits_2(dtq, broker: Broker) -> None:
    assert dtq("tasks", "cancel", "nope").exit_code == 2


def test_rich_table_on_a_terminal(dtq, mixed: dict[str, str], monkeypatch) -> None:
    monkeypatch.setattr(_output, "is_tty", lambda stream=None: True)
    result = dtq("tasks", "list")
    assert result.exit_code == 0
    assert "┃" in result.stdout or "│" in result.stdout


def test_list_sorts_in_the_backend_and_tells_the_total(dtq, broker: Broker) -> None:
    ids = [broker.send("add", [i, i], queue=q).id for i, q in enumerate("cabca")]
    data = dtq.json("tasks", "list", "--sort", "queue:desc", "--limit", "3")
    assert [d["queue"] for d in data] == ["c", "c", "b"]
    assert [d["id"] for d in data][:2] == sorted([ids[0], ids[3]], reverse=True)
    data = dtq.json("tasks", "list", "--sort", "queue", "--limit", "2", "--offset", "1")
    assert [d["queue"] for d in data] == ["a", "b"]
    result = dtq("tasks", "list", "--sort", "id:asc", "--limit", "2")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == sorted(ids)[:2]
    assert result.stderr == "1-2 of 5 tasks, by id asc\n"


@pytest.mark.parametrize(
    ("sort", "needle"),
    [
        ("runtime", "cannot sort by 'runtime': use one of enqueued, id, name, queue, state"),
        ("name:up", "bad sort direction 'up' in 'name:up': write name:asc or name:desc"),
    ],
)
def test_bad_sort_is_one_line_exit_2(dtq, broker: Broker, sort: str, needle: str) -> None:
    result = dtq("tasks", "list", "--sort", sort)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1
