"""Redis fixtures: redis-server processes started here, a key prefix per test, a cluster.

Nothing here touches the shared Redis on 127.0.0.1:6379: every server is started by the
tests on a free port. Without the ``redis-server`` binary the tests skip, unless
``DTQ_REQUIRE_REDIS=1`` (then they fail).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.redis.backend import RedisBackend
from tests.backends.redis.cluster import Cluster
from tests.backends.redis.rcluster import RedisCluster, shared_cluster, stop_shared_cluster
from tests.backends.redis.server import RedisServer, shared_server, stop_shared, unique_prefix


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's in-memory redis-server (``--save '' --appendonly no``)."""
    yield shared_server()
    stop_shared()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """The session's Redis Cluster of 3 masters (shared with the contract suite)."""
    yield shared_cluster()
    stop_shared_cluster()


@pytest.fixture(scope="session")
def redis_aof_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with ``--appendonly yes --appendfsync always`` (restartable)."""
    server = RedisServer(aof=True, data_dir=tmp_path_factory.mktemp("redis-aof"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test only."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40]
    return unique_prefix(name)


@pytest.fixture
def url(redis_server: RedisServer, prefix: str) -> str:
    """A backend URL on the session's server under this test's prefix."""
    return redis_server.url(prefix)


@pytest.fixture
def make_be(redis_server: RedisServer, prefix: str) -> Iterator[Callable[..., RedisBackend]]:
    """Redis backends under this test's prefix (``retry_s`` may be set), closed at teardown.

    Each is a separate connection pool, as another process would have; its scripts are
    loaded up front, so no NOSCRIPT round trip muddles a count of round trips.
    """
    made: list[RedisBackend] = []

    def make(retry_s: float = 30.0) -> RedisBackend:
        be = make_backend(redis_server.url(prefix, retry_s=retry_s))
        assert isinstance(be, RedisBackend)
        be.open()
        be._load_scripts()
        made.append(be)
        return be

    yield make
    for be in made:
        be.close()


@pytest.fixture
def be(make_be: Callable[..., RedisBackend]) -> RedisBackend:
    """A Redis backend under this test's prefix."""
    return make_be()


@pytest.fixture
def plain(redis_server: RedisServer) -> Iterator[Any]:
    """A plain client on the same server, to read keys behind the backend's back."""
    c: Any = redis_server.client()
    yield c
    c.close()


ClusterFactory = Callable[..., Cluster]

#: Worker settings of the multi-process tests: short leases so redelivery is quick.
FAST = {"lease_s": 2.0, "heartbeat_s": 0.5, "max_deliveries": 3, "drain_timeout": 5.0}


@pytest.fixture
def make_cluster(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> Iterator[ClusterFactory]:
    """Build :class:`Cluster` objects; their workers are killed at teardown.

    Keyword arguments: ``server`` (default: the session's server; a
    :class:`RedisCluster` runs the workers on a Redis Cluster), ``config`` (added to
    :data:`FAST`), ``retry_s``.
    """
    made: list[Cluster] = []

    def make(
        server: RedisServer | RedisCluster | None = None,
        config: dict[str, Any] | None = None,
        retry_s: float = 30.0,
    ) -> Cluster:
        c = Cluster(
            server or redis_server,
            redis_server,
            f"{prefix}-{len(made)}" if made else prefix,
            tmp_path,
            {**FAST, **(config or {})},
            retry_s,
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
