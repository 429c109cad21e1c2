"""Attaching a console to a live embedded owner over its Unix socket; after the owner's
SIGKILL a console fails fast and never takes the store itself."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core.control import connect
from dtq_core.errors import BackendUnavailable, TaskNotFound
from dtq_core.rpc import RemoteConsole
from dtq_core.task import TaskRecord, TaskState
from tests.backends.embedded.crash_worker import Child
from tests.processes_util import wait_until

S = TaskState


def state_of(console: Any, task_id: str) -> str | None:
    rec = console.task(task_id)
    return None if rec is None else rec.state.value


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[str, Child]]:
    """A process owning ``embedded://tmp/data`` with a Broker and 2 worker threads."""
    url = f"embedded://{tmp_path / 'data'}?fsync=always"
    child = Child("owner", {"url": url})
    child.wait_for("READY")
    wait_until(lambda: (tmp_path / "data" / "dtq.sock").exists())
    yield url, child
    child.kill()


def test_console_api_through_the_owners_socket(owner: tuple[str, Child], tmp_path: Path) -> None:
    url, child = owner
    sock = tmp_path / "data" / "dtq.sock"
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600  # owner-only
    console = connect(url)
    assert isinstance(console, RemoteConsole)
    try:
        # enqueue and run
        tid = console.enqueue("app.echo", [{"hello": "world"}])
        wait_until(lambda: state_of(console, tid) == "SUCCESS")
        rec = console.task(tid)
        assert isinstance(rec, TaskRecord) and rec.result == {"hello": "world"}
        assert [r.id for r in console.tasks("task:app.echo state:SUCCESS")] == [tid]
        # a sorted page with its total and the cursor of the next page, over the wire
        page = console.task_page("task:app.echo", "id", False, None, 0, 2)
        assert [r.id for r in page.records] == [tid]
        assert (page.total, page.total_exact, page.next_after) == (1, True, None)

        # a dead letter, grouped by cause, replayed with edited args, then purged
        dead = console.enqueue("app.fragile", [-3])
        wait_until(lambda: state_of(console, dead) == "DEAD")
        (group,) = console.dead_groups()
        assert group.task == "app.fragile" and group.task_ids == (dead,)
        assert "negative input" in group.message
        assert [r.id for r in console.dead_letters()] == [dead]
        (plan,) = console.replay([dead], args=[4], note="fixed the sign")
        assert plan.edited and plan.args == [4] and plan.new_id
        wait_until(lambda: state_of(console, plan.new_id) == "SUCCESS")
        new = console.task(plan.new_id)
        assert new.result == 40 and new.replayed_from == dead
        old = console.task(dead)
        assert old.replayed_to == (plan.new_id,)
        assert old.edits[-1]["note"] == "fixed the sign" and old.edits[-1]["args"] == [4]
        # Once, unless asked again: the same answer through the socket as in process.
        (again,) = console.replay([dead], dry_run=True)
        assert again.skipped and again.replayed_to == (plan.new_id,)
        (skipped,) = console.replay([dead])
        assert skipped.skipped and skipped.new_id is None
        assert console.dead_groups()[0].replayed_ids == (dead,)
        (second,) = console.replay([dead], again=True)
        assert second.new_id and console.task(dead).replayed_to == (plan.new_id, second.new_id)
        wait_until(lambda: state_of(console, second.new_id) == "DEAD")  # same args, same fate
        assert console.purge([second.new_id]) == 1
        assert console.purge([dead]) == 1
        assert console.dead_letters() == [] and console.task(dead) is None
        with pytest.raises(TaskNotFound):
            console.replay([dead])

        # pause, cancel and resume a queue
        console.pause_queue("default")
        snap = console.snapshot()
        assert {q.name: q.paused for q in snap.queues}["default"] is True
        held = console.enqueue("app.echo", ["held"])
        doomed = console.enqueue("app.echo", ["doomed"])
        time.sleep(0.3)
        assert state_of(console, held) == "PENDING"
        assert console.cancel(doomed) is True
        assert console.cancel(doomed) is False
        assert state_of(console, doomed) == "CANCELLED"
        console.resume_queue("default")
        wait_until(lambda: state_of(console, held) == "SUCCESS")
        assert state_of(console, doomed) == "CANCELLED"

        # the snapshot describes the owner's store
        snap = console.snapshot()
        assert snap.counts["SUCCESS"] == 3 and snap.counts["CANCELLED"] == 1
        assert snap.dead_letters == 0
        assert snap.backend_info["fsync"] == "always"
        assert snap.backend_info["path"] == str(tmp_path / "data")
        assert snap.backend_info["failed"] is False
        assert len(snap.workers) == 2
        assert console.health().status in ("ok", "degraded")

        # every task, sorted by id, two to a page, each page continuing from the last
        everything = sorted(r.id for r in console.tasks(None, 0, 100))
        seen: list[str] = []
        after = None
        while True:
            page = console.task_page(None, "id", False, after, 0, 2)
            assert (page.total, page.total_exact) == (len(everything), True)
            seen += [r.id for r in page.records]
            after = page.next_after
            if after is None:
                break
        assert seen == everything
    finally:
        console.close()
    assert child.proc.poll() is None  # the owner is still serving


