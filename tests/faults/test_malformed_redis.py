"""Malformed task records written straight into Redis never kill a worker or leave orphans.

Each field of a record is deleted, or set to a value of the wrong type, in turn (and
the whole key is replaced by a string). A claim, a reclaim at lease expiry, a retry and
a release must then either work, or dead-letter the record with reason
``malformed record`` and an error naming the field; they must never raise, and never
leave a record in no structure (an orphan that would stay PENDING forever).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.filters import parse_filter
from dtq_core.task import ErrorInfo, TaskState

pytestmark = pytest.mark.redis

S = TaskState

#: Every field of a record, and a value of the wrong type for it (None: any string is
#: a valid value of that field).
WRONG: dict[str, str | None] = {
    "id": None,
    "name": "",
    "queue": None,
    "priority": "high",
    "payload": "not a message",
    "state": "BOGUS",
    "created_at": "yesterday",
    "enqueued_at": "yesterday",
    "eta": "soon",
    "max_retries": "many",
    "time_limit": "forever",
    "attempt": "1.5",
    "deliveries": "x",
    "dedup_key": None,
    "replayed_from": None,
    "workflow": None,
    "lease_token": "abc",
    "edits": "{not json",
}
CASES = [(f, "missing") for f in WRONG] + [(f, "wrong") for f, v in WRONG.items() if v]
CASES.append(("*", "string"))


def orphans(plain: Any, be: RedisBackend, queue: str = "default") -> list[tuple[str, str]]:
    """Records of ``queue`` in no structure their state says they belong to."""
    k = be.keys.queue(queue)
    where = {
        "PENDING": ("ready", "delayed"),
        "RETRY": ("delayed",),
        "RUNNING": ("leases",),
        "DEAD": ("dead",),
        "SUCCESS": ("done",),
        "FAILED": ("done",),
        "CANCELLED": ("done",),
    }
    out = []
    prefix = be.keys.tag(queue) + ":t:"
    for key in plain.scan_iter(match=prefix.replace("{", "\\{").replace("}", "\\}") + "*"):
        tid = key[len(prefix) :]
        if ":" in tid:
            continue  # a kept copy (":malformed")
        if plain.type(key) != "hash":
            out.append((tid, "not a hash"))
            continue
        st = plain.hget(key, "state")
        # A record without a valid state belongs wherever it is (a sweep deals with it).
        zsets = where.get(st, ("ready", "delayed", "leases", "dead", "done"))
        if not any(plain.zscore(k[z], tid) is not None for z in zsets):
            out.append((tid, str(st)))
    return out


def corrupt(plain: Any, be: RedisBackend, tid: str, field: str, how: str) -> None:
    key = be.keys.record("default", tid)
    if how == "string":
        plain.delete(key)
        plain.set(key, "garbage")
    elif how == "missing":
        plain.hdel(key, field)
    else:
        plain.hset(key, field, WRONG[field])


def send(be: RedisBackend, tid: str, now: float) -> None:
    be.enqueue(NewTask(tid, "fa.rec", "default", 0, b'{"v":1,"args":[1],"kwargs":{}}'), now)


def check_outcome(be: RedisBackend, plain: Any, tid: str, field: str) -> None:
    """The record works, or it is dead-lettered as malformed naming the field."""
    rec = be.get(tid)  # never raises, whatever the record holds
    assert rec is not None
    if rec.state is S.DEAD and rec.dead_reason == "malformed record":
        assert rec.error is not None
        assert field == "*" or field in rec.error.message, rec.error
        assert rec.error.type == "MalformedRecord"
    be.list_tasks(parse_filter(""), time.time(), limit=100)  # listing never raises
    assert orphans(plain, be) == []


@pytest.mark.parametrize(("field", "how"), CASES)
def test_claim_of_a_malformed_record(be: RedisBackend, plain: Any, field: str, how: str) -> None:
    now = time.time()
    send(be, "bad", now)
    send(be, "good", now)
    corrupt(plain, be, "bad", field, how)
    got = be.claim(None, "w1", 30.0, 10, now)
    assert "good" in {d.task_id for d in got}
    check_outcome(be, plain, "bad", field)
    for d in got:  # what was claimed settles normally
        assert be.ack(d.task_id, d.token, 1, now)
    assert orphans(plain, be) == []


@pytest.mark.parametrize(("field", "how"), CASES)
def test_reclaim_of_a_malformed_record(be: RedisBackend, plain: Any, field: str, how: str) -> None:
    now = time.time()
    send(be, "bad", now)
    (d,) = be.claim(None, "w1", 1.0, 1, now)
    corrupt(plain, be, "bad", field, how)
    be.reclaim_expired(now + 5, max_deliveries=5)
    check_outcome(be, plain, "bad", field)
    # A later claim of whatever is left never raises either.
    be.claim(None, "w2", 30.0, 10, now + 6)
    assert orphans(plain, be) == []
    assert not be.ack(d.task_id, d.token, 1, now + 6)


@pytest.mark.parametrize(("field", "how"), CASES)
def test_retry_and_release_of_a_malformed_record(
    be: RedisBackend, plain: Any, field: str, how: str
) -> None:
    now = time.time()
    send(be, "a", now)
    send(be, "b", now)
    da, db = sorted(be.claim(None, "w1", 30.0, 2, now), key=lambda d: d.task_id)
    corrupt(plain, be, "a", field, how)
    corrupt(plain, be, "b", field, how)
    be.fail(da.task_id, da.token, ErrorInfo("E", "boom"), now, retry_at=now)
    be.release(db.task_id, db.token, now, note="requeued")
    be.promote_due(now + 1)
    be.claim(None, "w2", 30.0, 10, now + 1)
    # A record the settle could not read (no state, or not a hash) stays leased: the
    # reclaim at its lease's end dead-letters it.
    be.reclaim_expired(now + 60, max_deliveries=5)
    check_outcome(be, plain, "a", field)
    check_outcome(be, plain, "b", field)


def test_the_sweep_puts_orphans_back_and_dead_letters_the_unusable(
    be: RedisBackend, plain: Any
) -> None:
    now = time.time()
    for tid in ("p", "r", "d", "s", "bad", "ok", "str"):
        send(be, tid, now)
    (dr,) = be.claim(["default"], "w", 30.0, 1, now)  # "p" is first: claim the rest by id
    claimed = {dr.task_id: dr}
    for d in be.claim(["default"], "w", 30.0, 6, now):
        claimed[d.task_id] = d
    # Make orphans the way a half-done script (or a hand edit) would.
    k = be.keys.queue("default")
    be.bury(claimed["d"].task_id, claimed["d"].token, ErrorInfo("E", "x"), "r", now)
    be.ack(claimed["s"].task_id, claimed["s"].token, 1, now)
    be.release(claimed["p"].task_id, claimed["p"].token, now)
    be.release(claimed["bad"].task_id, claimed["bad"].token, now)
    plain.zrem(k["ready"], "p", "bad")
    plain.zrem(k["leases"], "r")
    plain.zrem(k["dead"], "d")
    plain.zrem(k["done"], "s")
    plain.hset(be.keys.record("default", "bad"), "priority", "high")
    plain.delete(be.keys.record("default", "str"))
    plain.set(be.keys.record("default", "str"), "garbage")
    assert {t for t, _ in orphans(plain, be)} == {"p", "r", "d", "s", "bad", "str"}

    fixed = dict(be.sweep_orphans(now))
    assert orphans(plain, be) == []
    assert fixed["p"] == "PENDING: made ready again"
    assert fixed["r"].startswith("RUNNING: leased again")
    assert fixed["d"] == "DEAD: indexed again"
    assert fixed["s"] == "SUCCESS: indexed to expire"
    assert "priority" in fixed["bad"] and "str" in fixed
    assert "ok" not in fixed
    bad = be.get("bad")
    assert bad is not None and bad.state is S.DEAD and bad.dead_reason == "malformed record"
    # The orphan runs again; a second sweep finds nothing.
    assert "p" in {d.task_id for d in be.claim(None, "w2", 30.0, 10, now)}
    assert be.sweep_orphans(now) == []
    (tr,) = [t for t in be.reclaim_expired(now + 31, 5) if t.task_id == "r"]
    assert tr.new is S.PENDING


@pytest.mark.parametrize("raw", ["no-bar-here", "soon|v", "12.5"])
@pytest.mark.parametrize("kind", ["string", "hash"])
def test_a_malformed_key_value_reads_as_absent(
    be: RedisBackend, plain: Any, raw: str, kind: str
) -> None:
    now = time.time()
    for key in ("dedup:x", "bucket:y", "cas:z"):
        full = be.keys.kv(key)
        plain.delete(full)
        if kind == "string":
            plain.set(full, raw)
        else:
            plain.hset(full, "f", raw)
    # Dedup, rate limits and breakers run on these keys: garbage must not wedge them.
    assert be.get_key("dedup:x", now) is None
    assert be.set_if_absent("dedup:x", "t1", 60.0, now) is None
    assert be.get_key("dedup:x", now) == "t1"
    assert be.reserve("bucket:y", 10.0, 1, now) == 0.0
    assert be.compare_and_set("cas:z", None, "closed", None, now)
