"""Storage backends behind one protocol (see base.py), chosen by URL."""

from __future__ import annotations

from dtq_core.backends.base import Backend
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import ConfigError

#: URL schemes and what they mean.
SCHEMES = {
    "memory": "in-process, nothing durable",
    "embedded": "a local data directory with a write-ahead log (embedded://PATH): one "
    "worker process owns it, every other process attaches to it",
    "redis": "a Redis server shared by many machines (redis://host:port/db)",
    "rediss": "Redis over TLS",
    "redis+cluster": "a Redis Cluster, from one seed node (redis+cluster://host:port)",
    "rediss+cluster": "a Redis Cluster over TLS",
}


def make_backend(url: str, clock: Clock = SYSTEM_CLOCK) -> Backend:
    """Build the backend a URL names.

    Raises:
        ConfigError: For an unknown scheme or a malformed URL, naming the fix.
    """
    from dtq_core.redact import redact_url

    shown = redact_url(url)
    scheme, sep, _rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"bad backend URL {shown!r}: expected SCHEME://..., e.g. memory://, "
            "embedded://./dtq-data or redis://localhost:6379/0"
        )
    if scheme == "memory":
        from dtq_core.backends.memory import MemoryBackend

        return MemoryBackend(url, clock)
    if scheme == "embedded":
        from dtq_core.backends.embedded.store import EmbeddedStore

        return EmbeddedStore(url, clock)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from dtq_core.backends.redis.backend import RedisBackend

        return RedisBackend(url, clock)
    raise ConfigError(
        f"unknown backend scheme {scheme!r} in {shown!r}: use one of "
        + ", ".join(f"{k}://" for k in SCHEMES)
    )
