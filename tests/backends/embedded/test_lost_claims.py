"""A claim whose reply dies with the owner: its task runs at once, and only once.

The owner logs a claim, then dies before the attached worker reads the reply. The lease
is in the log, held by a worker of a live process, which never got the task. Whoever
owns the store next must requeue it at once (not when its 30 s lease runs out), while
the claims that worker did receive stay its own: not delivered again, and settled with
the new owner under their tokens.

The lost reply is injected: the attached store's client makes the real claim (the owner
logs it and answers), then the owner is SIGKILLed and the client raises ``OwnerGone``
as if the answer had died with it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core.backends.base import Delivery
from dtq_core.backends.embedded.client import OwnerGone
from dtq_core.backends.embedded.store import EmbeddedStore
from dtq_core.task import TaskState
from tests.backends.embedded import crash_worker as cw
from tests.processes_util import wait_until

LEASE = 30.0
#: A worker of this process (its id names this process, as real workers' ids do).
WORKER = f"{socket.gethostname()}:{os.getpid()}:t0"
OTHER = f"{socket.gethostname()}:{os.getpid()}:t1"


def serve(url: str) -> cw.Child:
    """A process that owns ``url`` and serves it, with no worker of its own."""
    child = cw.Child("serve", {"url": url})
    child.wait_for("READY")
    return child


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An owner process, and a store of this process attached to it (it may own)."""
    url = f"embedded://{tmp_path / 'data'}"
    children = [serve(url)]
    store = EmbeddedStore(url)
    store.may_own = True
    store.attach_timeout = 20.0
    store.max_deliveries = cw.MAX_DELIVERIES
    store.open()
    assert store.role == "attached"
    now = time.time()
    store.enqueue(cw.new_task("held"), now)
    store.enqueue(cw.new_task("lost"), now)
    try:
        yield {"url": url, "store": store, "children": children}
    finally:
        store.close()
        for child in children:
            child.kill()


class LoseNextClaimReply:
    """The attached store's next claim is logged by its owner, but its reply is lost.

    ``then`` runs between the two (it kills the owner, and may start another), and the
    client raises :class:`OwnerGone` as a client whose owner died mid-call does.
    """

    def __init__(self, mp: pytest.MonkeyPatch, store: EmbeddedStore, then: Callable[[], Any]):
        self.client = store._client
        assert self.client is not None
        self.real = self.client.call
        self.then = then
        self.lost: list[Delivery] = []
        mp.setattr(self.client, "call", self.call)

    def call(self, name: str, args: Any, kwargs: Any, wait: float = 0.0) -> Any:
        if name != "claim" or self.lost:
            return self.real(name, args, kwargs, wait)
        self.lost = self.real(name, args, kwargs, wait)
        assert self.lost, "the owner had nothing to lease"
        self.then()
        raise OwnerGone("the owner died before its claim reply was read", sent=True)


def settle_both(store: EmbeddedStore, held: Delivery, again: Delivery, lost: Delivery) -> None:
    """The received claim is kept and the requeued one delivered once: both settle."""
    now = time.time()
    # Nothing else is delivered: the kept lease is not handed to another worker.
    assert store.claim(None, OTHER, LEASE, 10, now) == []
    assert store.get_state("held") is TaskState.RUNNING
    # The worker that received its claim renews and acknowledges it with the new owner.
    assert store.renew_lease("held", held.token, LEASE, now)
    assert store.ack("held", held.token, "held-ok", now)
    # The lost delivery's token is stale; the redelivery's is the lease.
    assert store.ack("lost", lost.token, "stale", now) == []
    assert store.ack("lost", again.token, "lost-ok", now)
    for tid in ("held", "lost"):
        rec = store.get(tid)
        assert rec is not None and rec.state is TaskState.SUCCESS
        assert rec.result == f"{tid}-ok"
    assert store.get("held").deliveries == 1  # type: ignore[union-attr]


