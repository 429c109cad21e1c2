"""Fixtures of the fault suite: a restartable AOF redis-server and systems under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.redis.conftest import be, make_be, plain, prefix, redis_cluster, redis_server
from tests.backends.redis.server import RedisServer, unique_prefix
from tests.faults.harness import System


class FaultRedis(RedisServer):
    """An AOF redis-server that also accepts ``DEBUG`` (``DEBUG SLEEP``) from localhost."""

    def args(self) -> list[str]:
        """The command line."""
        return [*super().args(), "--enable-debug-command", "local"]


@pytest.fixture(scope="module")
def aof_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with ``--appendonly yes --appendfsync always`` (restartable)."""
    server = FaultRedis(aof=True, data_dir=tmp_path_factory.mktemp("faults-redis"))
    server.start()
    yield server
    server.stop()


#: The Redis suite's fixtures, shared here (``be``: a backend under this test's prefix on
#: the session's in-memory server, ``plain``: a raw client on it, ``redis_cluster``: the
#: session's Redis Cluster).
__all__ = ["be", "make_be", "plain", "prefix", "redis_cluster", "redis_server"]

SystemFactory = Callable[..., System]


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[SystemFactory]:
    """Build :class:`System` objects; their processes are killed at teardown."""
    made: list[System] = []

    def make(url: str, config: dict[str, Any] | None = None) -> System:
        sub = tmp_path / f"sys{len(made)}"
        sub.mkdir()
        s = System(url, sub, config)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def redis_url(aof_server: RedisServer) -> str:
    """A backend URL on the AOF server under a key prefix of this test only."""
    return aof_server.url(unique_prefix("fault"))
