"""``dtq wal inspect`` and ``dtq wal upgrade`` on real stores, plain and ``--json``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from dtq_core.backends.base import NewTask
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock

REPO = Path(__file__).resolve().parents[2]
V1_KILLED = REPO / "tests" / "fixtures" / "datadirs" / "v1-killed" / "data"
V1_CLEAN = REPO / "tests" / "fixtures" / "datadirs" / "v1-clean" / "data"
NOW = 1_800_000_000.0


def _store(path: Path) -> None:
    """A store whose log holds an enqueue, a claim and an ack (it is left unclosed)."""
    b = EmbeddedBackend(f"embedded://{path}", FakeClock(NOW))
    b.open()
    b.enqueue(NewTask("t1", "x.add", "default", 0, b'{"args":[1],"kwargs":{}}'), NOW)
    (d,) = b.claim(None, "w", 30.0, 1, NOW)
    b.ack("t1", d.token, 2, NOW)
    assert b._wal is not None
    b._wal.close()
    b._log.wal = None
    b._release_ownership()


def test_inspect_lists_the_records_by_kind(dtq, tmp_path: Path) -> None:
    _store(tmp_path / "data")
    result = dtq("wal", "inspect", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["LSN", "KIND", "VERSION"]
    assert [line.split()[1] for line in lines[1:]] == ["enqueue", "claim", "ack"]
    assert all(line.split()[2] == "2" for line in lines[1:])
    rows = dtq.json("wal", "inspect", str(tmp_path / "data"), "-n", "2")
    assert [(r["lsn"], r["kind"], r["version"]) for r in rows] == [
        (1, "enqueue", 2),
        (2, "claim", 2),
    ]


def test_inspect_names_version_1_records(dtq, tmp_path: Path) -> None:
    shutil.copytree(V1_KILLED, tmp_path / "data")
    result = dtq("wal", "inspect", str(tmp_path / "data"), "-n", "3")
    assert result.exit_code == 0, result.output
    assert "v1 names" in result.stdout and "v1 enqueue" in result.stdout


def test_upgrade_converts_once_then_reports_nothing_to_do(dtq, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_KILLED, data)
    result = dtq("wal", "upgrade", str(data))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"upgraded {data} from version 1 to 2: converted 51 log")
    result = dtq("wal", "upgrade", str(data))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{data} is already at version 2: nothing to convert\n"
    report = dtq.json("wal", "upgrade", str(data))
    assert report["found_version"] == 2 and report["version"] == 2
    assert report["changed"] is False and report["converted_records"] == 0


def test_upgrade_of_a_clean_store_converts_its_checkpoint(dtq, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_CLEAN, data)
    result = dtq("wal", "upgrade", str(data))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"upgraded {data} from version 1 to 2: converted the checkpoint; the state is in"
    )


def test_upgrade_json_reports_the_conversion(dtq, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_KILLED, data)
    report = dtq.json("wal", "upgrade", str(data))
    assert (report["found_version"], report["version"], report["changed"]) == (1, 2, True)
    assert report["converted_records"] == 51 and report["converted_checkpoint"] is False
    assert report["checkpoint_lsn"] > 51


def test_upgrade_refuses_while_another_process_owns_the_store(dtq, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_KILLED, data)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(REPO)!r})
                from dtq_core.backends.embedded.backend import EmbeddedBackend
                b = EmbeddedBackend("embedded://{data}")
                b.open()
                print("ready", flush=True)
                sys.stdin.read()
                b.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        result = dtq("wal", "upgrade", str(data))
        assert result.exit_code == 3, result.output
        assert result.stderr.count("\n") == 1
        assert f"in use by process {owner.pid}" in result.stderr
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(30)
