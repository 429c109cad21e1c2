"""The fault suite's harness: a system under test, its journal, and the checker.

A :class:`System` is one run: a backend URL, real ``dtq worker`` subprocesses running
:mod:`tests.faults.app`, producers (subprocesses of :mod:`tests.faults.producer`, or
sends from this process), and the journal the tasks append to. A scenario drives a
system and injects one fault; :meth:`System.verdict` then reads the journal, the
producers' acknowledgements and the final task states, and returns a :class:`Verdict`:

- **lost**: acknowledged enqueues that never ran to their end and are not dead-lettered
  (or a SUCCESS record with no completed run in the journal);
- **duplicated**: tasks that ran to their end more than once;
- **unexpected**: tasks that ran though no enqueue of them was ever attempted;
- **overlapping**: tasks with two runs at the same time;
- **stale**: runs that started after the store had taken the task back from that
  process (its lease had run out and was reclaimed): a worker must check a task's lease
  before starting it. With ``overlapping`` this is "no concurrent double run while a
  lease is valid", asserted in every scenario.

The extension point for scenarios of other process layouts (an embedded owner with
attached workers and producers, say) is :class:`System` itself: ``spawn_worker`` takes
any extra ``dtq worker`` arguments and environment, ``spawn_producer`` any backend URL,
and :meth:`System.settle` only needs the journal plus a ``states`` callable (a scenario
passes one that reads the store the way its layout allows).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtq_core import Broker, BrokerConfig
from dtq_core.registry import Registry
from dtq_core.task import TaskRecord, TaskState
from tests.backends.redis.cluster import REPO, Worker, dtq_command, wait_for

APP = "tests.faults.app"
NAMES = ("fa.arec", "fa.poison", "fa.rec")
S = TaskState

#: Worker settings of the suite: short leases so that redelivery is quick.
FAST: dict[str, Any] = {
    "lease_s": 2.0,
    "heartbeat_s": 0.5,
    "max_deliveries": 3,
    "drain_timeout": 5.0,
}


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a task as the journal saw it."""

    pid: int
    start: float
    end: float | None


@dataclass(slots=True)
class Verdict:
    """What one run of a scenario found; :meth:`check` asserts the guarantees."""

    fault: str
    n: int
    lost: list[Any] = field(default_factory=list)
    duplicated: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    overlapping: list[Any] = field(default_factory=list)
    stale: list[Any] = field(default_factory=list)
    dead: list[Any] = field(default_factory=list)

    def row(self) -> list[str]:
        """The table row: fault, N, lost, duplicated, unexpected, overlapping+stale, dead."""
        return [
            self.fault,
            str(self.n),
            str(len(self.lost)),
            str(len(self.duplicated)),
            str(len(self.unexpected)),
            str(len(self.overlapping) + len(self.stale)),
            str(len(self.dead)),
        ]

    def check(self, *, duplicates: bool = True, dead: int = 0) -> None:
        """Assert at-least-once, no lost acknowledgement, no concurrent double run.

        Args:
            duplicates: Whether a task may run to its end twice (a lease ran out:
                at-least-once allows it); ``False`` asserts none did.
            dead: How many acknowledged tasks may end dead-lettered.
        """
        assert not self.lost, f"{self.fault}: acknowledged but lost: {self.lost[:20]}"
        assert not self.unexpected, f"{self.fault}: ran, never enqueued: {self.unexpected[:20]}"
        assert not self.overlapping, f"{self.fault}: concurrent double runs: {self.overlapping}"
        assert not self.stale, f"{self.fault}: started on a reclaimed lease: {self.stale[:20]}"
        if not duplicates:
            assert not self.duplicated, f"{self.fault}: ran twice: {self.duplicated[:20]}"
        assert len(self.dead) <= dead, f"{self.fault}: dead-lettered: {self.dead[:20]}"


TABLE_HEAD = ["fault", "N", "lost", "duplicated", "unexpected", "double run", "dead"]


def table(verdicts: Iterable[Verdict]) -> str:
    """A Markdown table of verdicts (the README's Faults section)."""
    rows = [TABLE_HEAD, *(v.row() for v in verdicts)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEAD))]
    lines = []
    for k, r in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


