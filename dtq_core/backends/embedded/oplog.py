"""Records of the embedded store's log: operation types and their JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from dtq_core.backends.base import NewTask
from dtq_core.backends.embedded.state import b2s, s2b
from dtq_core.task import ErrorInfo

OP_ENQ, OP_CLAIM, OP_CALL, OP_PROMOTE, OP_RECLAIM, OP_KVSET, OP_KVDEL, OP_NAMES = range(1, 9)

#: Names of the log's record types (for ``dtq wal inspect``).
OP_NAMES_BY_TYPE = {
    OP_ENQ: "enqueue",
    OP_CLAIM: "claim",
    OP_CALL: "call",
    OP_PROMOTE: "promote",
    OP_RECLAIM: "reclaim",
    OP_KVSET: "key-set",
    OP_KVDEL: "key-delete",
    OP_NAMES: "names",
}

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _task_dict(t: NewTask) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "queue": t.queue,
        "priority": t.priority,
        "payload": b2s(t.payload),
        "eta": t.eta,
        "max_retries": t.max_retries,
        "time_limit": t.time_limit,
        "dedup_key": t.dedup_key,
        "replayed_from": t.replayed_from,
        "workflow": t.workflow,
    }


def _new_task(d: dict[str, Any]) -> NewTask:
    return NewTask(
        d["id"],
        d["name"],
        d["queue"],
        int(d["priority"]),
        s2b(d["payload"]),
        d["eta"],
        int(d["max_retries"]),
        d["time_limit"],
        d["dedup_key"],
        d["replayed_from"],
        d["workflow"],
    )


def _decode_args(name: str, args: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Logged arguments of ``MemoryBackend.<name>`` back to a call's args and kwargs."""
    if name == "fail":
        task_id, token, err, now, retry_at, dead_reason = args
        return [task_id, token, ErrorInfo.from_dict(err), now], {
            "retry_at": retry_at,
            "dead_reason": dead_reason,
        }
    if name == "bury":
        return [args[0], args[1], ErrorInfo.from_dict(args[2]), args[3], args[4]], {}
    if name == "replay":
        return [args[0], _new_task(args[1]), args[2], args[3]], {}
    return list(args), {}
