"""``dtq-tui --demo``: an in-process engine with a workload that keeps every pane alive.

Queues of several priorities, a steady flow with bursts, slow tasks, tasks that fail
and retry, failures that die into the dead-letter queue for several distinct causes, a
rate-limited queue, a payment gateway whose outages trip a circuit breaker that then
recovers, cron schedules and DAG runs with a failing branch. Every choice the workload
makes comes from a random generator seeded with ``seed``, so a seed replays the same
workload (thread timing still varies run to run).

Features the engine does not have (yet) are skipped, never fatal: each is registered
inside a ``try``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dtq_core import Broker, BrokerConfig, ConfigError, DTQError, task
from dtq_core.registry import Registry

log = logging.getLogger("dtq.demo")


class GatewayTimeout(ConnectionError):
    """The demo's payment gateway did not answer."""


@dataclass
class World:
    """Shared state of the demo's tasks (the payment gateway's outages)."""

    rng: random.Random
    outage_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def roll(self) -> float:
        """A random number in [0, 1) from the seeded generator."""
        with self.lock:
            return self.rng.random()


@dataclass
class Features:
    """Which optional engine features the demo could use."""

    rate_limit: bool = False
    breaker: bool = False
    cron: bool = False
    dag: bool = False
    notes: list[str] = field(default_factory=list)


