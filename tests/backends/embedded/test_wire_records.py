"""Records travel with whole payloads: a record may keep a canonical payload as its
packed tail in memory (:mod:`dtq_core.packed`), but the owner's replies carry the whole
message as bytes, as every release that speaks wire version 1 reads it. So a web app,
a ``dtq`` or a console of the previous release still attaches to an owner of this one
(and the other way round) during a rolling upgrade."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args, get_type_hints

import msgspec
import pytest

from dtq_core.backends.base import Backend
from dtq_core.backends.embedded import wire
from dtq_core.codec import encode_message
from dtq_core.console_api import ConsoleAPI
from dtq_core.packed import Packed
from dtq_core.paging import TaskPage
from dtq_core.task import TaskRecord, TaskState


def packed_record(task_id: str = "t-1") -> TaskRecord:
    payload = encode_message(task_id, "app.add", [1, 2], {"k": "v"})
    rec = TaskRecord.of(
        id=task_id,
        name="app.add",
        queue="q",
        priority=0,
        payload=payload,
        state=TaskState.PENDING,
        created_at=1.0,
        enqueued_at=1.0,
    )
    assert type(rec.body) is Packed  # the case this file is about
    return rec


def as_previous_release(reply: bytes) -> Any:
    """The reply's result decoded with no schema: what a version-1 peer sees."""
    status, result, _ = msgspec.msgpack.decode(reply)
    assert status == 0
    return result


@pytest.mark.parametrize(
    "shape",
    ["record", "list", "page"],
)
def test_replies_carry_whole_payloads(shape: str) -> None:
    recs = [packed_record("t-1"), packed_record("t-2")]
    value: Any = {"record": recs[0], "list": recs, "page": TaskPage(recs, 2)}[shape]
    raw = as_previous_release(wire.ok(value))
    rows = [raw] if shape == "record" else raw["records"] if shape == "page" else raw
    for row, rec in zip(rows, recs[: len(rows)], strict=True):
        assert row["payload"] == rec.payload  # bytes, not a packed tail's array
    # The records in memory keep their packed tails: only the reply is whole.
    assert all(type(r.body) is Packed for r in recs)


def test_a_record_read_back_is_the_record_sent() -> None:
    rec = packed_record()
    status, raw, _ = wire.decode_reply(wire.ok(rec))
    assert status == 0
    back = wire.backend_methods()["get"].result.decode(raw)
    assert back == rec and back.payload == rec.payload


def test_the_wire_version_is_the_previous_releases() -> None:
    # Bumping it refuses every peer of the previous release at its hello.
    assert wire.VERSION == 1


def _mentions_record(tp: Any) -> bool:
    if tp is TaskRecord:
        return True
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, msgspec.Struct)):
        return any(_mentions_record(h) for h in get_type_hints(tp).values())
    return any(_mentions_record(a) for a in get_args(tp))


def test_every_reply_holding_records_has_a_shape_whole_knows() -> None:
    # replies.whole() handles a record, a list of records and a TaskPage: a method that
    # returns records in another shape would send packed tails a peer cannot read.
    known = {list[TaskRecord], TaskRecord | None, TaskRecord, TaskPage}
    for cls, names in (
        (Backend, wire.BACKEND_METHODS),
        (ConsoleAPI, wire.console_methods()),
    ):
        for name in names:
            ret = get_type_hints(getattr(cls, name)).get("return")
            if _mentions_record(ret):
                assert ret in known, f"{cls.__name__}.{name} returns {ret}"
