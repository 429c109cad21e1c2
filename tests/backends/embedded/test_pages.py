"""The sort index of the embedded store survives a restart: rebuilt from the checkpoint,
kept up by the log replayed after it."""

from __future__ import annotations

import itertools
from pathlib import Path

from dtq_core.backends.base import NewTask
from dtq_core.backends.embedded.backend import EmbeddedBackend
from dtq_core.clock import FakeClock
from dtq_core.codec import encode_message
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.paging import SORT_KEYS
from dtq_core.task import ErrorInfo
from tests.backends.embedded import crash_worker as cw

ALL = TaskFilter()
FILTERS = ["", "state:pending", "queue:q2 state:dead,success", "task:app.b", "id:t1", "text:t2"]


def put(b: EmbeddedBackend, i: int, now: float) -> None:
    tid = f"t{(i * 37) % 1000:03d}"
    name = ("app.a", "app.b", "app.c")[i % 3]
    msg = encode_message(tid, name, [i], {})
    b.enqueue(NewTask(tid, name, ("q1", "q2")[i % 2], 0, msg), now)


def listings(b: EmbeddedBackend, now: float) -> dict[tuple[str, str, bool], list[str]]:
    out = {}
    for spec, sort, desc in itertools.product(FILTERS, SORT_KEYS, (False, True)):
        ids: list[str] = []
        after = None
        while True:
            page = b.task_page(parse_filter(spec), now, sort, desc, after, 0, 7)
            ids += [r.id for r in page.records]
            assert page.total_exact
            after = page.next_after
            if after is None:
                break
        assert len(ids) == page.total
        out[(spec, sort, desc)] = ids
    return out


def test_pages_are_the_same_after_a_checkpoint_and_a_crash(tmp_path: Path) -> None:
    clock = FakeClock(cw.T0)
    url = f"embedded://{tmp_path / 'data'}?fsync=off"
    b = cw.open_backend(url, clock)
    b.result_ttl = 5.0
    for i in range(60):
        put(b, i, clock.now() + i // 4)
    now = clock.advance(30)
    for d in b.claim(["q1"], "w", 30, 10, now):
        b.ack(d.task_id, d.token, None, now)
    b.checkpoint()  # the index is rebuilt from this, then kept up by the replayed tail
    for i in range(60, 80):
        put(b, i, now)
    boom = ErrorInfo("ValueError", "boom")
    for d in b.claim(["q2"], "w", 30, 6, now):
        b.fail(d.task_id, d.token, boom, now, dead_reason="no retries left")
    b.purge([r.id for r in b.list_dead(ALL, now, 0, 2)])
    now = clock.advance(10)
    assert b.expire(now) == 10  # the acked ones drop out of the index
    b.claim(["q1"], "w", 30, 3, now)  # running at the crash: requeued by recovery
    before = listings(b, now)
    assert b._wal is not None
    b._wal.sync()
    b._wal.close()  # a crash: no close, no checkpoint
    b._release_ownership()

    again = cw.open_backend(url, clock)
    try:
        after = listings(again, now)
        running = {r.id for r in b.list_tasks(parse_filter("state:running"), now, 0, 10)}
        for key in before:
            if "state" in key[0] or key[1] == "state":
                continue  # the running ones are PENDING again: compared below
            assert after[key] == before[key], key
        pending = set(after[("state:pending", "id", False)])
        assert running <= pending
        assert len(before[("", "id", False)]) == len(after[("", "id", False)]) == 80 - 2 - 10
    finally:
        again.close()
    b2 = cw.open_backend(url, clock)  # a clean restart: everything from the checkpoint
    try:
        assert listings(b2, now) == after
    finally:
        b2.close()
