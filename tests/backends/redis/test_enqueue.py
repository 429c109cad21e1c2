"""Enqueues on one Redis: one round trip, with the owner keys claimed by the same script.

The owner key of a task id (``{prefix:id:ID}`` = ``claimed_at|queue``) keeps an id
unique across queues and finds a task by id alone. On one Redis the queue's script
claims it (``ENQUEUE`` given the owner keys); these tests check that nothing it
protects is lost: an id held by another queue is refused with nothing written, a
stale claim is taken over, a fresh one is honoured, a batch is refused whole, and a
restart that forgot the scripts costs a reload, not an error. The cluster's two-step
path is in ``test_cluster.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.backends.redis.enqueue import OWNER_GRACE_S, enqueue_args
from dtq_core.backends.redis.lua_common import CORE
from dtq_core.errors import BackendError
from dtq_core.task import TaskState
from tests.backends.redis.test_batching import RoundTrips

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

S = TaskState


def new(tid: str, queue: str = "q", payload: bytes = b"{}", **kw: Any) -> NewTask:
    return NewTask(tid, "app.x", queue, 0, payload, **kw)


def snapshot(plain: Any, be: RedisBackend, queue: str) -> dict[str, Any]:
    """What an enqueue writes in ``queue``: records, ready set, counts, events."""
    k = be.keys.queue(queue)
    return {
        "ready": plain.zrange(k["ready"], 0, -1),
        "all": plain.zrange(k["all"], 0, -1),
        "counts": plain.hgetall(k["counts"]),
        "events": plain.xlen(k["events"]),
        "records": sorted(plain.scan_iter(match=k["rec"] + "*")),
    }


def test_a_single_enqueue_is_one_round_trip(
    be: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    be.enqueue(new("warm"), now)  # the queue is listed once per process
    be.enqueue(new("warm2"), now)  # and the lane connects once
    be.enqueue_many([new("warm3")], now)  # as the pool does
    rt = RoundTrips(monkeypatch)
    with rt:
        be.enqueue(new("one"), now)
    assert rt.count == 1
    with rt:
        be.enqueue_many([new(f"b{i}") for i in range(5)], now)
    assert rt.count == 1
    assert plain.get(be.keys.owner("one")) == f"{now!r}|q"
    rec = be.get("one")
    assert rec is not None and (rec.queue, rec.state, rec.payload) == ("q", S.PENDING, b"{}")


def test_an_id_held_by_another_queue_is_refused_with_nothing_written(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    be.enqueue(new("same", "a", b"first"), now)
    be.enqueue(new("seed", "b"), now)
    before = snapshot(plain, be, "b")
    with pytest.raises(BackendError, match=r"task id 'same' exists in queue 'a'.*queue 'b'"):
        be.enqueue(new("same", "b", b"second"), now)
    assert snapshot(plain, be, "b") == before
    assert plain.get(be.keys.owner("same")) == f"{now!r}|a"
    rec = be.get("same")
    assert rec is not None and (rec.queue, rec.payload) == ("a", b"first")


def test_a_batch_with_one_held_id_is_refused_whole_and_its_claims_undone(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    be.enqueue(new("taken", "a"), now)
    be.enqueue(new("seed", "b"), now)
    before = snapshot(plain, be, "b")
    batch = [new("fresh-1", "b"), new("taken", "b"), new("fresh-2", "b")]
    with pytest.raises(BackendError, match="'taken' exists in queue 'a'"):
        be.enqueue_many(batch, now)
    assert snapshot(plain, be, "b") == before
    assert plain.get(be.keys.owner("fresh-1")) is None  # claimed, then given back
    assert plain.get(be.keys.owner("fresh-2")) is None
    be.enqueue_many([new("fresh-1", "b"), new("fresh-2", "b")], now)
    assert {be.get_state("fresh-1"), be.get_state("fresh-2")} == {S.PENDING}


def test_a_stale_claim_is_taken_over_and_a_fresh_one_honoured(be: RedisBackend, plain: Any) -> None:
    """A claim with no record behind it: a producer died between claim and script
    (the cluster path, or an older version), or an expiry died before deleting it."""
    now = time.time()
    plain.set(be.keys.owner("orphan"), f"{now - OWNER_GRACE_S - 1!r}|a")
    be.enqueue(new("orphan", "b", b"mine"), now)
    assert plain.get(be.keys.owner("orphan")) == f"{now!r}|b"
    rec = be.get("orphan")
    assert rec is not None and (rec.queue, rec.payload) == ("b", b"mine")
    # A claim younger than the grace may have its script on the way: refused.
    plain.set(be.keys.owner("busy"), f"{now - 1!r}|a")
    with pytest.raises(BackendError, match="exists in queue 'a'"):
        be.enqueue(new("busy", "b"), now)
    assert be.get("busy") is None
    # An old claim whose queue holds the record is live, however old.
    be.enqueue(new("old", "a"), now - 3600)
    with pytest.raises(BackendError, match="exists in queue 'a'"):
        be.enqueue(new("old", "b"), now)


def test_the_same_id_twice_in_its_own_queue_is_a_duplicate(be: RedisBackend) -> None:
    now = time.time()
    be.enqueue(new("dup"), now)
    with pytest.raises(BackendError, match="dup"):
        be.enqueue(new("dup", payload=b"again"), now)
    rec = be.get("dup")
    assert rec is not None and rec.payload == b"{}"
    assert sum(q.ready for q in be.queue_stats()) == 1


def test_scripts_forgotten_by_a_restart_are_loaded_again(be: RedisBackend, plain: Any) -> None:
    now = time.time()
    be.enqueue(new("before"), now)
    plain.script_flush()  # what a restarted server has: no scripts
    be.enqueue(new("after"), now)
    assert be.get_state("after") is S.PENDING
    assert plain.get(be.keys.owner("after")) == f"{now!r}|q"


def test_a_batch_over_two_queues_still_claims_first(be: RedisBackend, plain: Any) -> None:
    """Several queues on one Redis: ids claimed first, so one held id refuses all."""
    now = time.time()
    be.enqueue(new("held", "a"), now)
    with pytest.raises(BackendError, match="'held' exists in queue 'a'"):
        be.enqueue_many([new("x1", "b"), new("held", "c")], now)
    assert be.get("x1") is None and plain.get(be.keys.owner("x1")) is None
    be.enqueue_many([new("x1", "b"), new("x2", "c")], now)
    assert [be._q("x1"), be._q("x2")] == ["b", "c"]


def test_optional_fields_are_stored_only_when_set(be: RedisBackend, plain: Any) -> None:
    now = time.time()
    be.enqueue(new("bare", eta=now + 60, time_limit=2.5), now)
    be.enqueue(new("full", dedup_key="k1", workflow="wf", max_retries=4), now)
    bare = plain.hgetall(be.keys.record("q", "bare"))
    assert not {"dedup_key", "replayed_from", "workflow", "edits"} & set(bare)
    assert (bare["eta"], bare["time_limit"]) == (repr(now + 60), "2.5")
    rec = be.get("bare")
    assert rec is not None
    assert (rec.state, rec.eta, rec.time_limit, rec.dedup_key) == (S.PENDING, now + 60, 2.5, None)
    full = be.get("full")
    assert full is not None
    assert (full.dedup_key, full.workflow, full.max_retries) == ("k1", "wf", 4)
    # A record without the optional fields is a sound record: claimed and settled.
    (d,) = be.claim(["q"], "w1", 30.0, 1, now)
    assert d.task_id == "full"


def test_numbers_travel_as_strings_and_read_back_as_numbers(be: RedisBackend, plain: Any) -> None:
    # Priority and max_retries reach the script as strings (no float formatting in
    # Redis): stored as the same digits, read back as numbers, ordering unchanged.
    now = time.time()
    be.enqueue(NewTask("low", "app.x", "q", 7, b"{}", max_retries=12), now)
    be.enqueue(NewTask("high", "app.x", "q", -3, b"{}"), now)
    be.enqueue(NewTask("mid", "app.x", "q", 0, b"{}", max_retries=1), now)
    # The record leaves out the fields holding their first value (attempt, deliveries,
    # lease_token, priority 0, an empty time limit; id and queue are the key's).
    first = {"name": "app.x", "payload": "{}", "state": "PENDING", "enqueued_at": repr(now)}
    assert plain.hgetall(be.keys.record("q", "low")) == {
        **first,
        "max_retries": "12",
        "priority": "7",
    }
    assert plain.hgetall(be.keys.record("q", "mid")) == {**first, "max_retries": "1"}
    rec = be.get("low")
    assert rec is not None and (rec.priority, rec.max_retries, rec.attempt) == (7, 12, 0)
    assert [d.task_id for d in be.claim(["q"], "w1", 30.0, 3, now)] == ["high", "mid", "low"]


@pytest.mark.parametrize(
    ("now", "second"),
    [(1_700_000_000.75, 1_700_000_000), (1e-05, 0), (42.0, 42)],
    ids=["usual", "exponent", "whole"],
)
def test_an_enqueue_counts_in_the_second_of_its_time(
    be: RedisBackend, plain: Any, now: float, second: int
) -> None:
    # The second's key is cut from the time's digits; a time Python writes otherwise
    # (1e-05) gives the same key by arithmetic.
    be.enqueue(new("t1"), now)
    key = be.keys.queue("q")["sec"] + str(second)
    assert plain.hgetall(key) == {"enqueued": "1"}
    assert 0 < plain.ttl(key) <= 120
    assert be.rate_series(second + 1.0, 1)["q"]["enqueued"] == [1]
    assert be.totals()["q"]["enqueued"] == 1


def test_a_batch_with_a_duplicate_writes_no_record(be: RedisBackend, plain: Any) -> None:
    # Every id is checked before the first record is written: no half batch.
    now = time.time()
    be.enqueue(new("dup"), now)
    before = snapshot(plain, be, "q")
    with pytest.raises(BackendError, match="dup"):
        be.enqueue_many([new("n1"), new("dup", payload=b"again"), new("n2")], now)
    assert snapshot(plain, be, "q") == before
    assert be.get("n1") is None and be.get("n2") is None
    assert plain.get(be.keys.owner("n1")) is None and plain.get(be.keys.owner("n2")) is None
    assert plain.get(be.keys.owner("dup")) == f"{now!r}|q"
    rec = be.get("dup")
    assert rec is not None and rec.payload == b"{}"


def test_a_batch_bumps_each_counter_once_by_its_size(be: RedisBackend, plain: Any) -> None:
    now = 1_700_000_000.5
    be.enqueue(new("first"), now)
    be.enqueue_many([new(f"b{i}") for i in range(5)], now)
    k = be.keys.queue("q")
    assert plain.hget(k["counts"], "PENDING") == "6"
    assert plain.hgetall(k["sec"] + "1700000000") == {"enqueued": "6"}
    assert 0 < plain.ttl(k["sec"] + "1700000000") <= 120
    assert be.totals()["q"]["enqueued"] == 6
    assert plain.xlen(k["events"]) == 6
    assert plain.zrange(k["ready"], 0, -1) == ["first", *(f"b{i}" for i in range(5))]


def test_enqueue_writes_the_record_replays_write(be: RedisBackend, plain: Any) -> None:
    """``ENQUEUE`` writes its records itself; ``create`` (replays) must write the same."""
    now = time.time()
    tasks = [
        new("plain"),
        new("optional", eta=now + 60, time_limit=2.5, dedup_key="k", workflow="wf"),
    ]
    be.enqueue_many(tasks, now)
    # A single enqueue to a queue this process listed already takes ENQUEUE_ONE.
    singles = [
        new("single"),
        NewTask("single-opt", "app.x", "q", -2, b"{}", now + 9, time_limit=1.0, workflow="w"),
    ]
    for t in singles:
        be.enqueue(t, now)
    tasks += singles
    create = plain.register_script(
        CORE
        + """
