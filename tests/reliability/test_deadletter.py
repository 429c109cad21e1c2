"""The dead-letter queue: filters, grouping by cause, replay (with edits) and purge."""

from __future__ import annotations

import pickle
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from dtq_core import Broker, ConfigError, TaskNotFound, TaskState, task
from dtq_core.backends.base import NewTask
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from tests.conftest import EventLog

DEAD, PENDING, SUCCESS = TaskState.DEAD, TaskState.PENDING, TaskState.SUCCESS


class PaymentError(Exception):
    """The gateway said no."""


@dataclass
class Tasks:
    charge: Any
    fetch: Any
    div: Any


@pytest.fixture
def tasks(registry: Registry) -> Tasks:
    @task(name="charge", registry=registry, queue="payments", max_retries=0)
    def charge(order: int) -> None:
        raise PaymentError(f"order {order} declined by gateway (code {order % 7})")

    @task(name="fetch", registry=registry, queue="io", max_retries=0)
    def fetch(key: str, seconds: float) -> None:
        raise ConnectionError(f"timeout after {seconds}s fetching '{key}' as {uuid.uuid4()}")

    @task(name="div", registry=registry, max_retries=0)
    def div(a: float, b: float) -> float:
        return a / b

    return Tasks(charge, fetch, div)


def bury(broker: Broker, t: Any, *args: Any) -> str:
    """Send and run a task that fails; return its (dead) id."""
    res = t.apply_async(args, broker=broker)
    broker.work()
    assert res.state is DEAD, res.record()
    return res.id


@pytest.fixture
def graveyard(inline: Broker, clock: FakeClock, tasks: Tasks) -> dict[str, list[str]]:
    """Dead tasks of three causes; the ``old`` ones died two hours before the rest."""
    ids: dict[str, list[str]] = {"old": [], "charge": [], "fetch": [], "div": []}
    ids["old"].append(bury(inline, tasks.charge, 1001))
    ids["charge"].append(ids["old"][0])
    clock.advance(2 * 3600)
    for order in (2002, 3003):
        ids["charge"].append(bury(inline, tasks.charge, order))
    for key, secs in (("user:1", 1.5), ("user:22", 30)):
        ids["fetch"].append(bury(inline, tasks.fetch, key, secs))
    ids["div"].append(bury(inline, tasks.div, 1, 0))
    return ids


def listed(broker: Broker, flt: str | None = None) -> list[str]:
    return [r.id for r in broker.dlq.list(flt)]


# -- listing ---------------------------------------------------------------------------


def test_list_is_newest_first_and_counts(inline: Broker, graveyard: dict[str, list[str]]) -> None:
    everything = listed(inline)
    assert len(everything) == 6 == inline.dlq.count()
    assert everything[-1] == graveyard["old"][0]
    assert everything[0] == graveyard["div"][0]
    assert [r.id for r in inline.control.dead_letters()] == everything
    assert [r.id for r in inline.dlq.list(offset=1, limit=2)] == everything[1:3]


@pytest.mark.parametrize(
    ("flt", "expect"),
    [
        ("task:charge", "charge"),
        ("queue:io", "fetch"),
        ("exc:PaymentError", "charge"),
        ("exc:ConnectionError", "fetch"),
        ("exc:ZeroDivisionError", "div"),
        ("text:declined", "charge"),
        ("declined", "charge"),
        ("text:user:22", None),
        ("since:1h", None),
        ("task:charge since:1h", None),
        ("task:nothing", None),
    ],
)
def test_list_filters(
    inline: Broker, graveyard: dict[str, list[str]], flt: str, expect: str | None
) -> None:
    want = {
        "text:user:22": graveyard["fetch"][1:],
        "since:1h": graveyard["charge"][1:] + graveyard["fetch"] + graveyard["div"],
        "task:charge since:1h": graveyard["charge"][1:],
        "task:nothing": [],
    }.get(flt, graveyard[expect] if expect else [])
    assert sorted(listed(inline, flt)) == sorted(want)
    assert inline.dlq.count(flt) == len(want)


def test_a_bad_filter_is_an_error_naming_the_key(
    inline: Broker, graveyard: dict[str, list[str]]
) -> None:
    with pytest.raises(ConfigError, match="colour"):
        inline.dlq.list("colour:red")


# -- grouping --------------------------------------------------------------------------


def test_groups_fold_numbers_and_ids_together(
    inline: Broker, graveyard: dict[str, list[str]]
) -> None:
    groups = inline.dlq.groups()
    assert [(g.task, g.count) for g in groups] == [("charge", 3), ("fetch", 2), ("div", 1)]
    charge, fetch, div = groups
    assert set(charge.task_ids) == set(graveyard["charge"])
    assert charge.exc_type.endswith("PaymentError")
    assert "declined by gateway" in charge.message
    assert "1001" not in charge.message and "2002" not in charge.message
    assert set(fetch.task_ids) == set(graveyard["fetch"])
    assert fetch.exc_type == "ConnectionError"
    assert div.exc_type == "ZeroDivisionError" and div.task_ids == tuple(graveyard["div"])
    assert charge.first_seen < charge.last_seen
    assert len({g.key for g in groups}) == 3
    assert [g.count for g in inline.dlq.groups("task:charge since:1h")] == [2]


