"""A checkpoint body loads as compactly as the live state it was taken of."""

from __future__ import annotations

import math

from dtq_core.backends.changes import Enqueue, TaskSpec
from dtq_core.backends.embedded.state import STATE_VERSION, dump_state, load_state
from dtq_core.backends.memory_state import StateMachine
from dtq_core.codec import encode_message
from dtq_core.packed import Packed


def spec(task_id: str, payload: bytes | None = None) -> TaskSpec:
    if payload is None:
        payload = encode_message(task_id, "t", [], {})
    return TaskSpec(task_id, "t", "q", 0, payload, None, 0, None, None, None, None)


def test_loaded_records_share_times_and_payload_tails() -> None:
    live = StateMachine()
    batches = [(1.0, "a", 3), (2.0, "b", 2), (0.0, "z", 1), (-0.0, "n", 2), (0.0, "p", 1)]
    for now, prefix, n in batches:
        live.apply(Enqueue(now, [spec(f"{prefix}{i}") for i in range(n)]))
    live.apply(Enqueue(3.0, [spec("odd", b"\x00raw")]))
    loaded = StateMachine()
    load_state(loaded, dump_state(live), STATE_VERSION)
    recs, before = loaded.tasks.records, live.tasks.records
    assert list(recs) == list(before)
    assert all(recs[i].values() == before[i].values() for i in before)
    assert recs["a0"].enqueued_at is recs["a2"].enqueued_at
    assert recs["b0"].enqueued_at is recs["b1"].enqueued_at
    assert recs["a0"].enqueued_at is not recs["b0"].enqueued_at
    # 0.0 == -0.0, but neither takes the other's sign.
    signs = {i: math.copysign(1.0, recs[i].enqueued_at) for i in ("z0", "n0", "n1", "p0")}
    assert signs == {"z0": 1.0, "n0": -1.0, "n1": -1.0, "p0": 1.0}
    assert type(recs["a0"].body) is Packed and recs["a0"].body is recs["b1"].body
    assert recs["odd"].payload == b"\x00raw"
    assert list(loaded.tasks.ready["q"]) == list(live.tasks.ready["q"])
