"""Key names. Every key of one queue shares a hash tag, so each script touches one slot."""

from __future__ import annotations


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
    def index(self) -> str:
        """Hash task id -> queue."""
        return f"{self.prefix}:idx"

    @property
    def names(self) -> str:
        """Set of task names registered by workers."""
        return f"{self.prefix}:names"

    @property
    def workers(self) -> str:
        """Hash worker id -> last heartbeat (JSON)."""
        return f"{self.prefix}:workers"

    @property
    def workers_seen(self) -> str:
        """Sorted set worker id -> heartbeat expiry."""
        return f"{self.prefix}:workers:seen"

    def kv_index(self, namespace: str) -> str:
        """Sorted set of the generic keys of one namespace (``dtq:rl:``), by expiry."""
        return f"{self.prefix}:kvidx:{namespace}"

    def kv(self, key: str) -> str:
        """A generic key (dedup, limiter, breaker, cron, DAG state)."""
        return f"{self.prefix}:kv:{key}"
