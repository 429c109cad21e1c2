"""Packed payloads: a record keeps a canonical payload's tail and reads the exact bytes."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core import packed
from dtq_core.backends.changes import Enqueue, TaskSpec
from dtq_core.backends.memory_state import StateMachine
from dtq_core.codec import encode_message
from dtq_core.packed import Packed, pack, unpack
from dtq_core.task import TaskRecord, TaskState

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**63), 2**63 - 1),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
IDS = st.text(max_size=30)


def record(task_id: str, name: str, payload: bytes) -> TaskRecord:
    return TaskRecord.of(task_id, name, "default", 0, payload, TaskState.PENDING, 1.0, 1.0)


@settings(max_examples=300)
@given(IDS, IDS, st.binary(max_size=80))
def test_any_payload_reads_back_byte_identical(task_id: str, name: str, raw: bytes) -> None:
    # Arbitrary bytes, and bytes that start like a canonical message of this task (the
    # head then anything): the record reads exactly what it was given.
    start = packed.head(task_id, name)
    for payload in (raw, (start or b"") + raw, b'{"v":1,"id":"' + raw):
        rec = record(task_id, name, payload)
        assert rec.payload == payload
        assert type(rec.payload) is bytes
        assert unpack(task_id, name, pack(task_id, name, payload)) == payload
        assert rec.copy().payload == payload


@settings(max_examples=300)
@given(IDS, IDS, st.lists(JSON, max_size=3), st.dictionaries(st.text(), JSON, max_size=3))
def test_canonical_messages_are_packed(task_id: str, name: str, args: Any, kwargs: Any) -> None:
    payload = encode_message(task_id, name, args, kwargs)
    rec = record(task_id, name, payload)
    assert rec.payload == payload
    encodable = packed.head(task_id, name) is not None
    escaped = any(c in task_id + name for c in '"\\') or any(ord(c) < 32 for c in task_id + name)
    assert (type(rec.body) is Packed) == (encodable and not escaped)
    # Another task's message (another id) is kept whole.
    other = record(task_id + "x", name, payload)
    assert other.body is payload and other.payload == payload


@given(IDS, IDS, st.binary(max_size=40))
def test_the_socket_carries_either_form(task_id: str, name: str, tail: bytes) -> None:
    enc, dec = msgspec.msgpack.encode, msgspec.msgpack.Decoder(TaskRecord).decode
    for payload in (tail, (packed.head(task_id, name) or b"") + tail):
        rec = record(task_id, name, payload)
        back = dec(enc(rec))
        assert back.payload == payload and back == rec
        assert type(back.body) is type(rec.body)


def test_equal_tails_share_one_object() -> None:
    a = record("a1", "t", encode_message("a1", "t", [], {}))
    b = record("b2", "t", encode_message("b2", "t", [], {}))
    assert type(a.body) is Packed and a.body is b.body
    assert a.body.tail == b'"args":[],"kwargs":{}}'
    assert a.copy().body is a.body
    assert copy.deepcopy(a) == a


def test_the_table_of_tails_is_bounded() -> None:
    for i in range(packed.MAX_TAILS + 10):
        pack("i", "t", encode_message("i", "t", [i], {}))
    assert len(packed._tails) <= packed.MAX_TAILS
    long = encode_message("i", "t", ["x" * packed.MAX_SHARED], {})
    before = len(packed._tails)
    assert type(pack("i", "t", long)) is Packed
    assert len(packed._tails) == before  # a long tail is kept, not remembered


def test_setting_the_payload_and_replacing_id_or_name() -> None:
    rec = record("a1", "t", encode_message("a1", "t", [1], {}))
    new = encode_message("a1", "t", [2], {"k": "v"})
    rec.payload = new
    assert type(rec.body) is Packed and rec.payload == new
    # A new id or name keeps the payload's bytes (no longer canonical for the copy).
    for changes in ({"id": "b2"}, {"name": "u"}, {"id": "b2", "name": "u"}):
        out = rec.replace(**changes)
        assert out.payload == new and type(out.body) is bytes
    # With a payload of its own, the copy holds that one, packed against its own id.
    mine = encode_message("b2", "t", [3], {})
    out = rec.replace(payload=mine, id="b2")
    assert out.payload == mine and type(out.body) is Packed
    assert rec.payload == new


def test_the_store_keeps_packed_payloads() -> None:
    state = StateMachine()
    payloads = [encode_message(f"id{i}", "t", [], {}) for i in range(3)]
    odd = b"\x00not a message"
    specs = [TaskSpec(f"id{i}", "t", "q", 0, p, None, 0, None, None, None, None) for i, p in
             enumerate([*payloads, odd])]  # fmt: skip
    state.apply(Enqueue(5.0, specs))
    recs = state.tasks.records
    assert [recs[f"id{i}"].payload for i in range(4)] == [*payloads, odd]
    assert len({id(recs[f"id{i}"].body) for i in range(3)}) == 1
    assert recs["id3"].body == odd


def test_ids_no_payload_can_start_with_are_kept_whole() -> None:
    payload = b'{"v":1,"id":"\\ud800","task":"t","args":[],"kwargs":{}}'
    assert packed.head("\ud800", "t") is None
    rec = record("\ud800", "t", payload)
    assert rec.body is payload and rec.payload == payload


def test_replacing_other_fields_keeps_the_shared_tail() -> None:
    rec = record("a1", "t", encode_message("a1", "t", [], {}))
    out = rec.replace(priority=3, queue="other")
    assert out.body is rec.body and out.payload == rec.payload
    assert rec.replace(payload=b"raw").payload == b"raw"
