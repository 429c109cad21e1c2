"""The wire's typing: msgspec decodes requests and replies straight from the protocols'
hints (dataclasses, named tuples, enums, optionals, abstract collections), and the
encoder turns what msgpack has no type for (iterators, generators, sets, dict views)
into arrays. No owner runs here: these are the codecs alone."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.backends.embedded import wire
from dtq_core.task import Attempt, ErrorInfo, TaskRecord, TaskState

S = TaskState


def request(method: str, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    """A call as the client sends it and the owner decodes it."""
    m = wire.backend_methods()[method]
    name, raw = wire.decode_request(wire.encode((method, m.pack(args, kwargs))))
    assert name == method
    return m.unpack(raw)


def result(method: str, value: Any) -> Any:
    """A reply as the owner sends it and the client decodes it."""
    status, raw, _ = wire.decode_reply(wire.ok(value))
    assert status == 0
    return wire.backend_methods()[method].result.decode(raw)


def test_dataclass_arguments_come_back_typed() -> None:
    t = NewTask("t1", "app.x", "q", 2, b"\x00payload", eta=5.5, workflow="wf")
    args, kwargs = request("enqueue_many", [t, t], 1.0)
    assert args == [[t, t], 1.0] and kwargs == {}
    assert isinstance(args[0][0], NewTask) and args[0][0].payload == b"\x00payload"


def test_iterators_generators_sets_and_views_travel_as_arrays() -> None:
    args, _ = request("purge", (i for i in ("a", "b")))
    assert args == [["a", "b"]]
    args, _ = request("register_names", {"x"})
    assert args == [["x"]]
    args, _ = request("extend_leases", iter([("t1", 3)]), 30.0, 1.0)
    assert args == [[("t1", 3)], 30.0, 1.0]
    args, _ = request("purge", {"k": 1}.keys())
    assert args == [["k"]]


def test_keyword_only_arguments_stay_keywords() -> None:
    args, kwargs = request("ack_many", [("t1", 1, {"r": [1]})], 2.0, retry=True)
    assert args == [[("t1", 1, {"r": [1]})], 2.0]
    assert kwargs == {"retry": True}


def test_a_value_that_cannot_travel_is_a_type_error() -> None:
    m = wire.backend_methods()["purge"]
    with pytest.raises(TypeError, match="object cannot travel"):
        wire.encode(("purge", m.pack((object(),), {})))


def test_a_request_of_the_wrong_shape_is_refused_by_the_decoder() -> None:
    m = wire.backend_methods()["enqueue"]
    bad = wire.encode(["not a task", "not a time"])
    with pytest.raises(msgspec.ValidationError):
        m.unpack(bad)
    # An Iterable parameter is checked too (msgspec alone would take anything there).
    names = wire.backend_methods()["register_names"]
    with pytest.raises(msgspec.ValidationError, match="Expected `str`"):
        names.unpack(wire.encode([[1, 2]]))


def test_results_decode_to_the_hinted_types() -> None:
    rec = TaskRecord(
        id="t1",
        name="app.x",
        queue="q",
        priority=0,
        payload=b"{}",
        state=S.DEAD,
        created_at=1.0,
        enqueued_at=1.0,
        error=ErrorInfo("ValueError", "bad", "tb"),
        history=(Attempt(1, "w1", 1.0, 2.0, "FAILED", None),),
        replayed_to=("t2",),
    )
    got = result("get", rec)
    assert got == rec and isinstance(got.state, TaskState)
    assert result("get", None) is None
    assert result("get_state", S.RUNNING) is S.RUNNING
    tr = Transition("t1", "app.x", "q", None, S.PENDING)
    assert result("enqueue", [tr]) == [tr]
    d = Delivery("t1", 7, "app.x", "q", b"{}", 1, 1, 1.0, 2.0, None, 3)
    got_d = result("claim", [d])
    assert got_d == [d] and isinstance(got_d[0], Delivery)
