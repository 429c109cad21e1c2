"""``dtq dag validate|run|show``: workflow files, runs drawn with their states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import dag as dag_cli
from dtq_core import Broker

DIAMOND = {
    "name": "diamond",
    "nodes": [
        {"id": "a", "task": "add", "args": [1, 1]},
        {"id": "b", "task": "add", "args": [2, 2], "after": ["a"]},
        {"id": "c", "task": "add", "args": [3, 3], "after": ["a"]},
        {"id": "d", "task": "echo", "after": ["b", "c"], "pass_results": True},
    ],
}

CYCLE = {
    "name": "loop",
    "nodes": [
        {"id": "a", "task": "add", "after": ["c"]},
        {"id": "b", "task": "add", "after": ["a"]},
        {"id": "c", "task": "add", "after": ["b"]},
    ],
}

FAILING = {
    "name": "failing",
    "nodes": [
        {"id": "first", "task": "boom"},
        {"id": "second", "task": "add", "args": [1, 1], "after": ["first"]},
    ],
}


def write(tmp_path: Path, name: str, spec: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def test_validate_a_good_file(dtq, tmp_path: Path) -> None:
    result = dtq("dag", "validate", write(tmp_path, "d.json", DIAMOND))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("valid workflow 'diamond', 4 nodes, 3 levels")
    assert lines[-1] == "L2  d  after b, c"


def test_validate_toml_json_shape(dtq, tmp_path: Path) -> None:
    path = tmp_path / "etl.toml"
    path.write_text(
        '[[nodes]]\nid = "x"\ntask = "add"\n\n[[nodes]]\nid = "y"\ntask = "add"\nafter = ["x"]\n'
    )
    data = dtq.json("dag", "validate", str(path))
    assert data["valid"] is True and data["name"] == "etl" and data["nodes"] == 2
    assert data["levels"] == {"x": 0, "y": 1}


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("loop.json", json.dumps(CYCLE), "cycle a → b → c → a"),
        ("broken.json", '{"nodes": [', "invalid JSON"),
        ("missing.json", None, "no such file"),
        ("wf.yaml", "nodes: []", "unsupported file type '.yaml'"),
        ("dup.json", json.dumps({"nodes": [{"id": "a", "task": "add"}] * 2}), "duplicate node id"),
    ],
)
def test_bad_workflow_files_are_one_line_exit_2(
    dtq, tmp_path: Path, name: str, content: str | None, needle: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = dtq("dag", "validate", str(path))
    assert result.exit_code == 2
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_run_and_wait_draws_the_run(dtq, live_broker: Broker, tmp_path: Path) -> None:
    result = dtq("dag", "run", write(tmp_path, "d.json", DIAMOND), "--wait", "--timeout", "20")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "workflow diamond" in lines[0] and "success" in lines[0] and "4/4 done" in lines[0]
    assert lines[1].startswith("L0  ✔ a")
    assert any("d" in ln and "after b, c" in ln for ln in lines)


def test_failed_run_exits_1_and_show_json(dtq, live_broker: Broker, tmp_path: Path) -> None:
    result = dtq("dag", "run", write(tmp_path, "f.json", FAILING), "--wait", "--timeout", "20")
    assert result.exit_code == 1
    assert "upstream_failed" in result.stdout
    run_id = result.stdout.split("run ")[1].split()[0]
    data = dtq.json("dag", "show", run_id)
    assert set(data) == {"id", "name", "state", "created_at", "finished_at", "nodes"}
    states = {n["id"]: n["state"] for n in data["nodes"]}
    assert states == {"first": "failed", "second": "upstream_failed"}


def test_run_without_wait_prints_the_id(dtq, broker: Broker, tmp_path: Path) -> None:
    data = dtq.json("dag", "run", write(tmp_path, "d.json", DIAMOND))
    assert set(data) == {"run_id"}
    assert dtq("dag", "show", data["run_id"]).exit_code == 0


def test_run_with_an_unknown_task(dtq, broker: Broker, tmp_path: Path) -> None:
    spec = {"nodes": [{"id": "a", "task": "nope"}]}
    result = dtq("dag", "run", write(tmp_path, "u.json", spec))
    assert result.exit_code == 2
    assert "unknown task 'nope'" in result.stderr


def test_show_unknown_run(dtq, broker: Broker) -> None:
    result = dtq("dag", "show", "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("dtq: error: no workflow run 'nope' (nor a recent run")
    assert result.stderr.count("\n") == 1


def test_without_the_dag_module_the_commands_fail_cleanly(dtq, monkeypatch, tmp_path) -> None:
    from cli._errors import CliError

    def missing():
        raise CliError(
            "DAG workflows are not available in this build (dtq_core.scheduling.dag is missing)"
        )

    monkeypatch.setattr(dag_cli, "_dag_module", missing)
    result = dtq("dag", "validate", write(tmp_path, "d.json", DIAMOND))
    assert result.exit_code == 2
    assert "not available in this build" in result.stderr