class Journal:
    """The append-only file the tasks write their starts and ends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def rows(self) -> list[dict[str, Any]]:
        """Every complete line so far (a torn last line of a killed process is skipped)."""
        out = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def runs(self) -> dict[Any, list[Run]]:
        """Runs per task argument: each start paired with the next end of its process."""
        open_: dict[tuple[Any, int], list[float]] = defaultdict(list)
        out: dict[Any, list[Run]] = defaultdict(list)
        for r in self.rows():
            key = (r["i"], r["pid"])
            if r["k"] == "start":
                open_[key].append(r["t"])
            elif r["k"] == "end" and open_[key]:
                out[r["i"]].append(Run(r["pid"], open_[key].pop(0), r["t"]))
        for (i, pid), starts in open_.items():
            out[i].extend(Run(pid, t, None) for t in starts)
        return out

    def ended(self) -> set[Any]:
        """Task arguments with at least one completed run."""
        return {r["i"] for r in self.rows() if r["k"] == "end"}


class System:
    """One system under test (see the module docstring).

    Args:
        url: The backend URL every process uses.
        tmp: A directory for the journal, acknowledgement files and logs.
        config: ``BrokerConfig`` fields for every worker (added to :data:`FAST`).
    """

    def __init__(self, url: str, tmp: Path, config: dict[str, Any] | None = None) -> None:
        self.url = url
        self.tmp = tmp
        self.config = {**FAST, **(config or {})}
        self.journal = Journal(tmp / "journal.jsonl")
        self.workers: list[Worker] = []
        self.producers: list[subprocess.Popen[bytes]] = []
        self._ackfiles: list[Path] = []
        #: Acknowledged sends made from this process: task argument -> task id.
        self.acked: dict[Any, str] = {}
        self.intents: set[Any] = set()
        self._client: Broker | None = None
        #: The checker's broker may own an embedded store (off where a scenario needs
        #: to show that only workers ever take it).
        self.client_may_own = True

    # -- processes -----------------------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a subprocess (this checkout first on its path)."""
        env = {
            **os.environ,
            "DTQ_FAULT_JOURNAL": str(self.journal.path),
            "DTQ_TEST_CONFIG": json.dumps(self.config),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            **(extra or {}),
        }
        env.pop("DTQ_BACKEND", None)
        return env

    def spawn_worker(
        self,
        concurrency: int = 2,
        pool: str = "thread",
        args: Iterable[str] = (),
        env: dict[str, str] | None = None,
    ) -> Worker:
        """Start a ``dtq worker`` process on the system's backend."""
        argv = [*dtq_command(), "worker", APP, "--backend", self.url, "-c", str(concurrency)]
        argv += ["--pool", pool, *args]
        log = self.tmp / f"worker-{len(self.workers)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=self.env(env), stdout=err, stderr=subprocess.STDOUT
            )
        w = Worker(proc, log, argv)
        self.workers.append(w)
        return w

    def spawn_producer(self, first: int, count: int, sleep: float = 0.0) -> subprocess.Popen[bytes]:
        """Start a producer process sending ``fa.rec(first..first+count-1)``."""
        ackfile = self.tmp / f"acks-{len(self._ackfiles)}.txt"
        self._ackfiles.append(ackfile)
        argv = [sys.executable, "-m", "tests.faults.producer", self.url, str(ackfile)]
        argv += [str(first), str(count), repr(sleep)]
        log = self.tmp / f"producer-{len(self.producers)}.log"
        with open(log, "wb") as err:
            p = subprocess.Popen(
                argv, cwd=REPO, env=self.env(), stdout=err, stderr=subprocess.STDOUT
            )
        self.producers.append(p)
        return p

    def client(self) -> Broker:
        """A producer-only broker in this process (task names registered by hand)."""
        if self._client is None:
            # May own an embedded store (no worker may run there meanwhile): the
            # checker reads it between runs.
            own = (self.client_may_own and self.url.startswith("embedded://")) or None
            b = Broker(BrokerConfig(backend=self.url, num_workers=0, registry=Registry(), own=own))
            b.open()
            b.backend.register_names(NAMES)
            self._client = b
        return self._client

    def close_client(self) -> None:
        """Close this process's broker (an embedded directory is then free to own)."""
        if self._client is not None:
            self._client.stop(drain_timeout=0)
            self._client = None

    def send(self, first: int, count: int, sleep: float = 0.0, name: str = "fa.rec") -> None:
        """Enqueue ``name(i)`` for ``first..first+count-1`` from this process."""
        b = self.client()
        for i in range(first, first + count):
            self.intents.add(i)
            self.acked[i] = b.send(name, [i], {"sleep": sleep} if name != "fa.poison" else {}).id

    def close(self) -> None:
        """Kill every process still running and close the client."""
        for w in self.workers:
            if w.alive():
                with contextlib.suppress(Exception):
                    w.kill()
        for p in self.producers:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        with contextlib.suppress(Exception):
            self.close_client()

    # -- the checker ---------------------------------------------------------------------

    def acknowledged(self) -> dict[Any, str]:
        """Every acknowledged enqueue: sends of this process and of producer processes."""
        out = dict(self.acked)
        for f in self._ackfiles:
            if not f.exists():
                continue
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "ack":
                    out[int(parts[1])] = parts[2]
        return out

    def attempted(self) -> set[Any]:
        """Every task argument an enqueue was attempted for."""
        out = set(self.intents)
        for f in self._ackfiles:
            if f.exists():
                out |= {int(p[1]) for p in map(str.split, f.read_text().splitlines()) if p}
        return out

    def settle(
        self,
        timeout: float,
        states: Callable[[dict[Any, str]], dict[Any, TaskState | None]] | None = None,
    ) -> None:
        """Wait until every acknowledged task has ended (a run's end, or dead-lettered).

        With the default ``states`` (the store, read from this process) it then waits
        for every record to be final too: a run can end just before its process dies
        and its acknowledgement with it, and then the task runs again.
        """
        read = states or self.store_states

        def done() -> bool:
            acked = self.acknowledged()
            waiting = set(acked) - self.journal.ended()
            if not waiting:
                return True
            st = read({i: acked[i] for i in waiting})
            return all(s in (S.DEAD, S.CANCELLED) for s in st.values())

        wait_for(done, timeout, "every acknowledged task to end", step=0.2)
        if states is not None:
            return
        left = self.acknowledged()

        def final() -> bool:
            st = self.store_states(left)
            for i, s in st.items():
                if s in (S.SUCCESS, S.DEAD, S.CANCELLED, S.FAILED):
                    del left[i]
            return not left

        wait_for(final, timeout, "every acknowledged task's record to be final", step=0.2)

    def store_states(self, ids: dict[Any, str]) -> dict[Any, TaskState | None]:
        """The states of tasks as this process's client reads them."""
        be = self.client().backend
        return {i: be.get_state(tid) for i, tid in ids.items()}

    def verdict(
        self, fault: str, records: Callable[[str], TaskRecord | None] | None = None
    ) -> Verdict:
        """Compare the journal with the acknowledgements and the final records."""
        get = records or self.client().backend.get
        acked = self.acknowledged()
        runs = self.journal.runs()
        v = Verdict(fault, len(acked))
        attempted = self.attempted() | set(acked)
        for i, tid in sorted(acked.items()):
            ended = [r for r in runs.get(i, []) if r.end is not None]
            rec = get(tid)
            if rec is not None and rec.state is S.DEAD:
                v.dead.append((i, rec.dead_reason))
            elif not ended or rec is None or rec.state is not S.SUCCESS:
                v.lost.append((i, None if rec is None else rec.state.value))
        for i, rs in runs.items():
            if i not in attempted:
                v.unexpected.append(i)
            done = sorted((r for r in rs if r.end is not None), key=lambda r: r.start)
            if len(done) > 1:
                v.duplicated.append(i)
            if len(rs) > 1 and i in acked:
                rec = get(acked[i])
                if rec is not None:
                    v.stale.extend((i, r) for r in _stale_starts(rec, rs))
            for a, b in itertools.pairwise(done):
                assert a.end is not None
                if b.start < a.end:
                    v.overlapping.append((i, a, b))
        return v


