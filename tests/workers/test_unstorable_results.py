"""A success whose result the store cannot hold fails its task; the worker lives on.

The embedded log is msgpack: an integer past 64 bits, or a result over the record
limit, cannot be written. Before, the refused ack killed the worker thread, and the task
(left RUNNING) ran again at every lease expiry, forever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dtq_core import Broker, task
from dtq_core.errors import TaskFailed
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from tests.conftest import BrokerFactory

pytestmark = pytest.mark.timeout(60)

S = TaskState


@pytest.mark.parametrize("ack_delay_s", [0.0, 0.05], ids=["direct", "batched"])
def test_an_unstorable_result_fails_its_task_and_the_rest_are_stored(
    make_broker: BrokerFactory, registry: Registry, tmp_path: Path, ack_delay_s: float
) -> None:
    @task(registry=registry, max_retries=0)
    def value(n: int) -> int:
        return 2**n

    b = make_broker(
        backend=f"embedded://{tmp_path / 'data'}", num_workers=2, ack_delay_s=ack_delay_s
    )
    b.start()
    # Big and small results finish together, so batched acks mix them.
    results = [value.apply_async(args=[70 if i % 3 == 0 else i], broker=b) for i in range(12)]
    for i, r in enumerate(results):
        if i % 3:
            assert r.get(timeout=20) == 2**i
            continue
        with pytest.raises(TaskFailed):
            r.get(timeout=20)
        rec = b.backend.get(r.id)
        assert rec is not None and rec.state is S.DEAD and rec.error is not None
        assert "cannot be stored" in rec.error.message, rec.error
        assert "64 bits" in rec.error.message, rec.error
        assert rec.attempt == 1  # ran once: not again and again at each lease expiry
    # Every worker thread lived through it.
    assert b.pool is not None
    assert all(not w.restarts for w in b.pool.workers)
    assert value.apply_async(args=[5], broker=b).get(timeout=20) == 32


def check_hostile_failures(b: Broker) -> None:
    """Failures whose text no store takes as it is are stored (made storable) at once.

    ``b`` runs the tasks of :mod:`tests.workers.pool_tasks` (importable by a process
    pool's children).
    """
    from tests.workers.pool_tasks import huge_error, surrogate_error, surrogate_result

    b.start()
    r1 = surrogate_error.apply_async(broker=b)
    r2 = surrogate_result.apply_async(broker=b)
    r3 = huge_error.apply_async(broker=b)
    for r in (r1, r2, r3):
        with pytest.raises(TaskFailed):
            r.get(timeout=20)
    rec = b.backend.get(r1.id)
    assert rec is not None and rec.state is S.DEAD and rec.error is not None
    assert rec.error.message == "name \\udcff.txt"  # readable: the escape, not a crash
    assert rec.attempt == 1
    rec = b.backend.get(r2.id)
    assert rec is not None and rec.state is S.DEAD and rec.error is not None
    assert "not valid Unicode text" in rec.error.message, rec.error
    rec = b.backend.get(r3.id)
    assert rec is not None and rec.state is S.DEAD and rec.error is not None
    assert len(rec.error.message) < 20_000 and "[4,983,616 characters cut]" in rec.error.message
    assert len(rec.error.traceback) < 70_000 and "characters cut" in rec.error.traceback
    # The frames are kept: the cut is in the message at the end.
    assert "huge_error" in rec.error.traceback
    assert b.pool is not None and all(not w.restarts for w in b.pool.workers)


@pytest.mark.parametrize(
    ("store", "pool"), [("memory", "thread"), ("embedded", "thread"), ("memory", "process")]
)
def test_failures_with_hostile_text_are_stored(
    make_broker: BrokerFactory, tmp_path: Path, store: str, pool: str
) -> None:
    from tests.workers.pool_tasks import registry

    url = "memory://" if store == "memory" else f"embedded://{tmp_path / 'data'}"
    check_hostile_failures(make_broker(backend=url, num_workers=2, pool=pool, registry=registry))
