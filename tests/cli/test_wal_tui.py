"""``dtq wal`` through the engine's facade, and ``dtq tui`` handing over to the console."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from dtq_core import control


def test_wal_commands_need_an_existing_directory(dtq, tmp_path: Path) -> None:
    result = dtq("wal", "verify", str(tmp_path / "absent"))
    assert result.exit_code == 2
    assert "no such directory" in result.stderr or "not available in this build" in result.stderr


@pytest.mark.parametrize("command", ["verify", "repair", "inspect", "compact"])
def test_wal_without_the_facade_is_exit_2(dtq, tmp_path: Path, monkeypatch, command) -> None:
    monkeypatch.delattr(control, "wal_tools", raising=False)
    result = dtq("wal", command, str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == (
        f"dtq: error: dtq wal {command} is not available in this build "
        "(the engine has no dtq_core.control.wal_tools() yet)\n"
    )


def _fake_tools():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Problem:
        segment: str
        offset: int
        kind: str
        detail: str

    @dataclass(frozen=True)
    class Seg:
        name: str
        size: int
        epoch: int
        records: int
        first_lsn: int
        last_lsn: int
        unreadable_bytes: int
        problems: tuple

    @dataclass(frozen=True)
    class Report:
        directory: Path
        segments: tuple

        @property
        def problems(self):
            return tuple(p for s in self.segments for p in s.problems)

        @property
        def ok(self):
            return not self.problems

        @property
        def openable(self):
            return False

        @property
        def records(self):
            return sum(s.records for s in self.segments)

    bad = Problem("00000001.wal", 512, "corrupt", "crc mismatch")

    class Tools:
        def verify(self, path):
            problems = (bad,) if (Path(path) / "BAD").exists() else ()
            return Report(Path(path), (Seg("00000001.wal", 1024, 1, 9, 1, 9, 0, problems),))

        def inspect(self, path, limit=None):
            Row = types.SimpleNamespace
            return [
                Row(
                    lsn=i,
                    rtype=1,
                    length=20,
                    segment="00000001.wal",
                    offset=i * 28,
                    _asdict=lambda i=i: {"lsn": i},
                )
                for i in range(1, 4)
            ][:limit]

    return Tools()


def test_wal_verify_and_inspect_through_the_facade(dtq, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(control, "wal_tools", _fake_tools, raising=False)
    result = dtq("wal", "verify", str(tmp_path))
    assert result.exit_code == 0
    assert "ok: 9 records, no problems" in result.stdout
    data = dtq.json("wal", "verify", str(tmp_path))
    assert data["ok"] is True and data["segments"][0]["records"] == 9
    (tmp_path / "BAD").write_text("")
    result = dtq("wal", "verify", str(tmp_path))
    assert result.exit_code == 1
    assert "crc mismatch" in result.stdout and "dtq wal repair" in result.stdout
    result = dtq("wal", "inspect", str(tmp_path), "-n", "2")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
    # A facade without compact: that one command says so.
    result = dtq("wal", "compact", str(tmp_path))
    assert result.exit_code == 2 and "not available in this build" in result.stderr


def test_tui_passes_backend_and_extra_arguments(dtq, monkeypatch) -> None:
    seen = {}
    fake = types.ModuleType("dtq_tui.app")

    def main(argv=None):
        seen["argv"] = argv

    fake.main = main
    monkeypatch.setitem(sys.modules, "dtq_tui.app", fake)
    result = dtq("--backend", "memory://", "tui", "--demo", "--theme", "dark")
    assert result.exit_code == 0, result.output
    assert seen["argv"] == ["--backend", "memory://", "--demo", "--theme", "dark"]
    assert dtq("--read-only", "tui", "--demo").exit_code == 0
    assert seen["argv"] == ["--read-only", "--demo"]


def test_tui_exit_code_is_the_console_s(dtq, monkeypatch) -> None:
    fake = types.ModuleType("dtq_tui.app")
    fake.main = lambda argv=None: 3
    monkeypatch.setitem(sys.modules, "dtq_tui.app", fake)
    assert dtq("tui").exit_code == 3


def test_tui_without_the_console_is_a_clear_error(dtq, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dtq_tui.app", None)
    result = dtq("tui")
    assert result.exit_code == 2
    assert result.stderr.startswith("dtq: error: the console is not available in this build")
