"""``embedded://DIR`` in any process: the owner's store here, or its socket elsewhere.

One process owns a data directory: it holds the lock, recovers the log, is its only
writer and serves the store on ``DIR/dtq.sock`` (:mod:`.server`). Every other broker
on the same ``embedded://DIR`` attaches to that socket with no change to its code:
producers enqueue and wait for results, workers claim and acknowledge in batches under
leases, as on Redis.

Who owns: a process that may (:attr:`Backend.may_own`: brokers that run workers; never
producers, consoles or ``dtq`` commands) takes the lock if it is free, and otherwise
attaches. When the owner dies, the first attached process that may own takes the lock
over (recovery included) and serves the socket; the others, and producers, reattach to
it, retrying with backoff for :attr:`Backend.attach_timeout` seconds. The lock is the
only arbiter: a slow owner keeps its lock and is never replaced. A claim whose reply
died with the owner is requeued at once by the next one (:mod:`.deliveries`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dtq_core.backends.base import Capabilities, Delivery, NewTask, Transition
from dtq_core.backends.embedded.backend import EmbeddedBackend, lock_holder, parse_url
from dtq_core.backends.embedded.client import Client, OwnerGone
from dtq_core.backends.embedded.deliveries import Deliveries, Received
from dtq_core.backends.embedded.forwarding import ForwardingBackend
from dtq_core.backends.embedded.server import StoreServer
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import BackendError, BackendUnavailable, StoreLocked
from dtq_core.task import TaskState

if TYPE_CHECKING:
    from dtq_core.control import LocalConsole

log = logging.getLogger("dtq.embedded")

#: What an attached process can promise: the owner's durability, round trips per call.
ATTACHED = Capabilities(durable=True, cross_process=True, blocking_claim=True, batch_acks=True)
#: Longest a claim waits in one call, so an attached worker notices a dead owner soon.
MAX_CLAIM_WAIT = 2.0
#: Longest a result wait blocks in one call.
MAX_RESULT_WAIT = 10.0


class EmbeddedStore(ForwardingBackend):
    """The backend ``embedded://DIR`` names, owned here or attached to its owner."""

    capabilities = EmbeddedBackend.capabilities

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock, max_deliveries=EmbeddedBackend.max_deliveries)
        self.path, _ = parse_url(url)  # a malformed URL is refused now, not at open
        self._local: EmbeddedBackend | None = None
        self._client: Client | None = None
        self._server: StoreServer | None = None
        self._console: LocalConsole | None = None
        self._switch = threading.Lock()
        # What this process's workers received from the owner (attached only), and the
        # switches of owner begun: a claim's reply is recorded only if none began since.
        self._deliveries = Deliveries(str(self.path.resolve()))
        self._switches = 0
        self._closed = False
        # Set by wakeup() (the broker is stopping): a failover stops waiting for an owner.
        self._stopping = threading.Event()
        #: How often this process took the store over from a dead owner.
        self.takeovers = 0

    @property
    def role(self) -> str:
        """``owner`` while this process owns the store, else ``attached``."""
        return "owner" if self._local is not None else "attached"

    @property
    def local(self) -> EmbeddedBackend | None:
        """The owned store (``None`` while attached)."""
        return self._local

    def serve_console(self, console: Any) -> None:
        """The Console API served on the socket while this process owns the store."""
        self._console = console
        if self._server is not None:
            self._server.console = console

    def open(self) -> None:
        """Own the store if this process may and nobody does; otherwise attach.

        Raises:
            BackendUnavailable: Nobody owns the store and this process may not, or the
                owner did not answer within :attr:`attach_timeout`.
        """
        self._closed = False
        self._stopping.clear()
        self._deliveries.clear()
        if self.may_own:
            self.path.mkdir(parents=True, exist_ok=True)
            if self._try_own():
                return
        elif not self.path.is_dir():
            raise BackendUnavailable(
                f"no embedded store at {self.path}: start a worker there first "
                f"(dtq worker APP --backend embedded://{self.path})"
            )
        self._attach(time.monotonic() + self.attach_timeout)

    def _try_own(self, took_over: Received | None = None) -> bool:
        """Own the store; ``took_over``: after its owner died, what our workers received."""
        local = EmbeddedBackend(self.url, self.clock)
        for name, value in self._settings.items():
            setattr(local, name, value)
        local.took_over = took_over is not None
        local.received = took_over
        try:
            local.open()
        except StoreLocked:
            return False
        # Owned before served: a console call that arrives on the socket at once is
        # answered by this store (through the console's backend), not refused as
        # "not open".
        self._local = local
        self.capabilities = local.capabilities
        server = StoreServer(local, self._console, local.socket_path())
        try:
            server.start()
        except BaseException:
            self._local = None
            local.close()
            raise
        self._server = server
        return True

    def _attach(self, deadline: float) -> None:
        delay = 0.02
        while True:
            client = Client(self.path / "dtq.sock", "backend")
            try:
                client.check()
            except OwnerGone as exc:
                client.close()
                if self.may_own and self._try_own():
                    return
                # Nobody holds the lock: no owner is starting either, so a process that
                # may not own says so now instead of waiting for one.
                if time.monotonic() >= deadline or lock_holder(self.path) is None:
                    raise BackendUnavailable(self._nobody_answers(exc)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self._client = client
            self.capabilities = ATTACHED
            return

    def _nobody_answers(self, exc: Exception) -> str:
        holder = lock_holder(self.path)
        if holder is not None:
            return (
                f"the embedded store {self.path} is locked by process {holder}, which does "
                f"not answer on its socket (waited {self.attach_timeout:g}s: {exc}); it is "
                "starting, stuck, or opened the store without serving it"
            )
        return (
            f"no process owns the embedded store {self.path} (waited "
            f"{self.attach_timeout:g}s: {exc}); start a worker there "
            f"(dtq worker APP --backend embedded://{self.path})"
        )

    def _failover(self, failed: Client, exc: OwnerGone) -> None:
        """The owner stopped answering: take the store over, or reattach to the new one."""
        with self._switch:
            if self._local is not None or self._client is not failed:
                return  # another thread has already switched
            failed.close()
            self._switches += 1
            deadline = time.monotonic() + self.attach_timeout
            delay = 0.05
            attempt = 0
            while not self._closed and not self._stopping.is_set():
                attempt += 1
                # Under the switch lock: no claim reply is recorded while recovery reads.
                if self.may_own and self._try_own(took_over=self._deliveries.snapshot()):
                    self.takeovers += 1
                    self._client = None
                    self._deliveries.clear()  # owned here from now on: nothing to tell
                    log.warning(
                        "the owner of %s stopped answering (%s): this process took it over",
                        self.path,
                        exc,
                    )
                    return
                client = Client(self.path / "dtq.sock", "backend")
                try:
                    client.check()
                    self._deliveries.tell(client, self.clock.now(), self.path)
                except OwnerGone as again:
                    client.close()
                    if time.monotonic() >= deadline:
                        raise BackendUnavailable(
                            f"the owner of the embedded store {self.path} stopped answering: "
                            + self._nobody_answers(again)
                        ) from None
                    log.warning(
                        "embedded store %s: no owner answers (attempt %d, %s); retrying in %.2fs",
                        self.path,
                        attempt,
                        again,
                        delay,
                    )
                    self._stopping.wait(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                self._client = client
                log.warning("embedded store %s: reattached to its new owner", self.path)
                return
            raise BackendUnavailable(
                f"embedded store {self.path}: its owner is gone and this broker is stopping"
            )

    def close(self) -> None:
        """Stop serving and close the owned store, or close the connections."""
        self._closed = True
        with self._switch:
            server, self._server = self._server, None
            local, self._local = self._local, None
            client, self._client = self._client, None
            self._deliveries.clear()
        if server is not None:
            server.stop()
        if local is not None:
            local.close()
        if client is not None:
            client.close()

    def _do(self, name: str, *args: Any, block_s: float = 0.0, **kwargs: Any) -> Any:
        local = self._local
        if local is not None:
            return getattr(local, name)(*args, **kwargs)
        return self._remote(name, args, kwargs, block_s)

    def _remote(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], block_s: float
    ) -> Any:
        sent = False
        while True:
            switches, local, client = self._switches, self._local, self._client
            try:
                if local is not None:
                    return getattr(local, name)(*args, **kwargs)
                if client is None:
                    raise BackendError(f"embedded store {self.path} is not open")
                if name == "claim":
                    return self._claim_remote(client, switches, args, kwargs, block_s)
                result = client.call(name, args, kwargs, block_s)
                self._deliveries.settled(name, args)
                return result
            except OwnerGone as exc:
                if client is None:
                    raise
                sent = sent or exc.sent
                self._failover(client, exc)
                if sent and name == "ack_many":
                    kwargs = {**kwargs, "retry": True}
            except BackendError as exc:
                if sent and name in ("enqueue", "enqueue_many") and "already exists" in str(exc):
                    return self._enqueue_after_loss(args[0], args[1])
                raise

    def _claim_remote(
        self, client: Client, seen: int, args: tuple[Any, ...], kw: dict[str, Any], wait: float
    ) -> list[Delivery]:
        """A claim from the owner, recorded unless a switch of owner began since ``seen``."""
        self._deliveries.claiming(args[1])
        batch: list[Delivery] = client.call("claim", args, kw, wait)
        if not batch:
            return batch
        with self._switch:  # held by a switch of owner throughout (recovery, tell)
            if self._switches == seen and self._client is client:
                self._deliveries.add(batch)
                return batch
        # A switch began since this claim was sent and told the new owner what our workers
        # hold, without these: it requeued them, or the release does (a no-op if it did).
        # The worker claims again rather than run a task that another may run too.
        for d in batch:
            with contextlib.suppress(BackendError):
                self._do("release", d.task_id, d.token, self.clock.now())
        return []

    def _enqueue_after_loss(self, tasks: Any, now: float) -> list[Transition]:
        """An enqueue resent after its owner died: ids already stored count as stored."""
        out: list[Transition] = []
        for t in [tasks] if isinstance(tasks, NewTask) else list(tasks):
            try:
                out.extend(self._do("enqueue", t, now))
            except BackendError as exc:
                rec = self._do("get", t.id)
                if rec is None or rec.payload != t.payload or rec.queue != t.queue:
                    raise exc from None
                out.append(Transition(t.id, t.name, t.queue, None, TaskState.PENDING))
        return out

    # -- the protocol, forwarded ---------------------------------------------------------

    def wakeup(self) -> None:
        """Wake blocked claimers (the owner's too); a failover stops waiting (a stop)."""
        self._stopping.set()
        with contextlib.suppress(BackendError):
            self._do("wakeup")

    def ping(self) -> float:
        """Round trip to the owner (0 when owned here)."""
        t0 = time.perf_counter()
        self._do("ping")
        return time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """The owner's recovery and log figures, and this process's role."""
        out = dict(self._do("info"))
        out["role"] = self.role
        if self.takeovers:
            out["takeovers"] = self.takeovers
        return out

    def wait_final(self, task_id: str, timeout: float) -> bool:
        """Attached: block on the owner until the task is final (its events wake it)."""
        if self._local is not None:
            return False
        t = min(timeout, MAX_RESULT_WAIT)
        return bool(self._do("wait_final", task_id, t, block_s=t))

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease ready tasks; an attached claim waits at most :data:`MAX_CLAIM_WAIT`."""
        if self._local is None:
            wait = min(wait, MAX_CLAIM_WAIT)
        return self._do(  # type: ignore[no-any-return]
            "claim", queues, worker_id, lease_s, limit, now, wait, block_s=wait
        )
