"""Task records on Redis: the fields a record leaves out, and records of the earlier layout.

A record leaves out what holds its first value (id and queue are its key's, created_at
is enqueued_at; attempt, deliveries, lease_token and priority 0, an empty time limit).
Records written whole, as earlier versions wrote every record, are still read, claimed,
settled, listed and replayed by this one.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.task import ErrorInfo, TaskState

pytestmark = pytest.mark.redis

S = TaskState
PAYLOAD = b'{"v":1,"args":[1],"kwargs":{}}'


def write_earlier(plain: Any, be: RedisBackend, tid: str, queue: str, now: float) -> None:
    """Task ``tid`` as the earlier ENQUEUE stored it: every field, and its indexes."""
    k = be.keys.queue(queue)
    plain.hset(
        be.keys.record(queue, tid),
        mapping={
            "id": tid,
            "name": "app.old",
            "queue": queue,
            "priority": "0",
            "payload": PAYLOAD,
            "state": "PENDING",
            "created_at": repr(now - 5),
            "enqueued_at": repr(now),
            "max_retries": "2",
            "time_limit": "7.5",
            "attempt": "0",
            "deliveries": "0",
            "lease_token": "0",
        },
    )
    plain.set(be.keys.owner(tid), f"{now!r}|{queue}")
    plain.zadd(k["all"], {tid: now})
    plain.zadd(k["ready"], {tid: plain.incr(k["seq"])})
    plain.hincrby(k["counts"], "PENDING", 1)
    plain.sadd(be.keys.queues, queue)


def test_a_record_of_the_earlier_layout_is_read_claimed_and_settled(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    write_earlier(plain, be, "old-1", "q", now)
    write_earlier(plain, be, "old-2", "q", now)
    rec = be.get("old-1")
    assert rec is not None
    assert (rec.id, rec.queue, rec.name, rec.state) == ("old-1", "q", "app.old", S.PENDING)
    assert (rec.created_at, rec.enqueued_at) == (pytest.approx(now - 5), pytest.approx(now))
    assert (rec.time_limit, rec.max_retries, rec.attempt) == (7.5, 2, 0)
    d1, d2 = be.claim(["q"], "w1", 30.0, 2, now)
    assert (d1.task_id, d1.payload, d1.attempt, d1.deliveries) == ("old-1", PAYLOAD, 1, 1)
    assert (d1.time_limit, d1.max_retries) == (7.5, 2)
    be.ack(d1.task_id, d1.token, {"ok": 1}, now)
    be.fail(d2.task_id, d2.token, ErrorInfo("E", "boom"), now, retry_at=now + 10)
    got = {r.id: r for r in be.list_tasks(parse_filter("queue:q"), now, limit=10)}
    assert got["old-1"].state is S.SUCCESS and got["old-1"].result == {"ok": 1}
    assert got["old-2"].state is S.RETRY and got["old-2"].attempt == 1


def test_a_new_record_holds_only_what_differs_from_its_first_values(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    be.enqueue(NewTask("seed", "app.x", "q", 0, b"{}"), now)  # the queue is listed
    be.enqueue(NewTask("n1", "app.x", "q", 0, PAYLOAD, max_retries=3), now)
    assert set(plain.hkeys(be.keys.record("q", "n1"))) == {
        "name",
        "payload",
        "state",
        "enqueued_at",
        "max_retries",
    }
    rec = be.get("n1")
    assert rec is not None
    assert (rec.id, rec.queue, rec.priority, rec.time_limit) == ("n1", "q", 0, None)
    assert rec.created_at == rec.enqueued_at == pytest.approx(now)
    assert (rec.attempt, rec.deliveries, rec.lease_token) == (0, 0, 0)
    (d,) = [x for x in be.claim(["q"], "w1", 30.0, 2, now) if x.task_id == "n1"]
    assert (d.attempt, d.deliveries, d.time_limit, d.max_retries) == (1, 1, None, 3)
    assert d.token > 0
    be.ack(d.task_id, d.token, None, now)
    assert be.get_state("n1") is S.SUCCESS


def test_a_replay_of_an_earlier_dead_record_is_written_in_the_new_layout(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    write_earlier(plain, be, "old-dead", "q", now)
    (d,) = be.claim(["q"], "w1", 30.0, 1, now)
    be.bury(d.task_id, d.token, ErrorInfo("E", "boom"), "gave up", now)
    dead = be.get("old-dead")
    assert dead is not None and dead.state is S.DEAD
    new_id = "replayed-1"
    twin = NewTask(
        new_id, dead.name, dead.queue, dead.priority, dead.payload, None, dead.max_retries,
        dead.time_limit, replayed_from="old-dead",
    )  # fmt: skip
    assert be.replay("old-dead", twin, None, now + 1)
    fields = plain.hgetall(be.keys.record("q", new_id))
    assert "attempt" not in fields and "id" not in fields
    assert fields["replayed_from"] == "old-dead" and fields["time_limit"] == "7.5"
    rec = be.get(new_id)
    assert rec is not None and rec.state is S.PENDING and rec.replayed_from == "old-dead"


HOSTILE_QUEUE = "q[1]*?\\x"


def test_a_queue_name_with_glob_characters_and_ids_holding_t_are_listed_swept_and_indexed(
    be: RedisBackend, plain: Any, make_be: Any
) -> None:
    """The SCANs over a queue's records match that queue alone, whatever its name holds,
    and an id is its key with the head cut off, whatever the id holds."""
    now = time.time()
    ids = ["plain", "has:t:inside", "star*id"]
    for tid in ids:
        be.enqueue(NewTask(tid, "app.x", HOSTILE_QUEUE, 0, b"{}"), now)
    be.enqueue(NewTask("other", "app.x", "q11x", 0, b"{}"), now)  # the glob would match
    key = be.keys.record(HOSTILE_QUEUE, "plain")
    plain.set(key + ":malformed", "a kept copy, not a record")  # passed over
    flt = TaskFilter(queue=HOSTILE_QUEUE)  # (the filter language reads '\\' as an escape)
    assert sorted(r.id for r in be.list_tasks(flt, now, limit=10)) == sorted(ids)
    assert be.sweep_orphans(now) == []  # every record is where its state says
    # The listing set rebuilt from the records, as for a queue an older version left.
    plain.delete(be.keys.queue(HOSTILE_QUEUE)["all"])
    fresh = make_be()
    page = fresh.task_page(flt, now + 1, limit=10)
    assert sorted(r.id for r in page.records) == sorted(ids)
    assert be.find_ids("has:t", 10) == ["has:t:inside"]
