"""Faults injected into the embedded store under a running ``dtq worker``.

A full disk (a real one on a small tmpfs when the suite runs as root and ``mount``
works, an injected ``OSError(ENOSPC)`` otherwise) and a failed fsync put the store in
fail-stop: the worker must exit non-zero within seconds, saying why in one line, count
only acknowledged outcomes in its stop summary, and a restart must recover and finish
everything acknowledged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtq_core.task import TaskState
from tests.faults import scenarios
from tests.faults.conftest import SystemFactory
from tests.faults.harness import System, small_tmpfs

#: Seconds within which a worker on a failed store must have exited.
EXIT_WITHIN_S = 10.0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path | None]:
    """A 16 MiB tmpfs mounted for this test, or None (not root, or mount refused)."""
    with small_tmpfs(tmp_path / "tmpfs") as mnt:
        yield mnt


def _check_failstop(
    s: System, stop: scenarios.FailStop, v: scenarios.Verdict, exact: bool = True
) -> None:
    assert stop.code not in (0, None), stop.output
    assert stop.seconds < EXIT_WITHIN_S, (stop.seconds, stop.output)
    lines = [ln for ln in stop.output.splitlines() if "store failed" in ln]
    assert len(lines) == 1, stop.output
    assert "Traceback" not in stop.output, stop.output
    v.check()
    # The summary counts only outcomes the store acknowledged: the successes of that
    # process that the restart recovered (after a failed fsync, an ack written but not
    # fsynced may still be recovered from the page cache; on a full disk, a write the
    # kernel cut short may hold whole records before the cut: then it counts fewer).
    m = re.search(r"processed (\d+)", stop.output)
    assert m, stop.output
    runs = s.journal.runs()
    be = s.client().backend
    kept = 0
    for i, tid in s.acknowledged().items():
        rec = be.get(tid)
        ended = {r.pid for r in runs.get(i, []) if r.end is not None}
        if rec is not None and rec.state is TaskState.SUCCESS and ended == {stop.pid}:
            kept += 1
    if exact:
        assert int(m[1]) == kept, (m[1], kept, stop.output)
    else:
        assert int(m[1]) <= kept, (m[1], kept, stop.output)


def test_disk_full(make_system: SystemFactory, tmp_path: Path, tmpfs: Path | None) -> None:
    if tmpfs is not None:
        s = make_system(f"embedded://{tmpfs / 'data'}")
        v, stop = scenarios.embedded_failstop(s, 200, "tmpfs", filler=tmpfs / "filler")
    else:
        s = make_system(f"embedded://{tmp_path / 'data'}")
        v, stop = scenarios.embedded_failstop(s, 200, "enospc")
    # A real full disk accepts part of the last write (a short write, then ENOSPC): not
    # acknowledged, yet its whole records are recovered. The injected fault writes nothing.
    _check_failstop(s, stop, v, exact=tmpfs is None)
    assert "No space left on device" in stop.output


def test_disk_full_injected(make_system: SystemFactory, tmp_path: Path) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}")
    v, stop = scenarios.embedded_failstop(s, 200, "enospc")
    _check_failstop(s, stop, v)
    assert "No space left on device" in stop.output


def test_fsync_failure(make_system: SystemFactory, tmp_path: Path) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}")
    v, stop = scenarios.embedded_failstop(s, 200, "fsync")
    _check_failstop(s, stop, v, exact=False)
    assert "injected fsync failure" in stop.output


def test_malformed_log_records(make_system: SystemFactory, tmp_path: Path) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}")
    v = scenarios.malformed_embedded(s, 60, tmp_path / "data")
    bad = v.n - 60
    v.check(duplicates=False, dead=bad)
    assert len(v.dead) == bad and {r for _, r in v.dead} == {"malformed record"}, v.dead


def test_sigkill_of_attached_workers_and_producers(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}")
    v = scenarios.embedded_attached_sigkill(s, 200)
    v.check()


def test_sigkill_of_the_owner_loses_nothing_and_only_a_worker_takes_over(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}")
    v = scenarios.embedded_owner_sigkill(s, 200)
    v.check()


def test_the_owner_dying_between_a_claim_and_its_reply_delays_no_task(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    s = make_system(f"embedded://{tmp_path / 'data'}", {"lease_s": 30.0})
    v = scenarios.embedded_owner_dies_after_a_claim(s, 200, tmp_path / "arm")
    v.check()
