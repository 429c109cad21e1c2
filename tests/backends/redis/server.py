"""redis-server processes the Redis tests start themselves (never the shared one on 6379).

:func:`shared_server` lazily starts one in-memory server per test session on a free port;
it serves every test, each under a key prefix of its own (:func:`unique_prefix`). The
contract suite of ``tests/backends/conftest.py`` reaches it through
:func:`contract_backend`. :class:`RedisServer` also starts an AOF (``appendfsync always``)
server that the restart test stops and starts again on the same port and directory.

When the ``redis-server`` binary is missing (or ``DTQ_REDIS_SERVER`` names one that is
not there) the tests are skipped, unless the environment sets ``DTQ_REQUIRE_REDIS=1``:
then they fail.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import Backend
from dtq_core.clock import Clock

_counter = itertools.count(1)
_RUN = uuid.uuid4().hex[:6]


def redis_binary() -> str:
    """The redis-server path; skips (or fails with ``DTQ_REQUIRE_REDIS=1``) when missing.

    ``DTQ_REDIS_SERVER`` names the binary explicitly (default: ``redis-server`` on PATH).
    """
    wanted = os.environ.get("DTQ_REDIS_SERVER")
    if wanted:
        found = wanted if os.path.exists(wanted) else None
    else:
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
    if found is None:
        msg = "redis-server binary not found (install redis-server to run the Redis tests)"
        if os.environ.get("DTQ_REQUIRE_REDIS") == "1":
            pytest.fail(msg + "; DTQ_REQUIRE_REDIS=1 makes this a failure", pytrace=False)
        pytest.skip(msg)
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_prefix(tag: str = "t") -> str:
    """A key prefix no other test of this (or any other) run uses."""
    return f"dtqtest-{_RUN}-{tag}-{next(_counter)}"


class PortTaken(RuntimeError):
    """The port a redis-server was to listen on is in use."""


class RedisServer:
    """One redis-server subprocess on a free port.

    Args:
        aof: Persist with AOF and ``appendfsync always`` into ``data_dir``.
        data_dir: Working directory of the server (a fresh temporary one by default).
        password: Require this password (``--requirepass``).
    """

    def __init__(
        self, aof: bool = False, data_dir: Path | None = None, password: str | None = None
    ) -> None:
        self.binary = redis_binary()
        self.password = password
        self.port = free_port()
        self.aof = aof
        self._tmp = None if data_dir is not None else tempfile.mkdtemp(prefix="dtq-redis-")
        self.dir = Path(data_dir or self._tmp or ".")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "redis.log"

    def args(self) -> list[str]:
        """The command line."""
        out = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self._log),
        ]
        if self.password:
            out += ["--requirepass", self.password]
        if self.aof:
            out += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            out += ["--appendonly", "no"]
        return out

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING.

        A first start may find its free port taken meanwhile (by another test process
        of a parallel run): it then moves to another free port, a restart never does.
        """
        for _ in range(5):
            try:
                return self._start(timeout)
            except PortTaken:
                if self._started_once:
                    raise
                self.port = free_port()
        raise RuntimeError("redis-server found no free port in 5 tries")

    _started_once = False

    def _start(self, timeout: float) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password)
        try:
            while True:
                if self.proc.poll() is not None:
                    log = self._log.read_text() if self._log.exists() else ""
                    if "Address already in use" in log[-2000:]:
                        raise PortTaken(self.port)
                    raise RuntimeError(f"redis-server exited at start:\n{log[-2000:]}")
                try:
                    # With AOF on, the server may still be loading the file. The server
                    # that answers must be ours, not another's that took the port first.
                    if (
                        client.ping()
                        and client.info("server")["process_id"] == self.proc.pid
                        and client.info("persistence").get("loading", 0) == 0
                    ):
                        self._started_once = True
                        return self
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``, else SIGTERM and wait)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        """Stop and delete the temporary directory."""
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def url(self, prefix: str, retry_s: float = 30.0, db: int = 0, auth: bool = True) -> str:
        """A backend URL on this server under ``prefix`` (with its password unless not ``auth``)."""
        cred = f":{self.password}@" if self.password and auth else ""
        return f"redis://{cred}127.0.0.1:{self.port}/{db}?prefix={prefix}&retry_s={retry_s:g}"

    def client(self) -> object:
        """A plain redis-py client (decoded responses)."""
        import redis

        return redis.Redis(port=self.port, decode_responses=True, password=self.password)


_shared: RedisServer | None = None


def shared_server() -> RedisServer:
    """The session's in-memory server, started on first use and stopped at exit."""
    global _shared
    if _shared is None or _shared.proc is None or _shared.proc.poll() is not None:
        server = RedisServer()
        server.start()
        _shared = server
        atexit.register(server.cleanup)
    return _shared


def stop_shared() -> None:
    """Stop the session's server (the session fixture's finalizer)."""
    global _shared
    if _shared is not None:
        with contextlib.suppress(Exception):
            _shared.cleanup()
        _shared = None


def contract_backend(clock: Clock, tmp: Path) -> Backend:
    """A Redis backend for the shared contract suite, under a fresh prefix."""
    return make_backend(shared_server().url(unique_prefix("contract")), clock)
