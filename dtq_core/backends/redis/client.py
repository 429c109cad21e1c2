"""The connection plumbing the parts of the Redis backend share: retries, scans, lookups."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dtq_core.backends.redis.keys import Keys
from dtq_core.backends.redis.records import _s
from dtq_core.clock import Clock
from dtq_core.errors import BackendError, BackendUnavailable, TaskNotFound
from dtq_core.redact import redact_text

R = TypeVar("R")
log = logging.getLogger("dtq.redis")


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
                # A restarted server forgot the scripts: load them, then try again.
                reload = True
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
            except errors.ResponseError as exc:
                msg = self._say(exc)
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
        pool = self.r.connection_pool
        kwargs = pool.connection_kwargs
        bounded = {
            key: min(float(kwargs.get(key) or seconds), seconds)
            for key in ("socket_connect_timeout", "socket_timeout")
        }
        # redis-py keeps the originals aside for its maintenance handling: keep them equal.
        bounded.update({f"orig_{k}": v for k, v in bounded.items() if f"orig_{k}" in kwargs})
        pool.update_connection_kwargs(**bounded)

    def _scan(self, pattern: str) -> list[Any]:
        return list(self.r.scan_iter(match=pattern, count=1000))

    def _q(self, task_id: str) -> str | None:
        q = self._call(lambda: self.r.hget(self.keys.index, task_id))
        return _s(q) if q is not None else None

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
                self._in(pipe, script, [self.keys.tag(q)], args)
            return pipe.execute()

        return list(zip(names, self._call(run), strict=True)) if names else []