local b = 4
local a = {}
for i = 1, 11 do a[i] = ARGV[b + i] end
if not create(a, ARGV[1], ARGV[2]) then return 0 end
return 1
"""
    )
    for t in tasks:
        twin = NewTask(
            "twin-" + t.id, t.name, t.queue, t.priority, t.payload, t.eta, t.max_retries,
            t.time_limit, t.dedup_key, t.replayed_from, t.workflow,
        )  # fmt: skip
        keys, argv = enqueue_args(be.keys, "q", [twin], now, be.maxlen, owned=False)
        assert create(keys=keys, args=argv) == 1
        ours = plain.hgetall(be.keys.record("q", t.id))
        theirs = plain.hgetall(be.keys.record("q", twin.id))
        assert ours == theirs and "id" not in ours


def test_an_id_twice_in_one_batch_is_refused_with_nothing_written(
    be: RedisBackend, plain: Any
) -> None:
    be.enqueue(new("seed"), time.time())
    before = snapshot(plain, be, "q")
    with pytest.raises(BackendError, match="'twice' appears twice"):
        be.enqueue_many([new("once"), new("twice"), new("twice")], time.time())
    assert snapshot(plain, be, "q") == before
    assert plain.get(be.keys.owner("once")) is None


def test_a_batch_larger_than_one_probe_finds_a_duplicate_and_an_idle_worker(
    be: RedisBackend, plain: Any
) -> None:
    # The records are probed 200 at a time, the idle set with the last ones.
    now = time.time()
    be.enqueue(new("old-150"), now)
    with pytest.raises(BackendError, match="old-150"):
        be.enqueue_many([new(f"old-{i}") for i in range(450)], now)
    assert plain.hget(be.keys.queue("q")["counts"], "PENDING") == "1"
    # A worker registered idle on an empty queue: the batch's first task is handed to
    # it, the rest wait ready.
    plain.zadd(be.keys.queue("r")["idle"], {"30|w1": now + 60})
    be.enqueue_many([new(f"n-{i}", "r") for i in range(450)], now)
    assert [e.split("\n")[0] for e in plain.lrange(be.keys.inbox("r", "w1"), 0, -1)] == ["n-0"]
    assert plain.zcard(be.keys.queue("r")["ready"]) == 449
    assert be.get_state("n-0") is S.RUNNING
