"""First pages of sorted and filtered task listings at scale (for console_bench.py).

Fills a backend with ``n`` tasks (4 queues x 8 task names, mostly pending, some
succeeded, dead and running), then times ``Backend.task_page`` for every sort key and a
set of filters: the first page, and the page after it by keyset cursor. Also reports
what the sort index costs in memory per task (memory and embedded keep the same index).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from dtq_core.backends.base import Backend, NewTask
from dtq_core.codec import encode_message
from dtq_core.filters import parse_filter
from dtq_core.ids import new_id

QUEUES = ("email", "billing", "reports", "default")
NAMES = tuple(f"app.task{i}" for i in range(8))

#: (label, filter, sort, descending)
CASES: list[tuple[str, str, str, bool]] = [
    ("newest first (default)", "", "enqueued", True),
    ("oldest first", "", "enqueued", False),
    ("sort id", "", "id", False),
    ("sort name desc", "", "name", True),
    ("sort queue", "", "queue", False),
    ("sort state", "", "state", False),
    ("filter state:running (sparse)", "state:running", "enqueued", True),
    ("filter state:dead", "state:dead", "enqueued", True),
    ("filter queue:billing", "queue:billing", "enqueued", True),
    ("filter task + state, sort name", "task:app.task3 state:pending", "name", False),
    ("filter id:PREFIX", "id:{prefix}", "enqueued", True),
    ("search text:needle (scan)", "text:needle", "enqueued", True),
    ("search exc:KeyError (scan)", "exc:KeyError", "enqueued", True),
]


def fill(backend: Backend, n: int, now: float) -> float:
    """Enqueue ``n`` tasks, then settle some of them; return the seconds it took."""
    t0 = time.perf_counter()
    chunk = 20_000
    for start in range(0, n, chunk):
        batch = []
        for i in range(start, min(n, start + chunk)):
            tid = new_id()
            name = NAMES[i % len(NAMES)]
            word = "needle" if i % 100_000 == 5 else "hay"
            msg = encode_message(tid, name, [word, i], {})
            batch.append(NewTask(tid, name, QUEUES[i % len(QUEUES)], 0, msg))
        backend.enqueue_many(batch, now + start / chunk)
    from dtq_core.task import ErrorInfo

    later = now + n / chunk + 1
    for d in backend.claim(["email"], "bench", 600.0, 10_000, later):
        backend.ack(d.task_id, d.token, None, later)
    boom = ErrorInfo("KeyError", "'customer'")
    for d in backend.claim(["billing"], "bench", 600.0, 1_000, later):
        backend.fail(d.task_id, d.token, boom, later, dead_reason="no retries left")
    backend.claim(["reports"], "bench", 600.0, 8, later)  # running
    return time.perf_counter() - t0


def time_pages(backend: Backend, now: float, runs: int = 5) -> list[list[Any]]:
    """Rows of ``[case, first page ms, next page ms, rows, total]`` (medians of ``runs``)."""
    # A prefix some 4,096 ids share (ids are a 12-hex process prefix and a hex counter).
    mid = backend.task_page(parse_filter(""), now, "id", False, None, 500_000, 1).records
    prefix = (mid or backend.task_page(parse_filter(""), now, limit=1).records)[0].id[:17]
    rows: list[list[Any]] = []
    for label, spec, sort, desc in CASES:
        flt = parse_filter(spec.format(prefix=prefix))
        page = backend.task_page(flt, now, sort, desc, None, 0, 50)

        def first(flt: Any = flt, sort: str = sort, desc: bool = desc) -> Any:
            return backend.task_page(flt, now, sort, desc, None, 0, 50)

        def second(flt: Any = flt, sort: str = sort, desc: bool = desc, p: Any = page) -> Any:
            return backend.task_page(flt, now, sort, desc, p.next_after, 0, 50)

        total = f"{page.total:,}" + ("" if page.total_exact else "+ (bounded scan)")
        ms1 = _median_ms(first, runs)
        ms2 = _median_ms(second, runs) if page.next_after is not None else float("nan")
        rows.append([label, f"{ms1:.1f}", f"{ms2:.1f}", len(page.records), total])
    return rows


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    vals = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        vals.append((time.perf_counter() - t0) * 1000)
    return statistics.median(vals)


def index_bytes(backend: Backend) -> int | None:
    """Bytes held by the sort index of a memory or owned embedded backend."""
    inner = getattr(backend, "local", None) or backend
    state = getattr(inner, "_state", None)  # a LocalBackend's state machine
    return None if state is None else int(state.tasks.index.nbytes())
