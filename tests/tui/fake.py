"""A Console API with fixed data and a frozen clock, for snapshot and unit tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dtq_core.codec import encode_message
from dtq_core.events import Event
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage, check_cursor, page_of, soonest
from dtq_core.reliability.deadletter import FailureGroup, ReplayPlan, group_by_cause
from dtq_core.snapshot import (
    BreakerSnapshot,
    DedupSnapshot,
    Health,
    LatencySnapshot,
    LimiterSnapshot,
    ProcessSnapshot,
    QueueSnapshot,
    Rates,
    ScheduleSnapshot,
    SystemSnapshot,
    Throughput,
    WorkerSnapshot,
    WorkflowNodeSnapshot,
    WorkflowSnapshot,
)
from dtq_core.task import Attempt, ErrorInfo, TaskRecord, TaskState

NOW = 1_700_000_000.0
S = TaskState

TB = (
    "Traceback (most recent call last):\n"
    '  File "app/tasks.py", line 42, in charge\n'
    "    gateway.charge(card, amount)\n"
    "ConnectionError: gateway timeout after 30s"
)


def _series(seed: int, n: int = 60, peak: int = 40) -> tuple[int, ...]:
    return tuple((seed * 7 + i * 13 + (i * i) % 11) % peak for i in range(n))


def _rec(
    i: int,
    name: str,
    queue: str,
    state: TaskState,
    args: list[Any],
    kwargs: dict[str, Any] | None = None,
    *,
    error: tuple[str, str] | None = None,
    attempt: int = 1,
    age: float = 60.0,
    ran: float | None = 0.5,
    time_limit: float | None = None,
) -> TaskRecord:
    tid = f"0f3a9c1e{i:012d}"
    kwargs = kwargs or {}
    started = None if state is S.PENDING else NOW - age + 1
    finished = None
    if state in (S.SUCCESS, S.FAILED, S.DEAD, S.CANCELLED) and started is not None:
        finished = started + (ran or 0.0)
    err = ErrorInfo(error[0], error[1], TB) if error else None
    history: tuple[Attempt, ...] = ()
    if err is not None and attempt > 1:
        history = tuple(
            Attempt(n, "w-2", NOW - age + n, NOW - age + n + 0.3, "FAILED", err)
            for n in range(1, attempt)
        )
    return TaskRecord(
        id=tid,
        name=name,
        queue=queue,
        priority=i % 3,
        payload=encode_message(tid, name, args, kwargs),
        state=state,
        created_at=NOW - age,
        enqueued_at=NOW - age,
        max_retries=3,
        time_limit=time_limit,
        attempt=attempt if state is not S.PENDING else 0,
        deliveries=attempt,
        started_at=started,
        finished_at=finished,
        result={"ok": True, "id": i} if state is S.SUCCESS else None,
        error=err,
        history=history,
        dead_reason="retries exhausted (3)" if state is S.DEAD else None,
        worker="w-1" if state is S.RUNNING else None,
        lease_deadline=NOW + 25 if state is S.RUNNING else None,
    )


def records() -> list[TaskRecord]:
    """A fixed set of task records, newest first."""
    recs = [
        _rec(
            1,
            "send_email",
            "email",
            S.RUNNING,
            ["a@example.com"],
            {"template": "welcome"},
            age=8,
            time_limit=30,
        ),
        _rec(2, "charge", "payments", S.PENDING, [42, "EUR"], {"api_key": "sk_live_123"}, age=9),
        _rec(3, "resize_image", "default", S.SUCCESS, ["img-3.png", 800], age=12),
        _rec(
            4,
            "charge",
            "payments",
            S.DEAD,
            [17, "EUR"],
            {"card_token": "tok_abc"},
            error=("ConnectionError", "gateway timeout after 30s"),
            attempt=4,
            age=20,
        ),
        _rec(
            5,
            "charge",
            "payments",
            S.DEAD,
            [23, "USD"],
            {"card_token": "tok_def"},
            error=("ConnectionError", "gateway timeout after 31s"),
            attempt=4,
            age=25,
        ),
        _rec(
            6,
            "charge",
            "payments",
            S.DEAD,
            [5, "EUR"],
            {"card_token": "tok_ghi"},
            error=("ConnectionError", "gateway timeout after 29s"),
            attempt=4,
            age=30,
        ),
        _rec(
            7,
            "import_csv",
            "bulk",
            S.DEAD,
            ["s3://bucket/f7.csv"],
            {"password": "hunter2"},
            error=("ValueError", "row 117: bad date '2023-13-01'"),
            attempt=1,
            age=40,
        ),
        _rec(
            8,
            "import_csv",
            "bulk",
            S.DEAD,
            ["s3://bucket/f8.csv"],
            {"password": "hunter2"},
            error=("ValueError", "row 9: bad date '2023-02-30'"),
            attempt=1,
            age=45,
        ),
        _rec(
            9,
            "send_email",
            "email",
            S.RETRY,
            ["b@example.com"],
            error=("SMTPError", "421 busy"),
            attempt=2,
            age=50,
        ),
        _rec(
            10,
            "report",
            "reports",
            S.FAILED,
            [],
            {"month": 11},
            error=("KeyError", "'total'"),
            age=70,
        ),
        _rec(11, "send_email", "email", S.CANCELLED, ["c@example.com"], age=80),
        _rec(12, "resize_image", "default", S.SUCCESS, ["img-12.png", 1200], age=90, ran=2.4),
    ]
    # One dead letter was replayed already (the console marks it and asks before again).
    recs[5] = recs[5].replace(replayed_to=("0f3a9c1e000000000099",))
    # A delayed task (due in 5 min) and a retry due in 8 s: the Scheduled and Retry lists.
    recs[1] = recs[1].replace(eta=NOW + 300)
    recs[8] = recs[8].replace(eta=NOW + 8)
    for i in range(13, 40):
        recs.append(
            _rec(
                i,
                "resize_image",
                "default",
                S.SUCCESS,
                [f"img-{i}.png", 640],
                age=90 + i,
                ran=0.2 + (i % 5) / 10,
            )
        )
    return recs


def _hist(scope: str, key: str, kind: str, window: int, scale: float) -> LatencySnapshot:
    bins = []
    low = 0.001
    counts = [2, 9, 31, 74, 120, 88, 41, 17, 6, 2, 0, 1]
    for n in counts:
        high = low * 2
        bins.append((low * scale, high * scale, n * window // 60))
        low = high
    total = sum(b[2] for b in bins)
    return LatencySnapshot(
        scope,
        key,
        kind,
        window,
        total,
        p50=0.016 * scale,
        p95=0.06 * scale,
        p99=0.2 * scale,
        p999=0.9 * scale,
        max=1.8 * scale,
        mean=0.024 * scale,
        bins=tuple(bins),
    )


def node(
    nid: str, level: int, parents: Sequence[str], state: str, i: int, error: str | None = None
) -> WorkflowNodeSnapshot:
    started = None if state in ("waiting", "pending", "upstream_failed") else NOW - 100 + i * 5
    finished = started + 4 if started is not None and state != "running" else None
    task_id = f"0f3a9c1e{900 + i:012d}" if started is not None else None
    return WorkflowNodeSnapshot(
        nid, f"etl.{nid}", state, level, tuple(parents), task_id, started, finished, error
    )


def workflows() -> tuple[WorkflowSnapshot, ...]:
    """Three DAG runs: failed (a failing branch), running and succeeded."""
    failed = WorkflowSnapshot(
        "wf-0001",
        "nightly-etl",
        "failed",
        NOW - 120,
        NOW - 60,
        (
            node("extract", 0, [], "success", 1),
            node("extract_b", 0, [], "success", 2),
            node("clean", 1, ["extract"], "success", 3),
            node(
                "validate",
                1,
                ["extract", "extract_b"],
                "failed",
                4,
                "ValueError: 12 rows without a customer id",
            ),
            node("enrich", 2, ["clean"], "success", 5),
            node("load", 3, ["enrich", "validate"], "upstream_failed", 6),
            node("notify", 4, ["load"], "waiting", 7),
        ),
    )
    running = WorkflowSnapshot(
        "wf-0002",
        "thumbnails",
        "running",
        NOW - 30,
        None,
        (
            node("list", 0, [], "success", 8),
            node("resize", 1, ["list"], "running", 9),
            node("upload", 2, ["resize"], "pending", 10),
        ),
    )
    done = WorkflowSnapshot(
        "wf-0003",
        "nightly-etl",
        "success",
        NOW - 900,
        NOW - 840,
        tuple(
            node(n.id, n.level, n.parents, "success", n_i + 20)
            for n_i, n in enumerate(failed.nodes)
        ),
    )
    return (failed, running, done)


def snapshot() -> SystemSnapshot:
    """The fixed system snapshot."""
    q = [
        QueueSnapshot(
            "bulk",
            12000,
            0,
            2,
            False,
            Rates(40, 35, 30),
            Rates(30, 28, 25),
            Rates(1, 0.5, 0.2),
            _series(1),
            _series(2),
        ),
        QueueSnapshot(
            "default",
            42,
            3,
            3,
            False,
            Rates(120, 110, 95),
            Rates(118, 108, 94),
            Rates(0, 0.2, 0.1),
            _series(3),
            _series(4),
        ),
        QueueSnapshot(
            "email",
            7,
            12,
            1,
            False,
            Rates(8, 6, 5),
            Rates(5, 5, 5),
            Rates(0.5, 0.4, 0.3),
            _series(5, peak=8),
            _series(6),
        ),
        QueueSnapshot(
            "payments",
            230,
            0,
            0,
            True,
            Rates(3, 2, 2),
            Rates(0, 0, 0.5),
            Rates(0, 0.3, 0.4),
            _series(7, peak=3),
            _series(8),
        ),
        QueueSnapshot(
            "reports",
            0,
            1,
            0,
            False,
            Rates(0, 0.1, 0.1),
            Rates(0, 0.1, 0.1),
            Rates(0, 0, 0),
            (0,) * 60,
            (0,) * 60,
        ),
    ]
    workers = (
        WorkerSnapshot(
            "host:101:t0",
            "thread",
            "busy",
            "0f3a9c1e000000000001",
            "send_email",
            7.0,
            1520,
            12,
            0.4,
        ),
        WorkerSnapshot(
            "host:101:t1", "thread", "busy", "0f3a9c1e000000000905", "etl.resize", 2.2, 1498, 3, 0.4
        ),
        WorkerSnapshot("host:101:t2", "thread", "idle", None, None, None, 1610, 40, 1.1),
        WorkerSnapshot(
            "host:202:p0",
            "process",
            "busy",
            "0f3a9c1e000000000077",
            "import_csv",
            31.5,
            220,
            19,
            21.0,
        ),
    )
    processes = tuple(
        ProcessSnapshot(
            id=f"host:{pid}",
            host="host",
            pid=pid,
            version="0.1.0",
            pool=pool,
            concurrency=conc,
            queues=(),
            busy=busy,
            tasks_per_s=tps,
            rss_bytes=rss * 2**20,
            cpu_percent=cpu,
            started_at=NOW - up,
            heartbeat_age=beat,
            role=role,
        )
        for pid, pool, conc, busy, tps, rss, cpu, up, beat, role in (
            (101, "thread", 3, 2, 41.5, 96, 62.0, 3700, 0.4, "owner"),
            (202, "process", 1, 1, 0.3, 310, 98.0, 600, 21.0, "attached"),
        )
    )
    counts = {
        "PENDING": 12284,
        "RUNNING": 6,
        "SUCCESS": 48211,
        "FAILED": 14,
        "RETRY": 9,
        "DEAD": 5,
        "CANCELLED": 2,
    }
    return SystemSnapshot(
        taken_at=NOW,
        backend="embedded:///var/lib/dtq",
        backend_info={"wal_bytes": 1048576},
        uptime=3725.0,
        counts=counts,
        queues=tuple(q),
        workers=workers,
        processes=processes,
        in_flight=6,
        workers_busy=3,
        throughput=Throughput(
            Rates(171, 153, 132),
            Rates(153, 141, 124),
            Rates(1.5, 1.4, 1.0),
            Rates(1.2, 0.9, 0.8),
            Rates(0, 0.1, 0.05),
        ),
        dead_letters=5,
        counters={"enqueued": 60000},
        last_event=120,
        latency=(
            _hist("queue", "default", "wait", 60, 1.0),
            _hist("queue", "default", "run", 60, 4.0),
            _hist("queue", "email", "wait", 60, 3.0),
            _hist("task", "send_email", "run", 60, 20.0),
            _hist("queue", "default", "wait", 300, 1.2),
            _hist("task", "send_email", "run", 300, 22.0),
        ),
        breakers=(
            BreakerSnapshot("payments", "open", 5, 0, 5, 60.0, 30.0, NOW - 12, NOW + 18, 230),
            BreakerSnapshot("search", "closed", 1, 940, 5, 60.0, 30.0, None, None, 0),
            BreakerSnapshot("geo", "half_open", 3, 2, 5, 60.0, 30.0, NOW - 40, NOW - 1, 4, True),
        ),
        limits=(
            LimiterSnapshot("queue", "email", 5.0, 10, 0.4, 1250),
            LimiterSnapshot("task", "charge", 2.0, 2, 2.0, 0),
        ),
        schedules=(
            ScheduleSnapshot(
                "nightly-report",
                "report",
                "0 2 * * *",
                "at 02:00 every day",
                "UTC",
                (NOW + 3600, NOW + 90000, NOW + 176400),
                NOW - 82800,
                "0f3a9c1e000000000010",
                "FAILED",
                False,
                "skip",
                31,
            ),
            ScheduleSnapshot(
                "cleanup",
                "cleanup",
                "*/15 * * * *",
                "every 15 minutes",
                "UTC",
                (NOW + 300, NOW + 1200),
                NOW - 600,
                "0f3a9c1e000000000011",
                "SUCCESS",
                True,
                "skip",
                2880,
            ),
            ScheduleSnapshot(
                "heartbeat",
                "ping",
                "* * * * *",
                "every minute",
                "UTC",
                (NOW + 20, NOW + 80),
                NOW - 40,
                None,
                None,
                False,
                "catch_up",
                9000,
            ),
        ),
        workflows=workflows(),
        dedup=DedupSnapshot(18231, 100000, 0.31, 0.0042, 77, 3600.0),
        health=Health("degraded", ("breaker payments open", "queue payments paused")),
        alerts=("WAL recovered 12 tasks at start",),
    )


def events() -> list[Event]:
    """A fixed event tail."""
    out = []
    flow = [(None, "PENDING"), ("PENDING", "RUNNING"), ("RUNNING", "SUCCESS")]
    for i in range(40):
        old, new = flow[i % 3]
        if i % 11 == 10:
            old, new = "RUNNING", "FAILED"
        out.append(
            Event(
                81 + i,
                NOW - 40 + i,
                f"0f3a9c1e{i:012d}",
                "resize_image",
                "default",
                old,
                new,
                "host:101:t0" if new != "PENDING" else None,
                "ValueError: bad size" if new == "FAILED" else None,
            )
        )
    return out


class FakeConsole:
    """The Console API over fixed data; actions are recorded in :attr:`calls`."""

    def __init__(
        self, *, without: Sequence[str] = (), fail: bool = False, empty: bool = False
    ) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.records = {} if empty else {r.id: r for r in records()}
        self._snap = snapshot()
        if empty:  # nothing to select anywhere: every table is empty
            self._snap = dataclasses.replace(
                self._snap,
                queues=(),
                workers=(),
                latency=(),
                breakers=(),
                limits=(),
                schedules=(),
                workflows=(),
                dedup=None,
                dead_letters=0,
            )
        self.fail = fail
        for name in without:
            setattr(self, name, None)

    def _log(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def snapshot(self) -> SystemSnapshot:
        if self.fail:
            raise ConnectionError("backend unreachable: connection refused")
        return self._snap

    def events(self, since: int, limit: int = 1000) -> list[Event]:
        return [e for e in events() if e.seq > since][-limit:]

    def tasks(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        f = flt if isinstance(flt, TaskFilter) else parse_filter(flt)
        hits = [r for r in self.records.values() if f.matches(r, NOW)]
        return hits[offset : offset + limit]

    def task_page(
        self,
        flt: str | TaskFilter | None = None,
        sort: str = DEFAULT_SORT,
        descending: bool = True,
        after: Cursor | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        f = flt if isinstance(flt, TaskFilter) else parse_filter(flt)
        hits = [r for r in self.records.values() if f.matches(r, NOW)]
        return page_of(hits, sort, descending, check_cursor(sort, after), offset, limit)

    def task(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    def waiting(self, state: TaskState, limit: int = 100) -> list[TaskRecord]:
        return soonest(self.records.values(), TaskState(state), NOW, limit)

    def dead_letters(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        f = flt if isinstance(flt, TaskFilter) else parse_filter(flt)
        dead = [r for r in self.records.values() if r.state is S.DEAD and f.matches(r, NOW)]
        return dead[offset : offset + limit]

    def dead_groups(self, flt: str | TaskFilter | None = None) -> list[FailureGroup]:
        return group_by_cause(self.dead_letters(flt, 0, 10_000))

    def replay(
        self,
        task_ids: Sequence[str],
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        note: str = "",
        dry_run: bool = False,
        again: bool = False,
    ) -> list[ReplayPlan]:
        self._log(
            "replay",
            list(task_ids),
            args=args,
            kwargs=kwargs,
            note=note,
            dry_run=dry_run,
            again=again,
        )
        plans = []
        for i, tid in enumerate(task_ids):
            rec = self.records[tid]
            edited = args is not None and args != rec.args
            skip = bool(rec.replayed_to) and not again and not edited
            plans.append(
                ReplayPlan(
                    tid,
                    rec.name,
                    rec.queue,
                    args or rec.args,
                    kwargs or rec.kwargs,
                    None if dry_run or skip else f"new-{i}",
                    edited,
                    rec.replayed_to,
                    skip,
                )
            )
        return plans

    def purge(self, task_ids: Sequence[str]) -> int:
        self._log("purge", list(task_ids))
        return len(task_ids)

    def cancel(self, task_id: str) -> bool:
        self._log("cancel", task_id)
        return True

    def run_now(self, task_id: str) -> str:
        self._log("run_now", task_id)
        return "now-" + task_id

    def enqueue(
        self,
        name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        self._log("enqueue", name, args, kwargs)
        return "new-task"

    def pause_queue(self, queue: str) -> None:
        self._log("pause_queue", queue)

    def resume_queue(self, queue: str) -> None:
        self._log("resume_queue", queue)

    def health(self) -> Health:
        return self._snap.health

    def metrics_text(self) -> str:
        return ""

    def pause_schedule(self, name: str, paused: bool = True) -> None:
        self._log("pause_schedule", name, paused)

    def trigger_schedule(self, name: str) -> str:
        self._log("trigger_schedule", name)
        return "new-task"

    def set_rate_limit(self, scope: str, key: str, rate: float, burst: int | None = None) -> None:
        self._log("set_rate_limit", scope, key, rate, burst)

    def set_breaker(self, key: str, state: str) -> None:
        self._log("set_breaker", key, state)

    def run_workflow(self, spec: dict[str, Any]) -> str:
        return "wf-new"

    def retry_workflow(self, run_id: str) -> list[str]:
        self._log("retry_workflow", run_id)
        return ["validate"]

    def workflow(self, run_id: str) -> WorkflowSnapshot | None:
        return next((w for w in self._snap.workflows if w.id == run_id), None)