def test_a_console_never_takes_the_store_of_a_killed_owner(
    owner: tuple[str, Child], tmp_path: Path
) -> None:
    url, child = owner
    remote = connect(url)
    assert isinstance(remote, RemoteConsole)
    done = remote.enqueue("app.echo", ["kept"])
    wait_until(lambda: state_of(remote, done) == "SUCCESS")
    remote.pause_queue("paused-q")
    slow = remote.enqueue("app.sleep", [30])
    wait_until(lambda: state_of(remote, slow) == "RUNNING")
    child.kill()
    assert (tmp_path / "data" / "dtq.sock").exists()  # stale: nobody answers it

    # The console says so at once and never opens the directory itself.
    with pytest.raises(BackendUnavailable, match=r"did not answer|closed|no owner|stopped"):
        remote.task(done)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="no worker owns the embedded store"):
        connect(url, connect_timeout=1.0)
    assert time.monotonic() - t0 < 5
    lock = tmp_path / "data" / "LOCK"
    with open(lock, "rb+") as fh:  # nobody holds the lock: the console did not take it
        fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)

    # A restarted owner recovers everything; the same console object reattaches.
    again = Child("owner", {"url": url})
    try:
        again.wait_for("READY")
        rec = wait_until(lambda: _task_or_none(remote, done))
        assert rec.state is S.SUCCESS and rec.result == "kept"
        # RUNNING at the kill: back to PENDING (or running again), not lost.
        requeued = remote.task(slow)
        assert requeued is not None and requeued.state in (S.PENDING, S.RUNNING)
        assert requeued.deliveries >= 1
        snap = remote.snapshot()
        assert {q.name: q.paused for q in snap.queues}["paused-q"] is True
        assert snap.counts["SUCCESS"] == 1
        sock = tmp_path / "data" / "dtq.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    finally:
        remote.close()
        again.kill()


def _task_or_none(console: Any, task_id: str) -> Any:
    try:
        return console.task(task_id)
    except BackendUnavailable:
        return None


def test_the_owners_socket_serves_masked_views_and_read_only(
    owner: tuple[str, Child], tmp_path: Path
) -> None:
    from dtq_core.errors import ReadOnlyError
    from dtq_core.redact import REDACTED

    url, _child = owner
    console = connect(url)
    ro = connect(url, read_only=True)
    try:
        assert ro.read_only is True and console.read_only is False
        tid = console.enqueue("app.echo", [{"user": "ann", "api_token": "tok-123"}])
        wait_until(lambda: state_of(console, tid) == "SUCCESS")
        for c in (console, ro):
            rec = c.task(tid)
            assert rec.args == [{"user": "ann", "api_token": REDACTED}]
            assert rec.result == {"user": "ann", "api_token": REDACTED}
            assert "tok-123" not in str([r.to_dict(with_payload=True) for r in c.tasks()])
        with pytest.raises(ReadOnlyError):
            ro.enqueue("app.echo", ["no"])
    finally:
        ro.close()
        console.close()
