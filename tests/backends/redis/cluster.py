"""``dtq worker`` processes on one Redis, a producer broker, and the executions they record.

A :class:`Cluster` is one test's system: a backend URL under the test's prefix, worker
subprocesses running :mod:`tests.backends.redis.app_module`, producer brokers in this
process, and the execution records the tasks push to the session's in-memory server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from dtq_core import Broker, BrokerConfig
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.registry import Registry
from tests.backends.redis.server import RedisServer

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
APP = "tests.backends.redis.app_module"
#: Task names the app module registers (producers here do not import it).
NAMES = ("rt.flaky", "rt.poison", "rt.rec")


def dtq_command() -> list[str]:
    """The ``dtq`` console script of this interpreter (or ``python -c`` running it)."""
    exe = Path(sys.executable).with_name("dtq")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dtq")
    if found:
        return [found]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def wait_for(what: Callable[[], T], timeout: float, message: str = "", step: float = 0.02) -> T:
    """Poll ``what`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or what}")
        time.sleep(step)


class Worker:
    """One ``dtq worker`` subprocess (its stderr goes to a file)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, args: list[str]) -> None:
        self.proc = proc
        self.log = log
        self.args = args

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def owns(self, worker_id: str | None) -> bool:
        """Whether a worker id (``host:pid:tN``) belongs to this process."""
        return bool(worker_id) and f":{self.pid}:" in f"{worker_id}:"

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL; return the time of the kill (after the process is gone)."""
        t = time.time()
        self.proc.kill()
        self.proc.wait(10)
        return t

    def term(self, timeout: float = 15.0) -> int:
        """SIGTERM (drain and stop); return the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        """What the process wrote on stderr so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """Workers, producers and records of one test.

    Args:
        server: The redis-server the backend under test runs on.
        recorder: The server the task records go to.
        prefix: This test's key prefix.
        tmp: A directory for worker logs.
        config: ``BrokerConfig`` fields for every worker (``DTQ_TEST_CONFIG``).
        retry_s: The backend URL's ``retry_s``.
    """

    def __init__(
        self,
        server: RedisServer,
        recorder: RedisServer,
        prefix: str,
        tmp: Path,
        config: dict[str, Any],
        retry_s: float = 30.0,
    ) -> None:
        self.server = server
        self.prefix = prefix
        self.url = server.url(prefix, retry_s=retry_s)
        self.tmp = tmp
        self.config = config
        self.rec_url = f"redis://127.0.0.1:{recorder.port}/0"
        self.rec_key = f"{prefix}:records"
        self.rec = redis.Redis.from_url(self.rec_url, decode_responses=True)
        self.workers: list[Worker] = []
        self.producers: list[Broker] = []

    # -- processes ---------------------------------------------------------------------------

    def spawn(
        self,
        concurrency: int = 2,
        queues: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Worker:
        """Start a ``dtq worker`` process (``config`` adds to the cluster's config)."""
        args = [*dtq_command(), "worker", APP, "--backend", self.url, "-c", str(concurrency)]
        if queues:
            args += ["-Q", queues]
        env = {
            **os.environ,
            "DTQ_TEST_REC_URL": self.rec_url,
            "DTQ_TEST_REC_KEY": self.rec_key,
            "DTQ_TEST_CONFIG": json.dumps({**self.config, **(config or {})}),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        env.pop("DTQ_BACKEND", None)
        log = self.tmp / f"{self.prefix}-worker-{len(self.workers)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        w = Worker(proc, log, args)
        self.workers.append(w)
        return w

    def live_worker_ids(self) -> list[str]:
        """Worker ids of the live heartbeats on the server."""
        return [w["id"] for w in self.backend.workers(time.time())]

    def wait_ready(self, *workers: Worker, timeout: float = 30.0) -> None:
        """Wait until each process published a heartbeat (its pool and maintenance run)."""
        for w in workers:
            wait_for(
                lambda w=w: any(w.owns(i) for i in self.live_worker_ids()) or _died(w),
                timeout,
                f"worker {w.pid} to publish a heartbeat",
            )
            assert w.alive(), f"worker {w.pid} exited {w.proc.returncode}:\n{w.stderr()}"

    def producer(self, **overrides: Any) -> Broker:
        """A producer-only broker in this process (task names registered by hand)."""
        overrides.setdefault("registry", Registry())
        b = Broker(BrokerConfig(backend=self.url, num_workers=0, **overrides))
        b.open()
        b.backend.register_names(NAMES)
        self.producers.append(b)
        return b

    @property
    def backend(self) -> RedisBackend:
        """The first producer's backend (made on demand)."""
        if not self.producers:
            self.producer()
        be = self.producers[0].backend
        assert isinstance(be, RedisBackend)
        return be

    def close(self) -> None:
        """Kill every worker still running and stop the producers."""
        for w in self.workers:
            if w.alive():
                with contextlib.suppress(Exception):
                    w.kill()
        for b in self.producers:
            with contextlib.suppress(Exception):
                b.stop(drain_timeout=0)

    # -- records -----------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every execution record so far, in push order."""
        return [json.loads(r) for r in self.rec.lrange(self.rec_key, 0, -1)]

    def executions(self) -> Counter[Any]:
        """How many times each task argument ``i`` started."""
        return Counter(r["i"] for r in self.records() if r["kind"] == "start")


def _died(w: Worker) -> bool:
    return not w.alive()
