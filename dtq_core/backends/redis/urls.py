"""Redis backend URLs, parsed and checked; the cluster client, made on first use.

``redis://``, ``rediss://``, ``redis+cluster://`` and ``rediss+cluster://``. Split from
:mod:`.backend`, which keeps the queue operations.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from dtq_core.errors import ConfigError
from dtq_core.redact import redact_url

#: Query options of our own, read here and not passed to redis-py.
OUR_OPTIONS = ("prefix", "maxlen", "retry_s", "password_file", "wait_replicas")
#: redis-py connection options a URL may carry besides the ones it parses itself.
_REDIS_PY_OPTIONS = frozenset(
    {"db", "username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs",
     "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password"}
)  # fmt: skip
_EXPECTED = "expected redis://[:PASSWORD@]HOST:PORT/DB[?prefix=NAME], e.g. redis://localhost:6379/0"
_EXPECTED_CLUSTER = (
    "expected redis+cluster://[:PASSWORD@]HOST:PORT[?prefix=NAME] (one seed node; a "
    "cluster has no database numbers), e.g. redis+cluster://10.0.0.5:7000"
)


def split_cluster(url: str) -> tuple[str, bool]:
    """``redis+cluster://`` / ``rediss+cluster://`` to the plain scheme, and whether it was.

    Raises:
        ConfigError: A cluster URL naming a database other than 0.
    """
    scheme, sep, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster"):
        return url, False
    plain = scheme.split("+")[0] + sep + rest
    db = urlsplit(plain).path.strip("/")
    if db not in ("", "0"):
        raise ConfigError(
            f"bad redis URL {redact_url(url)!r}: database {db!r}; {_EXPECTED_CLUSTER}"
        )
    return plain, True


def _redis_py_options() -> frozenset[str]:
    try:
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    except ImportError:  # an older redis-py: take what we know
        return _REDIS_PY_OPTIONS
    return _REDIS_PY_OPTIONS | frozenset(URL_QUERY_ARGUMENT_PARSERS)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split our options (prefix, maxlen, retry_s) from the redis-py URL.

    The URL is checked here, before any connection: a host, a numeric port, a whole
    database number, and only known options (redis-py would ignore a bad database and
    fail much later on an unknown option).

    Raises:
        ConfigError: Naming what is wrong and what was expected.
    """
    shown = redact_url(url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"bad redis URL {shown!r}: the port is not a number; {_EXPECTED}"
        ) from None
    del port
    if not parts.hostname:
        raise ConfigError(f"bad redis URL {shown!r}: no host; {_EXPECTED}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(
            f"bad redis URL {shown!r}: the database {db!r} is not a whole number; {_EXPECTED}"
        )
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    known = _redis_py_options()
    for k, vals in parse_qs(parts.query).items():
        if k in OUR_OPTIONS:
            ours[k] = vals[-1]
        elif k in known:
            theirs.extend((k, v) for v in vals)
        else:
            raise ConfigError(
                f"bad redis URL {shown!r}: unknown option {k!r} (ours: {', '.join(OUR_OPTIONS)}; "
                "or a redis-py connection option such as socket_timeout)"
            )
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


class _LazyCluster:
    """A ``RedisCluster`` made on first use (its constructor asks the seed for the slots).

    Attribute access builds it, inside the backend's :meth:`_call`, so a seed that is
    down is retried within ``retry_s`` and reported as unreachable.
    """

    def __init__(self, redis: Any, url: str, opts: dict[str, Any]) -> None:
        self._redis = redis
        self._url = url
        #: Connection options of the client to be made (bounded by ``limit_waits``).
        self.opts = opts
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def made(self) -> bool:
        """Whether the client exists yet."""
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._redis.RedisCluster.from_url(self._url, **self.opts)
                client = self._client
        return getattr(client, name)

    def get_encoder(self) -> Any:
        """The encoder scripts hash their text with (the client's defaults)."""
        import redis.connection

        encoder: Any = getattr(redis.connection, "Encoder")  # noqa: B009 (not exported)
        return encoder("utf-8", "strict", False)

    def close(self) -> None:
        """Close the client if it was made."""
        if self._client is not None:
            self._client.close()