def _pid(worker: str | None) -> int | None:
    """The pid in a worker id (``host:pid:tN``)."""
    parts = (worker or "").split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _stale_starts(rec: TaskRecord, runs: list[Run]) -> list[Run]:
    """Runs that began after the store reclaimed the task from their process.

    An attempt closed ``LOST`` at time ``t`` by worker process ``P``: a run of ``P``
    starting after ``t`` and before ``P``'s next claim of the task began on a lease the
    store had already taken back.

    "Next" is in the store's order (the history), not by timestamp: times are the
    callers' clocks when they sent each call, so across a stall a claim sent before the
    reclaim can run after it and carry the earlier time. Its runs are then legitimate
    (under the new token), and the window before it is empty.
    """
    out = []
    for k, a in enumerate(rec.history):
        if a.outcome != "LOST" or a.finished_at is None:
            continue
        pid = _pid(a.worker)
        later = [
            b.started_at
            for b in rec.history[k + 1 :]
            if _pid(b.worker) == pid and b.started_at is not None
        ]
        if rec.worker and _pid(rec.worker) == pid and rec.started_at is not None:
            later.append(rec.started_at)
        until_ = later[0] if later else float("inf")
        out.extend(r for r in runs if r.pid == pid and a.finished_at < r.start < until_)
    return out


def until(what: Callable[[], Any], timeout: float, message: str) -> Any:
    """:func:`wait_for` with the suite's step."""
    return wait_for(what, timeout, message, step=0.05)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "16m") -> Iterator[Path | None]:
    """Mount a tmpfs of ``size`` at ``where`` (a real disk to fill up), unmounted after.

    Yields ``None`` when the process is not root or ``mount`` is refused (a container
    without the capability): callers fall back to an injected ``ENOSPC``.
    """
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield None
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
