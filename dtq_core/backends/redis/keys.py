"""Key names. Every key of one queue shares a hash tag, so each script touches one slot.

What spans queues is kept apart by slot: a task id's owner key has a hash tag of its own
(``{prefix:id:ID}``), and the generic keys of a namespace are spread over
:data:`KV_BUCKETS` hash tags, each with the index of its keys in the same slot.
"""

from __future__ import annotations

import re
import zlib

#: Slots the generic keys of one namespace (``dtq:rl:``) are spread over; each bucket
#: has its own index, in its slot, so a key and its index entry are one script.
KV_BUCKETS = 16


class Keys:
    """Key names under ``prefix``.

    Args:
        prefix: Namespace of every key (``?prefix=`` in the URL).
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def tag(self, queue: str) -> str:
        """The hash tag of ``queue``'s keys."""
        return "{" + self.prefix + ":" + queue + "}"

    def script_keys(self, queue: str) -> list[str]:
        """The KEYS a queue's script declares: two names of its slot that never exist.

        The scripts derive every key from ``KEYS[1]`` (the tag). Declaring two keys
        that are always missing makes a slot being resharded refuse the script on both
        nodes (``-ASK`` then ``-TRYAGAIN``: several keys, some missing) until every key
        of the slot has moved, so a script never runs on half of a queue's keys.
        """
        t = self.tag(queue)
        return [t, t + ":~"]

    def queue(self, queue: str) -> dict[str, str]:
        """Every per-queue key of ``queue`` by role."""
        t = self.tag(queue)
        return {
            "ready": f"{t}:ready",
            "delayed": f"{t}:delayed",
            "leases": f"{t}:leases",
            "dead": f"{t}:dead",
            "all": f"{t}:all",
            "done": f"{t}:done",
            "counts": f"{t}:counts",
            "totals": f"{t}:totals",
            "seq": f"{t}:seq",
            "tokens": f"{t}:tokens",
            "paused": f"{t}:paused",
            "notify": f"{t}:notify",
            "idle": f"{t}:idle",
            "events": f"{t}:events",
            "lost": f"{t}:lost",
            "sec": f"{t}:sec:",
            "rec": f"{t}:t:",
        }

    def inbox(self, queue: str, worker_id: str) -> str:
        """List of the deliveries handed to ``worker_id`` while it waited on ``queue``."""
        return f"{self.tag(queue)}:inbox:{worker_id}"

    def record(self, queue: str, task_id: str) -> str:
        """The hash holding one task's record."""
        return f"{self.tag(queue)}:t:{task_id}"

    def owner(self, task_id: str) -> str:
        """The id's owner key: the queue that holds task ``task_id`` (its own slot).

        Claimed with ``SET NX`` before the queue's script creates the record, so an id
        is refused atomically when another queue, on any node, already holds it.
        """
        return "{" + self.prefix + ":id:" + task_id + "}"

    @property
    def queues(self) -> str:
        """Set of known queue names."""
        return f"{self.prefix}:queues"

    @property
    def new_queues(self) -> str:
        """List pushed when a producer first uses a queue.

        It wakes workers that serve every queue: they cannot wait on a queue they do
        not know yet.
        """
        return f"{self.prefix}:queues:new"

    @property
    def names(self) -> str:
        """Set of task names registered by workers."""
        return f"{self.prefix}:names"

    @property
    def workers(self) -> str:
        """Hash worker id -> last heartbeat (JSON)."""
        return "{" + self.prefix + ":workers}"

    @property
    def workers_seen(self) -> str:
        """Sorted set worker id -> heartbeat expiry (the slot of :attr:`workers`)."""
        return "{" + self.prefix + ":workers}:seen"

    def kv_tag(self, namespace: str, bucket: int) -> str:
        """The hash tag of one bucket of a namespace's generic keys."""
        return "{" + f"{self.prefix}:kv:{namespace}{bucket}" + "}"

    def kv_index(self, namespace: str, bucket: int) -> str:
        """Sorted set of the generic keys of one bucket of a namespace, by expiry."""
        return self.kv_tag(namespace, bucket) + ":idx"

    def kv(self, key: str) -> str:
        """A generic key (dedup, limiter, breaker, cron, DAG state, count maps).

        In its namespace's bucket (by a CRC of the key), beside that bucket's index.
        """
        return f"{self.kv_tag(namespace(key), kv_bucket(key))}{key}"

    def kv_pattern(self) -> str:
        """A SCAN pattern matching every generic key (for keys with no namespace)."""
        return "{" + self.prefix + ":kv:*"


def glob_escape(text: str) -> str:
    r"""``text`` as a literal in a Redis glob pattern (``SCAN MATCH``, ``ZSCAN MATCH``).

    A queue name or a task id may hold ``*``, ``?``, ``[``, ``]`` or ``\``: each is
    escaped, so a pattern built from one matches that name alone.
    """
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def namespace(key: str) -> str:
    """The indexed namespace of a generic key: its first two segments (``dtq:rl:``)."""
    parts = key.split(":", 2)
    return f"{parts[0]}:{parts[1]}:" if len(parts) == 3 else ""


def kv_bucket(key: str) -> int:
    """The bucket of a generic key (stable across processes and versions)."""
    return zlib.crc32(key.encode()) % KV_BUCKETS
