"""Malformed records written straight into the embedded store's log.

Each record has a valid frame (length, type, LSN, CRC), so recovery reads it; its body
is what is wrong: a task with each field missing or of the wrong type in turn, a body
that is not JSON (or msgpack), a claim of a task that does not exist, an unknown call,
tag or record type. Both formats are covered: the version-1 JSON records an older
release wrote, and the typed version-2 records. Recovery must never fail on one: a task
it can name is dead-lettered as ``malformed record`` with an error naming the field,
anything else is skipped and counted (``malformed_records`` in the store's figures), and
every good task survives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dtq_core.backends.base import NewTask
from dtq_core.backends.changes import TaskSpec
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.backends.embedded.oplog import OP_CALL, OP_CLAIM, OP_ENQ, RECORD_V2
from dtq_core.backends.embedded.wal import WriteAheadLog
from dtq_core.clock import FakeClock
from dtq_core.task import TaskState

S = TaskState
NOW = 1_700_000_000.0

GOOD = {
    "id": "t",
    "name": "fa.rec",
    "queue": "default",
    "priority": 0,
    "payload": 'j{"v":1,"args":[1],"kwargs":{}}',
    "eta": None,
    "max_retries": 0,
    "time_limit": None,
    "dedup_key": None,
    "replayed_from": None,
    "workflow": None,
}
WRONG: dict[str, Any] = {
    "name": 5,
    "queue": ["q"],
    "priority": "high",
    "payload": 123,
    "eta": "soon",
    "max_retries": "many",
    "time_limit": "forever",
    "dedup_key": 7,
    "replayed_from": 8,
    "workflow": {"x": 1},
}
#: Fields whose absence or wrong value makes the task unusable (it is dead-lettered).
CASES = [(f, "missing") for f in GOOD if f != "id"] + [(f, "wrong") for f in WRONG]


def _open(d: Path) -> EmbeddedBackend:
    b = EmbeddedBackend(f"embedded://{d}", FakeClock(NOW))
    b.open()
    return b


def _append(d: Path, records: list[tuple[int, bytes]]) -> None:
    wal = WriteAheadLog(d / "wal", "always", 50, 64 * 1024 * 1024)
    try:
        for rtype, body in records:
            wal.append(rtype, body)
    finally:
        wal.close()


def _enq(task: dict[str, Any]) -> bytes:
    return json.dumps([task, NOW]).encode()


def test_each_field_missing_or_wrong_dead_letters_the_task(tmp_path: Path) -> None:
    d = tmp_path / "data"
    b = _open(d)
    b.enqueue(NewTask("good", "fa.rec", "default", 0, b'{"v":1,"args":[0],"kwargs":{}}'), NOW)
    b.close()
    records = []
    for k, (field, how) in enumerate(CASES):
        task = {**GOOD, "id": f"bad{k}"}
        if how == "missing":
            del task[field]
        else:
            task[field] = WRONG[field]
        records.append((OP_ENQ, _enq(task)))
    _append(d, records)

    b = _open(d)
    try:
        for k, (field, _) in enumerate(CASES):
            rec = b.get(f"bad{k}")
            assert rec is not None, field
            assert rec.state is S.DEAD and rec.dead_reason == "malformed record", rec
            assert rec.error is not None and field in rec.error.message, rec.error
        good = b.get("good")
        assert good is not None and good.state is S.PENDING
        (d0,) = b.claim(None, "w", 10.0, 5, NOW)
        assert d0.task_id == "good"
    finally:
        b.close()
    # A second recovery (from the checkpoint written at close) agrees.
    b = _open(d)
    try:
        rec = b.get("bad0")
        assert rec is not None and rec.state is S.DEAD
    finally:
        b.close()


@pytest.mark.parametrize(
    ("what", "rtype", "body"),
    [
        ("not JSON", OP_ENQ, b"{not json"),
        ("a task without an id", OP_ENQ, _enq({k: v for k, v in GOOD.items() if k != "id"})),
        ("a body of the wrong shape", OP_ENQ, b'"just a string"'),
        ("a claim of an unknown task", OP_CLAIM, b'[[["nobody", 1, "w", 1.0]], 1.0]'),
        ("an unknown call", OP_CALL, b'["no_such_method", []]'),
        ("an unknown record type", 200, b"[]"),
    ],
)
def test_an_unusable_record_is_skipped_and_counted(
    tmp_path: Path, what: str, rtype: int, body: bytes
) -> None:
    d = tmp_path / "data"
    b = _open(d)
    b.enqueue(NewTask("good", "fa.rec", "default", 0, b'{"v":1,"args":[0],"kwargs":{}}'), NOW)
    b.close()
    _append(d, [(rtype, body)])
    b = _open(d)
    try:
        assert b.info()["malformed_records"] == 1, what
        good = b.get("good")
        assert good is not None and good.state is S.PENDING
        b.enqueue(NewTask("after", "fa.rec", "default", 0, b"{}"), NOW)  # still writable
    finally:
        b.close()


# -- version-2 records (msgpack, typed) ------------------------------------------------

V2_FIELDS = list(TaskSpec.__struct_fields__)
V2_GOOD = {**GOOD, "payload": b'{"v":1,"args":[1],"kwargs":{}}'}
V2_WRONG = {**WRONG, "payload": "text, not bytes"}


def _enq_v2(*tasks: dict[str, Any]) -> bytes:
    rows = [[t[f] for f in V2_FIELDS if f in t] for t in tasks]
    return msgspec.msgpack.encode(["enqueue", NOW, rows])


def test_v2_each_field_wrong_dead_letters_the_task_and_keeps_its_batch(tmp_path: Path) -> None:
    d = tmp_path / "data"
    _open(d).close()
    records = []
    for k, field in enumerate(V2_WRONG):
        bad = {**V2_GOOD, "id": f"bad{k}", field: V2_WRONG[field]}
        good = {**V2_GOOD, "id": f"good{k}"}
        records.append((RECORD_V2, _enq_v2(good, bad)))  # one record, one bad task in it
    # A task cut short (fields missing at the end) is named too.
    records.append((RECORD_V2, _enq_v2({k: v for k, v in V2_GOOD.items() if k != "workflow"})))
    _append(d, records)
    b = _open(d)
    try:
        for k, field in enumerate(V2_WRONG):
            rec = b.get(f"bad{k}")
            assert rec is not None and rec.state is S.DEAD, field
            assert rec.dead_reason == "malformed record"
            assert rec.error is not None and field in rec.error.message, (field, rec.error)
            good = b.get(f"good{k}")
            assert good is not None and good.state is S.PENDING, field
        cut = b.get("t")
        assert cut is not None and cut.state is S.DEAD
        assert cut.error is not None and "'workflow' is missing" in cut.error.message
        assert "malformed_records" not in b.info()
    finally:
        b.close()


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("not msgpack", b"\xc1\xc1\xc1"),
        ("an unknown tag", msgspec.msgpack.encode(["frobnicate", 1.0])),
        ("a body of the wrong shape", msgspec.msgpack.encode({"enqueue": 1})),
        ("a task whose id is a number", _enq_v2({**V2_GOOD, "id": 5})),
        ("a claim of an unknown task",
         msgspec.msgpack.encode(["claim", NOW, "w", 9.0, [["x", 1]]])),
        ("an ack with a text token", msgspec.msgpack.encode(["ack", NOW, [["good", "1", None]]])),
        ("a fail of an error without a type", msgspec.msgpack.encode(
            ["fail", NOW, "good", 1, {"message": "m"}, None, None])),
    ],
)  # fmt: skip
def test_v2_unusable_record_is_skipped_and_counted(tmp_path: Path, what: str, body: bytes) -> None:
    d = tmp_path / "data"
    b = _open(d)
    b.enqueue(NewTask("good", "fa.rec", "default", 0, b'{"v":1,"args":[0],"kwargs":{}}'), NOW)
    b.close()
    _append(d, [(RECORD_V2, body)])
    b = _open(d)
    try:
        assert b.info()["malformed_records"] == 1, what
        good = b.get("good")
        assert good is not None and good.state is S.PENDING, what
        b.enqueue(NewTask("after", "fa.rec", "default", 0, b"{}"), NOW)  # still writable
    finally:
        b.close()