def test_different_messages_of_one_task_make_different_groups(
    inline: Broker, registry: Registry
) -> None:
    @task(name="parse", registry=registry, max_retries=0)
    def parse(kind: str, n: int) -> None:
        if kind == "a":
            raise ValueError(f"line {n}: unexpected token")
        raise ValueError(f"line {n}: file ended early")

    for kind, n in (("a", 1), ("a", 20), ("b", 3), ("a", 300)):
        bury(inline, parse, kind, n)
    counts = sorted(g.count for g in inline.dlq.groups())
    assert counts == [1, 3]


# -- replay ----------------------------------------------------------------------------


def test_replay_one(inline: Broker, clock: FakeClock, graveyard: dict[str, list[str]]) -> None:
    dead_id = graveyard["charge"][1]
    log = EventLog(inline)
    [plan] = inline.dlq.replay([dead_id])
    assert plan.dead_id == dead_id and plan.name == "charge" and plan.queue == "payments"
    assert plan.args == [2002] and not plan.edited
    new = inline.backend.get(plan.new_id)
    assert new.state is PENDING and new.replayed_from == dead_id
    assert (new.attempt, new.history, new.args) == (0, (), [2002])
    assert new.queue == "payments"
    old = inline.backend.get(dead_id)
    assert old.state is DEAD and old.replayed_to == (plan.new_id,)
    assert old.edits == ()
    assert log.transitions(plan.new_id) == [(None, PENDING)]
    assert dead_id in listed(inline)  # the dead record stays


def test_replay_many(inline: Broker, graveyard: dict[str, list[str]]) -> None:
    ids = graveyard["fetch"] + graveyard["div"]
    plans = inline.dlq.replay(ids)
    assert [p.dead_id for p in plans] == ids
    assert len({p.new_id for p in plans}) == 3
    for p in plans:
        assert inline.backend.get(p.new_id).replayed_from == p.dead_id
    assert inline.backend.count_by_state()[PENDING] == 3


def test_replay_by_filter_dry_run_changes_nothing(
    inline: Broker, graveyard: dict[str, list[str]]
) -> None:
    before = inline.backend.count_by_state()
    seq = inline.events.last_seq
    plans = inline.dlq.replay_matching("task:charge", dry_run=True)
    assert [p.dead_id for p in plans] == graveyard["charge"]  # oldest first
    assert all(p.new_id is None for p in plans)
    assert [p.args for p in plans] == [[1001], [2002], [3003]]
    assert inline.backend.count_by_state() == before
    assert inline.events.last_seq == seq
    assert all(inline.backend.get(i).replayed_to == () for i in graveyard["charge"])

    plans = inline.dlq.replay_matching("task:charge", limit=2)
    assert [p.dead_id for p in plans] == graveyard["charge"][:2]
    assert inline.backend.count_by_state()[PENDING] == 2


