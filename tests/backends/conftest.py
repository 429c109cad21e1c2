"""Backend fixtures: every contract test runs once per backend factory listed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import Backend
from dtq_core.clock import FakeClock

#: Builds a backend on a fake clock; ``tmp`` is a fresh directory it may use.
Factory = Callable[[FakeClock, Path], Backend]


def _memory(clock: FakeClock, tmp: Path) -> Backend:
    return make_backend("memory://", clock)


#: One line per backend. To add one later, e.g.:
#:   pytest.param(lambda c, p: make_backend(f"embedded://{p}", c), id="embedded"),
#:   pytest.param(lambda c, p: make_backend(REDIS_URL, c), id="redis",
#:                marks=pytest.mark.redis),
BACKEND_FACTORIES = [
    pytest.param(_memory, id="memory"),
    pytest.param(lambda c, p: make_backend(f"embedded://{p}", c), id="embedded"),
    pytest.param(
        lambda c, p: __import__("tests.backends.redis.server", fromlist=["_"]).contract_backend(
            c, p
        ),
        id="redis",
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
