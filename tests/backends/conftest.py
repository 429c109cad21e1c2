"""Backend fixtures: every contract test runs once per backend factory listed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import Backend
from dtq_core.backends.embedded.store import EmbeddedStore
from dtq_core.clock import FakeClock

#: Builds a backend on a fake clock; ``tmp`` is a fresh directory it may use.
Factory = Callable[[FakeClock, Path], Backend]


def _memory(clock: FakeClock, tmp: Path) -> Backend:
    return make_backend("memory://", clock)


def _embedded(clock: FakeClock, tmp: Path) -> Backend:
    b = make_backend(f"embedded://{tmp}", clock)
    b.may_own = True
    return b


class _Attached(EmbeddedStore):
    """A store attached to an owner in this process: every call crosses the socket."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        super().__init__(url, clock)
        self.owner_store = EmbeddedStore(url, clock)
        self.owner_store.may_own = True
        self.attach_timeout = 5.0

    def _set(self, name: str, value: object) -> None:
        # The owner's settings rule its store: the test's changes go there too.
        super()._set(name, value)
        if "owner_store" in self.__dict__:
            setattr(self.owner_store, name, value)

    def open(self) -> None:
        self.owner_store.open()
        super().open()
        assert self.info()["role"] == "attached"

    def close(self) -> None:
        super().close()
        self.owner_store.close()


def _attached(clock: FakeClock, tmp: Path) -> Backend:
    return _Attached(f"embedded://{tmp}", clock)


#: One line per backend. To add one later, e.g.:
#:   pytest.param(lambda c, p: make_backend(f"embedded://{p}", c), id="embedded"),
#:   pytest.param(lambda c, p: make_backend(REDIS_URL, c), id="redis",
#:                marks=pytest.mark.redis),
BACKEND_FACTORIES = [
    pytest.param(_memory, id="memory"),
    pytest.param(_embedded, id="embedded"),
    pytest.param(_attached, id="attached"),
    pytest.param(
        lambda c, p: __import__("tests.backends.redis.server", fromlist=["_"]).contract_backend(
            c, p
        ),
        id="redis",
        marks=pytest.mark.redis,
    ),
    pytest.param(
        lambda c, p: __import__(
            "tests.backends.redis.rcluster", fromlist=["_"]
        ).contract_cluster_backend(c, p),
        id="redis-cluster",
        marks=pytest.mark.redis,
    ),
]


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock every backend of a test shares."""
    return FakeClock()


@pytest.fixture(params=BACKEND_FACTORIES)
def backend_factory(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> Iterator[Callable[[], Backend]]:
    """Make fresh opened backends of one kind (for property tests); all closed at teardown."""
    factory: Factory = request.param
    made: list[Backend] = []

    def make() -> Backend:
        where = tmp_path / f"backend-{len(made)}"
        where.mkdir()
        b = factory(clock, where)
        made.append(b)
        b.open()
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def backend(backend_factory: Callable[[], Backend]) -> Backend:
    """One opened backend (closed by ``backend_factory`` after the test)."""
    return backend_factory()
