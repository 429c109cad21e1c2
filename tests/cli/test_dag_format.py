"""The documented workflow file format (issue 17, point 2): README, schema, fields, alias."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from dtq_core import Broker
from dtq_core.errors import DAGError
from dtq_core.scheduling.dag import Workflow, load_workflow
from dtq_core.scheduling.dag_format import NODE_ALIASES, NODE_FIELDS, json_schema

from .conftest import REPO

README = (REPO / "cli" / "README.md").read_text()
SECTION = README[README.index("## Workflow files") : README.index("## Exit codes")]


def _block(lang: str) -> str:
    m = re.search(rf"```{lang}\n(.*?)```", SECTION, re.S)
    assert m, f"no {lang} example in cli/README.md"
    return m.group(1)


def test_readme_documents_every_field() -> None:
    for name in [*NODE_FIELDS, *NODE_ALIASES, "name", "nodes"]:
        assert f"`{name}`" in SECTION, name


def test_readme_examples_are_valid_and_equal(dtq, tmp_path: Path) -> None:
    (tmp_path / "daily-report.toml").write_text(_block("toml"))
    (tmp_path / "daily-report.json").write_text(_block("json"))
    shown = []
    for name in ("daily-report.toml", "daily-report.json"):
        result = dtq("dag", "validate", str(tmp_path / name), "--json")
        assert result.exit_code == 0, result.output
        shown.append(json.loads(result.stdout)["workflow"])
    assert shown[0] == shown[1]
    assert {n["id"]: n["after"] for n in shown[0]["nodes"]} == {
        "orders": [],
        "refunds": [],
        "merge": ["orders", "refunds"],
        "load": ["merge"],
    }
    # Every field of the format is used by the complete example.
    used = {k for n in tomllib.loads(_block("toml"))["nodes"] for k in n}
    assert used == set(NODE_FIELDS)


def test_schema_command_prints_a_schema_the_examples_pass(dtq) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    result = dtq("dag", "schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema == json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(json.loads(_block("json")))
    validator.validate(tomllib.loads(_block("toml")))
    validator.validate({"$schema": "./workflow.schema.json", **json.loads(_block("json"))})
    bad = {"nodes": [{"id": "a", "task": "t", "parent": ["x"]}]}
    assert list(validator.iter_errors(bad))
    both = {"nodes": [{"id": "a", "task": "t", "after": "x", "parents": "x"}]}
    assert list(validator.iter_errors(both))


@pytest.mark.parametrize(
    ("data", "head"),
    [
        ({"nodes": [{"id": "a", "task": "t", "parent": "x"}]}, "unknown field 'parent'"),
        ({"nodes": [{"id": "a", "task": "t", "depends_on": "x"}]}, "unknown field 'depends_on'"),
        ({"name": "w", "nodes": [], "steps": []}, "unknown workflow field 'steps'"),
    ],
)
def test_unknown_fields_list_the_valid_ones(data: dict, head: str) -> None:
    with pytest.raises(DAGError) as info:
        Workflow.from_dict(data)
    text = str(info.value)
    assert head in text
    assert "valid fields: " in text
    for name in NODE_FIELDS:
        assert name in text


def test_validate_cli_lists_fields_for_an_unknown_one(dtq, tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[[nodes]]\nid = "a"\ntask = "add"\ndeps = []\n')
    result = dtq("dag", "validate", str(path))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "unknown field 'deps'" in result.stderr
    assert "valid fields: id, task, args, kwargs, after, pass_results, queue, priority" in (
        result.stderr
    )


def test_parents_is_an_alias_of_after(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(
        json.dumps({"nodes": [{"id": "a", "task": "t"}, {"id": "b", "task": "t", "parents": "a"}]})
    )
    wf = load_workflow(path)
    assert wf.nodes[1].after == ("a",)
    assert wf.to_dict()["nodes"][1]["after"] == ["a"]  # written back under the one name
    with pytest.raises(DAGError, match="give 'after' or its alias 'parents', not both"):
        Workflow.from_dict({"nodes": [{"id": "a", "task": "t", "after": [], "parents": []}]})


def test_show_uses_the_files_name_for_dependencies(
    dtq, live_broker: Broker, tmp_path: Path
) -> None:
    path = tmp_path / "w.json"
    spec = {"nodes": [{"id": "a", "task": "add", "args": [1, 1]},
                      {"id": "b", "task": "add", "args": [2, 2], "after": "a"}]}  # fmt: skip
    path.write_text(json.dumps(spec))
    run = json.loads(dtq("dag", "run", str(path), "--wait", "--timeout", "20", "--json").stdout)
    nodes = {n["id"]: n for n in run["nodes"]}
    assert nodes["b"]["after"] == ["a"] == nodes["b"]["parents"]
    text = dtq("dag", "show", run["id"]).stdout
    assert any(line.split()[-2:] == ["after", "a"] for line in text.splitlines())