def test_replay_refuses_unknown_and_live_ids(inline: Broker, tasks: Tasks) -> None:
    res = tasks.div.apply_async((4, 2), broker=inline)
    inline.work()
    for bad in ("nope", res.id):
        with pytest.raises(TaskNotFound):
            inline.dlq.replay([bad])
    dead = bury(inline, tasks.div, 1, 0)
    with pytest.raises(ConfigError):
        inline.dlq.replay([dead], args=(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        inline.dlq.replay([dead], kwargs=[1])  # type: ignore[arg-type]


def test_replay_with_edited_args_runs_to_success_and_keeps_an_edit_trail(
    inline: Broker, clock: FakeClock, tasks: Tasks
) -> None:
    dead_id = bury(inline, tasks.div, 1, 0)
    clock.advance(5)
    [plan] = inline.dlq.replay([dead_id], args=[8, 2], note="fix the divisor")
    assert plan.edited and plan.args == [8, 2]

    new = inline.backend.get(plan.new_id)
    assert new.replayed_from == dead_id and new.attempt == 0 and new.args == [8, 2]
    assert inline.work() == 1
    res = inline.result(plan.new_id)
    assert res.get(timeout=1) == 4
    new = res.record()
    assert new.state is SUCCESS and new.attempt == 1 and new.history == ()

    old = inline.backend.get(dead_id)
    assert old.state is DEAD and old.replayed_to == (plan.new_id,)
    assert old.args == [1, 0]  # the original message is kept as it was
    [edit] = old.edits
    assert edit["at"] == clock.now()
    assert edit["note"] == "fix the divisor"
    assert (edit["old_args"], edit["args"]) == ([1, 0], [8, 2])
    assert edit["new_task"] == plan.new_id
    assert new.edits and new.edits[0]["note"] == "fix the divisor"


def test_replay_twice_links_both_new_tasks(inline: Broker, tasks: Tasks) -> None:
    dead_id = bury(inline, tasks.div, 1, 0)
    a = inline.dlq.replay([dead_id])[0].new_id
    b = inline.dlq.replay([dead_id], args=[3, 3])[0].new_id
    assert inline.backend.get(dead_id).replayed_to == (a, b)
    inline.work()
    assert inline.result(b).get(timeout=1) == 1
    assert inline.result(a).state is DEAD  # the unedited replay failed the same way


def test_an_undecodable_dead_task_is_replayed_only_with_new_args(
    inline: Broker, clock: FakeClock, tasks: Tasks
) -> None:
    payload = pickle.dumps({"args": [1, 0]})
    inline.open()
    inline.backend.enqueue(NewTask("pkl", "div", "default", 0, payload), clock.now())
    inline.work()
    assert inline.backend.get("pkl").dead_reason == "undecodable message"
    with pytest.raises(ConfigError, match="new args"):
        inline.dlq.replay(["pkl"])
    [plan] = inline.dlq.replay(["pkl"], args=[9, 3])
    inline.work()
    assert inline.result(plan.new_id).get(timeout=1) == 3


# -- purge -----------------------------------------------------------------------------


def test_purge(inline: Broker, graveyard: dict[str, list[str]], tasks: Tasks) -> None:
    ok = tasks.div.apply_async((1, 1), broker=inline)
    inline.work()
    gone = graveyard["div"][0]
    assert inline.dlq.purge([gone]) == 1
    assert inline.backend.get(gone) is None
    assert gone not in listed(inline)
    assert inline.dlq.purge([gone, ok.id, "nope"]) == 0
    assert ok.state is SUCCESS
    assert inline.dlq.count() == 5
    assert inline.backend.count_by_state()[DEAD] == 5

    ids = inline.dlq.purge_matching("task:charge", dry_run=True)
    assert sorted(ids) == sorted(graveyard["charge"])
    assert inline.dlq.count() == 5
    assert sorted(inline.dlq.purge_matching("task:charge")) == sorted(graveyard["charge"])
    assert sorted(listed(inline)) == sorted(graveyard["fetch"])
    assert inline.control.snapshot().dead_letters == 2


def test_purging_a_replayed_dead_task_keeps_its_replay(
    inline: Broker, graveyard: dict[str, list[str]]
) -> None:
    dead_id = graveyard["div"][0]
    [plan] = inline.dlq.replay([dead_id])
    assert inline.dlq.purge([dead_id]) == 1
    new = inline.backend.get(plan.new_id)
    assert new is not None and new.state is PENDING and new.replayed_from == dead_id


def test_a_replay_happens_once_unless_asked_again(inline: Broker, tasks: Tasks) -> None:
    dead_id = bury(inline, tasks.div, 1, 0)
    [first] = inline.dlq.replay([dead_id])
    assert first.new_id and not first.skipped
    # The same replay again: skipped, saying where it went; nothing enqueued.
    [second] = inline.dlq.replay([dead_id])
    assert second.skipped and second.new_id is None
    assert second.replayed_to == (first.new_id,)
    [dry] = inline.dlq.replay([dead_id], dry_run=True)
    assert dry.skipped and dry.replayed_to == (first.new_id,)
    assert inline.backend.get(dead_id).replayed_to == (first.new_id,)
    # Asked for explicitly: replayed a second time.
    [third] = inline.dlq.replay([dead_id], again=True)
    assert third.new_id and not third.skipped
    assert inline.backend.get(dead_id).replayed_to == (first.new_id, third.new_id)


def test_an_edit_that_changes_nothing_is_not_an_edit(inline: Broker, tasks: Tasks) -> None:
    dead_id = bury(inline, tasks.div, 1, 0)
    [plan] = inline.dlq.replay([dead_id], args=[1, 0], kwargs={}, note="looked fine")
    assert not plan.edited
    assert inline.backend.get(dead_id).edits == ()


def test_replay_matching_skips_what_was_replayed(inline: Broker, tasks: Tasks) -> None:
    ids = [bury(inline, tasks.div, i, 0) for i in range(3)]
    first = inline.dlq.replay_matching("task:div")
    assert sorted(p.dead_id for p in first) == sorted(ids)
    assert inline.dlq.replay_matching("task:div") == []
    again = inline.dlq.replay_matching("task:div", again=True)
    assert len(again) == 3 and all(p.new_id for p in again)


def test_two_operators_replaying_at_once_make_one_new_task(
    inline: Broker, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    dead = bury(inline, tasks.charge, 1)
    # Both read the dead record ("never replayed") before either writes.
    both_read = threading.Barrier(2, timeout=5)
    real_get = inline.backend.get
    reads = 0

    def get(task_id: str) -> Any:
        nonlocal reads
        rec = real_get(task_id)
        if task_id == dead and reads < 2:
            reads += 1
            both_read.wait()
        return rec

    monkeypatch.setattr(inline.backend, "get", get)
    plans: list[Any] = []
    threads = [
        threading.Thread(target=lambda: plans.extend(inline.dlq.replay([dead]))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    made = [p for p in plans if p.new_id is not None]
    assert len(made) == 1, plans
    (other,) = [p for p in plans if p.new_id is None]
    assert other.skipped and other.replayed_to == (made[0].new_id,)
    rec = real_get(dead)
    assert rec is not None and rec.replayed_to == (made[0].new_id,)