def test_the_process_that_takes_over_requeues_its_lost_claim_at_once(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store: EmbeddedStore = site["store"]
    (owner,) = site["children"]
    (held,) = store.claim(None, WORKER, LEASE, 1, time.time())
    assert held.task_id == "held"
    lose = LoseNextClaimReply(monkeypatch, store, owner.kill)

    t0 = time.monotonic()
    # The claim is logged, its reply lost; this process takes the store over, and the
    # claim's retry (to the store owned here now) gets the requeued task.
    got = store.claim(None, WORKER, LEASE, 10, time.time())
    took = time.monotonic() - t0

    assert store.role == "owner" and store.takeovers == 1
    (lost,) = lose.lost
    assert lost.task_id == "lost"
    assert [d.task_id for d in got] == ["lost"], "the lost claim waits out its lease"
    (again,) = got
    assert took < LEASE / 3
    assert again.token != lost.token
    assert again.deliveries == lost.deliveries + 1  # the lost delivery counts
    info = store.info()
    assert info["requeued_running"] == 2 and info["worker_lost"] == 0
    settle_both(store, held, again, lost)


def test_a_process_that_reattaches_has_the_new_owner_requeue_its_lost_claim(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store: EmbeddedStore = site["store"]
    (owner,) = site["children"]
    (held,) = store.claim(None, WORKER, LEASE, 1, time.time())

    def another_process_takes_over() -> None:
        owner.kill()
        site["children"].append(serve(site["url"]))  # owns before this one tries

    lose = LoseNextClaimReply(monkeypatch, store, another_process_takes_over)
    t0 = time.monotonic()
    got = store.claim(None, WORKER, LEASE, 10, time.time())
    took = time.monotonic() - t0

    # The new owner kept this live process's leases at its recovery; reattached, this
    # process told it which ones its workers hold, and it requeued the other.
    assert store.role == "attached" and store.takeovers == 0
    (lost,) = lose.lost
    assert [d.task_id for d in got] == ["lost"], "the lost claim waits out its lease"
    (again,) = got
    assert took < LEASE / 3
    assert again.token != lost.token and again.deliveries == lost.deliveries + 1
    settle_both(store, held, again, lost)


def test_a_claim_reply_read_while_the_store_switches_owner_is_not_run(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply arrived, but the switch of owner (and its recovery) ran before it was
    recorded: the recovery requeued its lease, so the worker must not get it."""
    store: EmbeddedStore = site["store"]
    (owner,) = site["children"]
    client = store._client
    assert client is not None
    real = client.call
    read: list[Delivery] = []

    def slow_reader(name: str, args: Any, kwargs: Any, wait: float = 0.0) -> Any:
        out = real(name, args, kwargs, wait)
        if name == "claim" and not read:
            read.extend(out)
            owner.kill()
            # Another thread of this process met the dead owner meanwhile: it takes over.
            store._failover(client, OwnerGone("owner gone", sent=False))
            assert store.role == "owner"
        return out

    monkeypatch.setattr(client, "call", slow_reader)
    got = store.claim(None, WORKER, LEASE, 1, time.time())
    assert [d.task_id for d in read] == ["held"]
    assert got == []  # dropped: the worker claims again
    assert store.get_state("held") is TaskState.PENDING
    again = {d.task_id: d for d in store.claim(None, WORKER, LEASE, 10, time.time())}
    assert sorted(again) == ["held", "lost"] and again["held"].token != read[0].token
    assert store.ack("held", again["held"].token, "ok", time.time())


def test_a_claim_reply_read_across_a_reattach_to_the_same_owner_is_given_back(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow owner stays the owner: this process reattaches to it. A claim it served
    after it was told what this process holds, whose reply is read after the switch, is
    given back, not run (the owner did not requeue it)."""
    store: EmbeddedStore = site["store"]
    client = store._client
    assert client is not None
    real = client.call
    read: list[Delivery] = []

    def across_a_switch(name: str, args: Any, kwargs: Any, wait: float = 0.0) -> Any:
        if name != "claim" or read:
            return real(name, args, kwargs, wait)
        store._failover(client, OwnerGone("connection lost", sent=False))
        assert store.role == "attached" and store._client is not client
        # Served by the owner after the switch told it what this process holds.
        read.extend(store._client.call(name, args, kwargs, wait))  # type: ignore[union-attr]
        return list(read)

    monkeypatch.setattr(client, "call", across_a_switch)
    got = store.claim(None, WORKER, LEASE, 1, time.time())
    assert [d.task_id for d in read] == ["held"] and got == []
    wait_until(lambda: store.get_state("held") is TaskState.PENDING, 5)
    again = {d.task_id: d for d in store.claim(None, WORKER, LEASE, 10, time.time())}
    assert sorted(again) == ["held", "lost"] and again["held"].token != read[0].token
    assert store.ack("held", again["held"].token, "ok", time.time())


@pytest.mark.parametrize("logged", [False, True], ids=["ack-not-logged", "ack-logged"])
def test_an_ack_in_flight_when_the_owner_dies_lands_with_the_process_that_takes_over(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch, logged: bool
) -> None:
    """The other direction: a claim that was received stays held through the takeover
    until its ack returns, so the ack's retry (to this process, now the owner) lands."""
    store: EmbeddedStore = site["store"]
    (owner,) = site["children"]
    (held,) = store.claim(None, WORKER, LEASE, 1, time.time())
    client = store._client
    assert client is not None
    real = client.call

    def owner_dies_during_ack(name: str, args: Any, kwargs: Any, wait: float = 0.0) -> Any:
        if name != "ack_many":
            return real(name, args, kwargs, wait)
        if logged:
            real(name, args, kwargs, wait)  # stored by the owner; its reply is lost
        owner.kill()
        raise OwnerGone("the owner died during ack_many", sent=True)

    monkeypatch.setattr(client, "call", owner_dies_during_ack)
    (trs,) = store.ack_many([("held", held.token, "ok")], time.time())
    assert store.role == "owner"
    assert [(t.task_id, t.new) for t in trs] == [("held", TaskState.SUCCESS)]
    rec = store.get("held")
    assert rec is not None and rec.result == "ok" and rec.deliveries == 1
    assert store.claim(None, OTHER, LEASE, 10, time.time())[0].task_id == "lost"


def test_two_stores_of_one_process_whose_workers_share_ids_run_nothing_twice(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two brokers of one process have workers of the same ids (``host:pid:t0``). The
    store that takes over cannot tell its sibling's leases of that id from its own lost
    ones: it keeps them all (the lost claim waits out its lease, as before), and the
    sibling's word to an owner of its own process is ignored."""
    store: EmbeddedStore = site["store"]
    (owner,) = site["children"]
    sibling = EmbeddedStore(site["url"])
    sibling.may_own = False
    sibling.attach_timeout = 20.0
    sibling.open()
    try:
        store.enqueue(cw.new_task("theirs"), time.time())
        (held,) = store.claim(None, WORKER, LEASE, 1, time.time())
        (theirs,) = sibling.claim(None, WORKER, LEASE, 1, time.time())
        assert (held.task_id, theirs.task_id) == ("held", "lost")
        lose = LoseNextClaimReply(monkeypatch, store, owner.kill)
        assert store.claim(None, WORKER, LEASE, 10, time.time()) == []
        assert store.role == "owner"
        (lost,) = lose.lost
        assert lost.task_id == "theirs"
        # The sibling's lease is kept, not run again: the sibling reattaches and acks it.
        assert store.get_state("lost") is TaskState.RUNNING
        assert sibling.ack("lost", theirs.token, "ok", time.time())
        assert sibling.role == "attached"
        # The sibling told this owner what it holds (nothing of "theirs"): ignored.
        assert store.get_state("theirs") is TaskState.RUNNING
        assert store.ack("held", held.token, "ok", time.time())
    finally:
        sibling.close()
