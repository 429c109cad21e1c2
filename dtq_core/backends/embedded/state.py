"""Checkpoint bodies: the whole in-memory state of the embedded store as JSON."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from dtq_core.errors import StoreCorrupted
from dtq_core.queue import IndexedHeap
from dtq_core.task import TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.backends.memory import MemoryBackend

#: Version of the checkpoint body layout.
STATE_VERSION = 1


def b2s(data: bytes) -> str:
    """Bytes as text: UTF-8 JSON payloads stay readable, anything else is base64."""
    if data[:1] == b"{":
        try:
            return "j" + data.decode()
        except UnicodeDecodeError:
            pass
    return "b" + base64.b64encode(data).decode()


def s2b(text: str) -> bytes:
    """Inverse of :func:`b2s`."""
    if text[:1] == "j":
        return text[1:].encode()
    return base64.b64decode(text[1:])


def _heap_entries(heap: IndexedHeap) -> list[list[Any]]:
    # (key, insertion order) order, so FIFO among equal keys survives the reload.
    live = [e for e in heap._heap if e[2] is not None]
    live.sort(key=lambda e: (e[0], e[1]))
    return [[e[2], e[0]] for e in live]


def dump_state(mem: MemoryBackend) -> bytes:
    """Serialize the state (call with the backend lock held)."""
    records = []
    for rec in mem._records.values():
        d = rec.to_dict(with_payload=False)
        d["payload"] = b2s(rec.payload)
        d["lease_token"] = rec.lease_token
        records.append(d)
    state = {
        "version": STATE_VERSION,
        "records": records,
        "ready": {q: _heap_entries(h) for q, h in mem._ready.items() if h},
        "delayed": _heap_entries(mem._delayed),
        "dead": list(mem._dead),
        "paused": sorted(mem._paused),
        "kv": [[k, v, exp] for k, (v, exp) in mem._kv.items()],
        "names": sorted(mem._names),
        "expiry": [[t, i] for t, i in mem._expiry],
        "token": next(mem._tokens),
    }
    return json.dumps(state, separators=(",", ":")).encode()


def load_state(mem: MemoryBackend, body: bytes) -> None:
    """Restore a state written by :func:`dump_state` into an empty backend."""
    import itertools

    try:
        state = json.loads(body)
        if state.get("version") != STATE_VERSION:
            raise StoreCorrupted(f"checkpoint state version {state.get('version')} unknown")
        for d in state["records"]:
            raw = dict(d)
            raw["payload"] = "x"
            rec = TaskRecord.from_dict(raw)
            rec.payload = s2b(d["payload"])
            rec.lease_token = int(d.get("lease_token", 0))
            mem._records[rec.id] = rec
            mem._counts[rec.state] += 1
            if rec.state is TaskState.RUNNING:
                mem._running[rec.queue] = mem._running.get(rec.queue, 0) + 1
                mem._leases.push(rec.id, rec.lease_deadline or 0.0)
        for q, entries in state["ready"].items():
            heap = mem._ready.setdefault(q, IndexedHeap())
            for task_id, key in entries:
                heap.push(task_id, key)
        for task_id, eta in state["delayed"]:
            mem._delayed.push(task_id, eta)
        mem._dead.update(dict.fromkeys(state["dead"]))
        mem._paused.update(state["paused"])
        mem._kv.update({k: (v, exp) for k, v, exp in state["kv"]})
        mem._names.update(state["names"])
        mem._expiry.extend((t, i) for t, i in state["expiry"])
        mem._tokens = itertools.count(int(state["token"]))
        mem._index.rebuild()  # the sort index is state derived from the records, not saved
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreCorrupted(f"checkpoint state is malformed: {exc!r}") from exc