class Demo:
    """An engine plus workload; :meth:`start` it, read :attr:`console`, :meth:`stop` it.

    Args:
        seed: Seeds the workload's random choices (default 7).
        backend: A backend URL; default: ``embedded://`` in a temporary directory, or
            ``memory://`` if the embedded store is not available.
        workers: Worker threads.
        rate: Tasks per second of the steady flow (bursts come on top).
    """

    def __init__(
        self,
        seed: int | None = None,
        backend: str | None = None,
        workers: int = 4,
        rate: float = 25.0,
    ) -> None:
        self.seed = 7 if seed is None else seed
        self.rng = random.Random(self.seed)
        self.world = World(random.Random(self.seed + 1))
        self.registry = Registry()
        self.features = Features()
        self.rate = rate
        self._tmp: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._define_tasks()
        self.broker = self._make_broker(backend, workers)

    # -- setup ---------------------------------------------------------------------------

    def _make_broker(self, backend: str | None, workers: int) -> Broker:
        hooks = self._hooks()
        urls = [backend] if backend else []
        if not backend:
            self._tmp = tempfile.mkdtemp(prefix="dtq-demo-")
            urls = [f"embedded://{self._tmp}", "memory://"]
        last: Exception | None = None
        for url in urls:
            try:
                broker = Broker(
                    BrokerConfig(
                        backend=url,
                        num_workers=workers,
                        seed=self.seed,
                        registry=self.registry,
                        hooks=hooks,
                        retry_backoff=0.5,
                        retry_max_delay=4.0,
                        heartbeat_s=1.0,
                        lease_s=10.0,
                        result_ttl=300.0,
                        max_results=50_000,
                        own=True,
                    )
                )
                broker.open()
                return broker
            except (DTQError, OSError) as exc:
                last = exc
                self.features.notes.append(f"{url}: {exc}")
        raise DTQError(f"no backend for the demo: {last}")

    def _hooks(self) -> list[Any] | None:
        """The default chain, with a schedule registry of the demo's own."""
        try:
            from dtq_core.broker import default_hooks
            from dtq_core.scheduling.periodic import PeriodicHook
        except ImportError:
            return None
        hooks = default_hooks()
        if self._schedules is not None:
            hooks = [
                PeriodicHook(self._schedules) if isinstance(h, PeriodicHook) else h for h in hooks
            ]
        return hooks

    def _define_tasks(self) -> None:
        reg = self.registry
        world = self.world

        @task(name="resize_image", registry=reg, queue="default", max_retries=2)
        def resize_image(path: str, width: int) -> dict[str, Any]:
            time.sleep(0.005 + world.roll() * 0.03)
            if world.roll() < 0.01:
                raise OSError(f"cannot read {path}: truncated file at byte {width * 37}")
            return {"path": path, "width": width}

        email_opts: dict[str, Any] = {"queue": "email", "max_retries": 3, "priority": 1}
        try:
            task(name="_probe_rate", registry=Registry(), rate_limit="5/s")(lambda: None)
            email_opts["rate_limit"] = "4/s"
            self.features.rate_limit = True
        except ConfigError as exc:
            self.features.notes.append(f"rate limits: {exc}")

        @task(name="send_email", registry=reg, **email_opts)
        def send_email(to: str, template: str = "welcome", api_token: str = "") -> str:
            time.sleep(0.01 + world.roll() * 0.05)
            if world.roll() < 0.12:
                raise TimeoutError(f"SMTP 421 {to.split('@')[1]} busy, try again later")
            return f"sent {template} to {to}"

        pay_opts: dict[str, Any] = {"queue": "payments", "max_retries": 2, "priority": 0}
        try:
            task(name="_probe_breaker", registry=Registry(), breaker="x")(lambda: None)
            pay_opts.update(breaker="payments", breaker_threshold=5, breaker_reset=6.0)
            self.features.breaker = True
        except ConfigError as exc:
            self.features.notes.append(f"breakers: {exc}")

        @task(name="charge", registry=reg, **pay_opts)
        def charge(amount: int, currency: str, card_token: str = "") -> dict[str, Any]:
            time.sleep(0.02 + world.roll() * 0.05)
            if time.time() < world.outage_until:
                raise GatewayTimeout(f"gateway timeout after {20 + int(world.roll() * 20)}s")
            return {"charged": amount, "currency": currency}

        @task(name="import_csv", registry=reg, queue="bulk", priority=9, max_retries=0)
        def import_csv(url: str, password: str = "") -> int:
            time.sleep(0.01 + world.roll() * 0.02)
            if world.roll() < 0.06:
                row = int(world.roll() * 5000)
                raise ValueError(f"row {row}: bad date '2024-{13 + row % 5:02d}-01'")
            return int(world.roll() * 1000)

        @task(name="build_report", registry=reg, queue="reports", max_retries=1, time_limit=30)
        def build_report(month: int, region: str) -> dict[str, Any]:
            time.sleep(1.5 + world.roll() * 3.5)
            if world.roll() < 0.15:
                raise KeyError(f"total_{region}")
            return {"month": month, "region": region, "rows": int(world.roll() * 1e5)}

        @task(name="audit_log", registry=reg, queue="critical", priority=0, max_retries=5)
        def audit_log(event: str, user_id: int) -> None:
            time.sleep(0.002)

        @task(name="notify_webhook", registry=reg, queue="default", priority=5, max_retries=1)
        def notify_webhook(url: str, event: str) -> int:
            time.sleep(0.02 + world.roll() * 0.1)
            if world.roll() < 0.3:
                code = 500 + int(world.roll() * 4)
                raise RuntimeError(f"POST {url} answered HTTP {code}")
            return 200

        for name in ("extract", "clean", "enrich", "validate", "load", "notify"):
            self._dag_task(name)

        self._schedules = None
        try:
            from dtq_core.scheduling.periodic import ScheduleRegistry, periodic

            self._schedules = ScheduleRegistry()
            sched = self._schedules

            def every(expr: str, fallback: str) -> str:
                try:
                    from dtq_core.scheduling.cron import CronExpression

                    CronExpression(expr, None)
                    return expr
                except Exception:
                    return fallback

            @periodic(
                every("*/15 * * * * *", "*/1 * * * *"),
                name="heartbeat",
                registry=reg,
                schedules=sched,
                queue="critical",
            )
            def heartbeat() -> str:
                return "ok"

            @periodic(
                "*/5 * * * *", name="cleanup_tmp", registry=reg, schedules=sched, queue="default"
            )
            def cleanup_tmp() -> int:
                return 0

            @periodic(
                "0 2 * * *",
                name="nightly_report",
                registry=reg,
                schedules=sched,
                queue="reports",
                args=[1, "eu"],
            )
            def nightly_report(month: int, region: str) -> str:
                return f"report {month} {region}"

            self.features.cron = True
        except (ImportError, ConfigError, DTQError) as exc:
            self.features.notes.append(f"cron: {exc}")

        try:
            from dtq_core.scheduling.dag import Workflow  # noqa: F401

            self.features.dag = True
        except ImportError as exc:
            self.features.notes.append(f"workflows: {exc}")

    def _dag_task(self, name: str) -> None:
        world = self.world

        def step(batch: int, fail: bool = False, **_: Any) -> dict[str, Any]:
            time.sleep(0.3 + world.roll() * 1.2)
            if fail:
                raise ValueError(f"{name}: {int(world.roll() * 40) + 1} rows without a customer id")
            return {"step": name, "batch": batch}

        step.__name__ = step.__qualname__ = f"etl_{name}"
        task(name=f"etl.{name}", registry=self.registry, queue="default", max_retries=0)(step)

    # -- running -------------------------------------------------------------------------

    @property
    def console(self) -> Any:
        """The Console API of the demo's engine."""
        return self.broker.control

    def start(self) -> Demo:
        """Start the engine and the workload thread."""
        self.broker.start()
        self._thread = threading.Thread(target=self._run, name="dtq-demo-workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the workload and the engine; remove the temporary directory."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.broker.stop(drain_timeout=0.5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _send(
        self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        try:
            self.broker.send(name, args, kwargs or {}, **kw)
        except DTQError as exc:  # a full or failing backend must not kill the workload
            log.debug("demo enqueue failed: %s", exc)

    def _run(self) -> None:
        rng = self.rng
        tick = 0.1
        t = 0
        next_dag = 2.0
        while not self._stop.wait(tick):
            t += 1
            now = t * tick
            # The steady flow.
            for _ in range(_poisson(rng, self.rate * tick)):
                self._one(rng)
            # A burst into the bulk queue every ~15 s.
            if t % 150 == 30:
                for i in range(rng.randint(150, 400)):
                    self._send(
                        "import_csv", [f"s3://imports/2024/{t}/{i}.csv"], {"password": "hunter2"}
                    )
            # A slow report now and then.
            if rng.random() < 0.03:
                self._send("build_report", [rng.randint(1, 12), rng.choice(["eu", "us", "apac"])])
            # Payment gateway outage: ~8 s every ~40 s, so the breaker trips and recovers.
            if t % 400 == 50:
                self.world.outage_until = time.time() + 8.0
            # A DAG run every ~12 s; every other one has a failing branch.
            if self.features.dag and now >= next_dag:
                next_dag = now + 12.0
                self._workflow(fail=(t // 120) % 2 == 0)

    def _one(self, rng: random.Random) -> None:
        r = rng.random()
        if r < 0.45:
            self._send(
                "resize_image", [f"img/{rng.randint(1, 99999)}.png", rng.choice([320, 640, 1280])]
            )
        elif r < 0.65:
            user = rng.randint(1, 5000)
            self._send(
                "send_email",
                [f"user{user}@example.{rng.choice(['com', 'org'])}"],
                {
                    "template": rng.choice(["welcome", "receipt", "reset"]),
                    "api_token": "tk_live_9f8e7d",
                },
            )
        elif r < 0.80:
            self._send(
                "charge",
                [rng.randint(5, 500), rng.choice(["EUR", "USD"])],
                {"card_token": f"tok_{rng.randint(10**8, 10**9)}"},
            )
        elif r < 0.92:
            user = rng.randint(1, 5000)
            # The same login within the dedup window is dropped: the dedup pane fills.
            self._send("audit_log", ["login", user], dedup_key=f"login:{user}")
        elif r < 0.95:
            hook = rng.choice(
                ["crm.example.com/hooks/7", "erp.example.net/in", "chat.example.org/x"]
            )
            self._send("notify_webhook", [f"https://{hook}", rng.choice(["paid", "refund"])])
        else:
            self._send(
                "resize_image",
                [f"img/{rng.randint(1, 99999)}.png", 4096],
                countdown=rng.uniform(2, 20),
            )

    def _workflow(self, fail: bool) -> None:
        try:
            from dtq_core.scheduling.dag import Workflow, run_workflow
        except ImportError:
            return
        batch = int(self.rng.random() * 1000)
        wf = Workflow("nightly-etl")
        wf.node("extract", "etl.extract", [batch])
        wf.node("extract_b", "etl.extract", [batch + 1])
        wf.node("clean", "etl.clean", [batch], after="extract")
        wf.node("validate", "etl.validate", [batch], {"fail": fail}, after=["extract", "extract_b"])
        wf.node("enrich", "etl.enrich", [batch], after="clean")
        wf.node("load", "etl.load", [batch], after=["enrich", "validate"])
        wf.node("notify", "etl.notify", [batch], after="load")
        try:
            run_workflow(self.broker, wf)
        except DTQError as exc:
            log.debug("demo workflow failed to start: %s", exc)


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson-distributed count (Knuth), for a flow that looks natural."""
    limit, k, p = pow(2.718281828, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
