"""The connection plumbing the parts of the Redis backend share: retries, scans, lookups.

One Redis (``redis://``) or a Redis Cluster (``redis+cluster://``, redis-py's cluster
client, which follows ``MOVED`` and ``ASK`` and refreshes its slot map after a failover):
both take the same pipelines and scripts, since every script touches one slot.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from dtq_core.backends.redis.keys import Keys, glob_escape
from dtq_core.backends.redis.records import _s
from dtq_core.clock import Clock
from dtq_core.errors import BackendError, BackendUnavailable, TaskNotFound
from dtq_core.redact import redact_text

R = TypeVar("R")
log = logging.getLogger("dtq.redis")

#: How long a write waits for its replicas with ``?wait_replicas=N`` (milliseconds).
WAIT_MS = 5000


class RedisClient:
    """Calls with retry and backoff, key scans, the task index and the queue list.

    The base of the Redis backend's mixins. :class:`~dtq_core.backends.redis.backend.RedisBackend`
    sets the state up in its constructor (``url``, ``clock`` and ``result_ttl`` come from
    :class:`~dtq_core.backends.base.Backend`).
    """

    url: str
    #: The URL as outputs show it (password masked).
    safe_url: str = ""
    #: Texts scrubbed from every message (the password: a server reply may echo it).
    secrets: tuple[str, ...] = ()
    #: Log failed attempts at debug level only (faces say it themselves, once).
    quiet_retries: bool = False
    clock: Clock
    result_ttl: float
    r: Any
    keys: Keys
    maxlen: int
    retry_s: float
    connected: bool
    _redis_mod: Any
    _queues_cache: tuple[float, list[str]]
    #: Queues this process has put in the queue list (see ``_ensure_queue``).
    _known: set[str]
    #: A Redis Cluster (``redis+cluster://``) rather than one Redis.
    cluster: bool = False
    #: Replicas a write waits for (``?wait_replicas=N``; 0: no WAIT).
    wait_replicas: int = 0

    def _call(self, fn: Callable[[], R], retry: bool = True, idempotent_dup: bool = False) -> R:
        """Run ``fn``, retrying connection errors with backoff for up to ``retry_s``.

        With ``idempotent_dup``, a duplicate-id error on a retry means the first attempt
        was stored and only its reply was lost: that counts as success (``None``).
        """
        errors = self._redis_mod.exceptions
        deadline = time.monotonic() + (self.retry_s if retry else 0.0)
        delay = 0.05
        retried = False
        attempt = 0
        reload = False
        while True:
            try:
                if reload:  # here, so that its errors are wrapped and retried too
                    self._load_scripts()
                    reload = False
                out = fn()
                self.connected = True
                return out
            except errors.NoScriptError:
                # A restarted server forgot the scripts: load them, then try again. It
                # may have lost its data too (no persistence): the queue list is
                # written again by the next enqueue to each queue, or workers serving
                # every queue would never find the queues this producer uses.
                reload = True
                self._known.clear()
                continue
            except errors.AuthenticationError as exc:
                # A wrong password stays wrong: say so now, do not retry for retry_s.
                self.connected = False
                raise BackendUnavailable(
                    f"redis at {self._shown()} refused the credentials: {self._say(exc)} "
                    "(check the password: URL, password_file or DTQ_REDIS_PASSWORD)"
                ) from None
            except (errors.ConnectionError, errors.TimeoutError) as exc:
                self.connected = False
                self._known.clear()  # the server may come back empty (see above)
                attempt += 1
                left = deadline - time.monotonic()
                if left < delay:
                    raise BackendUnavailable(
                        f"redis at {self._shown()} unreachable: {self._say(exc)}"
                    ) from None
                log.log(
                    logging.DEBUG if self.quiet_retries else logging.WARNING,
                    "redis at %s unreachable (attempt %d: %s); retrying in %.2fs "
                    "(giving up in %.1fs)",
                    self._shown(),
                    attempt,
                    self._say(exc),
                    delay,
                    left,
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True
            except (errors.ClusterError, errors.TryAgainError) as exc:
                # A failover or a slot migration under way (CLUSTERDOWN, or TRYAGAIN until
                # redis-py's redirection budget ran out): the cluster client refreshes
                # its slot map; the call is tried again within the same budget.
                self.connected = False
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailable(
                        f"redis at {self._shown()} unavailable: {self._say(exc)}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True
            except errors.ResponseError as exc:
                msg = self._say(exc)
                if self.cluster and ("used with replica" in msg or "READONLY" in msg):
                    # A WAIT (or a write) sent to a master that a failover has just made
                    # a replica: the slot map is refreshed and the call tried again.
                    if time.monotonic() + delay > deadline:
                        raise BackendUnavailable(f"redis at {self._shown()}: {msg}") from None
                    self.r.nodes_manager.initialize()
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    retried = True
                    continue
                if "NOSCRIPT" in msg:
                    reload = True
                    continue
                if "DUP task id" in msg:
                    if retried and idempotent_dup:
                        return None  # type: ignore[return-value]
                    raise BackendError(msg[msg.index("DUP") + 4 :]) from None
                if "NOTDEAD" in msg:
                    raise TaskNotFound(msg[msg.index("NOTDEAD") + 8 :]) from None
                raise BackendError(f"redis error: {msg}") from None
            except errors.RedisError as exc:
                raise BackendError(f"redis error: {self._say(exc)}") from None
            except errors.RedisClusterException as exc:
                # Raised by the cluster client itself: no node reachable, or no node
                # serving a slot (a failover not finished yet). Both pass; a refused
                # password, which it reports the same way, does not.
                self.connected = False
                said = self._say(exc)
                if isinstance(exc.__cause__, errors.AuthenticationError) or any(
                    w in said for w in ("username-password", "WRONGPASS", "NOAUTH")
                ):
                    raise BackendUnavailable(
                        f"redis at {self._shown()} refused the credentials: {said} "
                        "(check the password: URL, password_file or DTQ_REDIS_PASSWORD)"
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailable(
                        f"redis at {self._shown()} unreachable: {self._say(exc)}"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                retried = True

    def _shown(self) -> str:
        return self.safe_url or redact_text(self.url, self.secrets)

    def _say(self, exc: BaseException | str) -> str:
        """An error's text as it may be shown: URLs redacted, the password scrubbed."""
        return redact_text(str(exc), self.secrets)

    def limit_waits(self, seconds: float) -> None:
        """Bound connect, socket and retry waits by ``seconds`` (faces fail fast).

        A worker keeps its patient defaults; a console or CLI command that cannot reach
        the server must say so within about ``seconds``, not after ``retry_s``.
        """
        self.retry_s = min(self.retry_s, seconds)
        self.quiet_retries = True
        if self.cluster and not self.r.made:
            # Not connected yet: the client is made with the bounded options.
            for key in ("socket_connect_timeout", "socket_timeout"):
                self.r.opts[key] = min(float(self.r.opts.get(key) or seconds), seconds)
            return
        if self.cluster:
            # New node connections take the bounded options; made ones are re-made.
            kwargs = self.r.nodes_manager.connection_kwargs
            for key in ("socket_connect_timeout", "socket_timeout"):
                kwargs[key] = min(float(kwargs.get(key) or seconds), seconds)
            pools = [
                n.redis_connection.connection_pool
                for n in self.r.get_nodes()
                if n.redis_connection is not None
            ]
        else:
            pools = [self.r.connection_pool]
        for pool in pools:
            kwargs = pool.connection_kwargs
            bounded = {
                key: min(float(kwargs.get(key) or seconds), seconds)
                for key in ("socket_connect_timeout", "socket_timeout")
            }
            # redis-py keeps the originals aside for its maintenance handling: keep them
            # equal.
            bounded.update({f"orig_{k}": v for k, v in bounded.items() if f"orig_{k}" in kwargs})
            pool.update_connection_kwargs(**bounded)

    def _scan(self, pattern: str) -> list[Any]:
        # On a cluster, scan_iter walks every primary in turn.
        return list(self.r.scan_iter(match=pattern, count=1000))

    def _record_ids(self, queue: str) -> list[str]:
        """The ids of every record key of ``queue`` (a SCAN: for operators' reads).

        The queue name is escaped in the pattern (it may hold glob characters), an id is
        its key with the head cut off (it may hold ``:t:``), and the copies a malformed
        record left beside it (``<key>:malformed``, not a record) are passed over.
        """
        head = self.keys.record(queue, "")
        keys = self._call(functools.partial(self._scan, glob_escape(head) + "*"))
        return [k[len(head) :] for k in map(_s, keys) if not k.endswith(":malformed")]

    def _q(self, task_id: str) -> str | None:
        raw = self._call(lambda: self.r.get(self.keys.owner(task_id)))
        return _s(raw).partition("|")[2] if raw is not None else None

    def _qs(self, task_ids: Sequence[str]) -> list[str | None]:
        """The queues of several tasks, from their owner keys (one pipeline)."""
        if not task_ids:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for tid in task_ids:
                pipe.get(self.keys.owner(tid))
            return pipe.execute()

        return [None if raw is None else _s(raw).partition("|")[2] for raw in self._call(run)]

    def _wait_replicas(self, pipe: Any, queues: Iterable[str]) -> None:
        """End ``pipe`` with a ``WAIT`` on the node of each queue it wrote (``wait_replicas``).

        ``WAIT`` covers the writes made before it on the same connection: on a cluster it
        is sent to each queue's node, where the pipeline's commands for that node went.
        """
        n = self.wait_replicas
        if n <= 0:
            return
        if not self.cluster:
            pipe.execute_command("WAIT", n, WAIT_MS)
            return
        nodes = {}
        for q in queues:
            node = self.r.get_node_from_key(self.keys.tag(q))
            nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command("WAIT", n, WAIT_MS, target_nodes=node)

    def _check_waited(self, replies: Sequence[Any], count: int) -> None:
        """Raise unless every ``WAIT`` among the last ``count`` replies reached enough replicas."""
        if count <= 0:
            return
        for got in replies[-count:]:
            if int(got) < self.wait_replicas:
                raise BackendError(
                    f"redis at {self._shown()}: only {got} of {self.wait_replicas} replica(s) "
                    f"acknowledged the write within {WAIT_MS} ms (wait_replicas): it is "
                    "stored on the master but may be lost by a failover"
                )

    def _n_waits(self, queues: Iterable[str]) -> int:
        """How many ``WAIT`` replies :meth:`_wait_replicas` adds for ``queues``."""
        if self.wait_replicas <= 0:
            return 0
        if not self.cluster:
            return 1
        return len({self.r.get_node_from_key(self.keys.tag(q)).name for q in queues})

    def _known_queues(self, fresh: bool = False) -> list[str]:
        at, names = self._queues_cache
        now = time.monotonic()
        if fresh or now - at > 1.0:
            raw = self._call(lambda: self.r.smembers(self.keys.queues))
            names = sorted(_s(q) for q in raw)
            self._queues_cache = (now, names)
        return names

    _scripts: list[Any]

    def _load_scripts(self) -> None:
        """(Re)load every script into the server (after a restart flushed them)."""
        for script in self._scripts:
            self.r.script_load(script.script)

    @staticmethod
    def _in(pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        """Queue a script on a pipeline by its SHA alone.

        redis-py's ``script(client=pipe)`` sends ``SCRIPT EXISTS`` first, one more round
        trip per pipeline; a NOSCRIPT reply is handled by :meth:`_call` instead.
        """
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    def _per_queue(self, script: Any, args: list[Any]) -> list[tuple[str, Any]]:
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                self._in(pipe, script, self.keys.script_keys(q), args)
            return pipe.execute()

        return list(zip(names, self._call(run), strict=True)) if names else []
