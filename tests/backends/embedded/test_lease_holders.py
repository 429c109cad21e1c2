"""Recovery keeps the leases of processes that still run (a takeover), requeues the rest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.backends.embedded.deliveries import Received
from dtq_core.backends.embedded.holders import lease_holder_alive
from dtq_core.clock import FakeClock
from dtq_core.task import TaskState
from tests.backends.embedded import crash_worker as cw

HOST = socket.gethostname()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: the pid names no process any more
    return p.pid


def test_lease_holder_alive_reads_host_and_pid() -> None:
    me = os.getpid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert lease_holder_alive(f"{HOST}:{sleeper.pid}:t1", this_process=False)
        sleeper.kill()
        sleeper.wait()
        assert not lease_holder_alive(f"{HOST}:{sleeper.pid}:t1", this_process=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert lease_holder_alive(f"{HOST}:{me}:t0", this_process=True)
    assert not lease_holder_alive(f"{HOST}:{me}:t0", this_process=False)
    for other in (None, "", "w1", f"elsewhere:{me}:t0", f"{HOST}:notapid", f"{HOST}:"):
        assert not lease_holder_alive(other, this_process=True)


def test_an_unreaped_killed_child_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.kill()
    try:
        # Not waited for yet: a zombie still answers kill(pid, 0).
        deadline = time.monotonic() + 10
        while lease_holder_alive(f"{HOST}:{child.pid}:t0", this_process=False):
            assert time.monotonic() < deadline, "a zombie was taken for a live process"
            time.sleep(0.01)
    finally:
        child.wait()


def test_recovery_keeps_a_live_holders_lease_and_requeues_a_dead_ones(tmp_path: Path) -> None:
    clock = FakeClock(cw.T0)
    url = f"embedded://{tmp_path / 'data'}"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        b = EmbeddedBackend(url, clock)
        b.open()
        for tid in ("held", "lost", "mine"):
            b.enqueue(cw.new_task(tid), clock.now())
        holder = {"held": f"{HOST}:{live.pid}:t0", "lost": f"{HOST}:{_dead_pid()}:t0"}
        holder["mine"] = f"{HOST}:{os.getpid()}:t0"
        tokens = {}
        for tid, worker in holder.items():
            (d,) = b.claim(None, worker, 30.0, 1, clock.now())
            tokens[d.task_id] = (d.token, worker)
        b.close()  # a close does not settle claims: the reopen finds all three RUNNING

        clock.advance(5.0)
        b = EmbeddedBackend(url, clock)
        b.took_over = True  # this process's own workers kept running
        b.open()
        try:
            states = {tid: b.get_state(tid) for tid in holder}
            assert states == {
                "held": TaskState.RUNNING,
                "lost": TaskState.PENDING,
                "mine": TaskState.RUNNING,
            }
            assert b.info()["requeued_running"] == 3  # found RUNNING; one of them requeued
            # The kept lease was renewed from the takeover: not expired 29 s later...
            clock.advance(29.0)
            assert b.reclaim_expired(clock.now(), 5) == []
            # ...and its holder settles the task with the new owner under its token.
            held = tokens["held"]
            assert b.ack("held", held[0], "ok", clock.now())
            assert b.get_state("held") is TaskState.SUCCESS
            # A holder that never comes back loses its lease when it runs out.
            clock.advance(2.0)
            (tr,) = b.reclaim_expired(clock.now(), 5)
            assert tr.task_id == "mine" and tr.new is TaskState.PENDING
        finally:
            b.close()
    finally:
        live.kill()
        live.wait()


def test_after_a_takeover_only_the_leases_its_workers_received_are_kept(tmp_path: Path) -> None:
    """A lease of a worker that claimed through the dead owner's socket but never got the
    reply is requeued at once; a worker of this process unknown to ``received`` (one of
    another store in this process) keeps its lease, as a live holder."""
    clock = FakeClock(cw.T0)
    url = f"embedded://{tmp_path / 'data'}"
    me = f"{HOST}:{os.getpid()}"
    b = EmbeddedBackend(url, clock)
    b.open()
    holder = {"got": f"{me}:t0", "lost": f"{me}:t0", "sibling": f"{me}:t9"}
    tokens = {}
    for tid, worker in holder.items():
        b.enqueue(cw.new_task(tid), clock.now())
        (d,) = b.claim(None, worker, 30.0, 1, clock.now())
        tokens[tid] = d.token
    b.close()

    b = EmbeddedBackend(url, clock)
    b.took_over = True
    b.received = Received(frozenset({f"{me}:t0"}), frozenset({("got", tokens["got"])}))
    b.open()
    try:
        states = {tid: b.get_state(tid) for tid in holder}
        assert states == {
            "got": TaskState.RUNNING,
            "lost": TaskState.PENDING,
            "sibling": TaskState.RUNNING,
        }
        lost = b.get("lost")
        assert lost is not None and lost.deliveries == 1  # counted, as any reclaim does
        assert b.ack("got", tokens["got"], "ok", clock.now())
        assert b.ack("lost", tokens["lost"], "stale", clock.now()) == []
    finally:
        b.close()


def test_reclaim_unreceived_requeues_only_the_named_workers_other_leases(tmp_path: Path) -> None:
    clock = FakeClock(cw.T0)
    b = EmbeddedBackend(f"embedded://{tmp_path / 'data'}", clock)
    b.open()
    try:
        holder = {"a": "w1", "b": "w1", "c": "w2"}
        tokens = {}
        for tid, worker in holder.items():
            b.enqueue(cw.new_task(tid), clock.now())
            (d,) = b.claim(None, worker, 30.0, 1, clock.now())
            tokens[tid] = d.token
        deadline = b.get("c").lease_deadline  # type: ignore[union-attr]
        clock.advance(1.0)
        (tr,) = b.reclaim_unreceived(["w1"], [("a", tokens["a"])], clock.now())
        assert (tr.task_id, tr.old, tr.new) == ("b", TaskState.RUNNING, TaskState.PENDING)
        assert b.get_state("a") is TaskState.RUNNING
        assert b.get("c").lease_deadline == deadline  # type: ignore[union-attr]
        # A worker id of this (the owner's) process is not another process's to name:
        # a store of this process may share it with the owner's own workers.
        (mine,) = b.claim(None, f"{HOST}:{os.getpid()}:t0", 30.0, 1, clock.now())
        assert b.reclaim_unreceived([f"{HOST}:{os.getpid()}:t0"], [], clock.now()) == []
        assert b.get_state(mine.task_id) is TaskState.RUNNING
        assert b.release(mine.task_id, mine.token, clock.now())
        # Past the delivery limit a lost claim is dead-lettered, as any reclaim is.
        b.max_deliveries = 1
        (d,) = b.claim(None, "w1", 30.0, 1, clock.now())
        (tr,) = b.reclaim_unreceived(["w1"], [("a", tokens["a"])], clock.now())
        assert (tr.task_id, tr.new) == (d.task_id, TaskState.DEAD)
    finally:
        b.close()
