"""A real Redis Cluster on free ports for the tests: masters (and replicas) of one binary.

:func:`shared_cluster` starts one cluster of 3 masters per test session, lazily (the
contract suite and the cluster tests share it, each under a key prefix of its own);
:class:`RedisCluster` starts others (with replicas, for failover) that a test owns.
Each node is ``redis-server --cluster-enabled yes`` in a directory of its own; the
cluster is formed by ``redis-cli --cluster create ... --cluster-yes``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.base import Backend
from dtq_core.clock import Clock
from tests.backends.redis.server import redis_binary, unique_prefix


def redis_cli() -> str:
    """The redis-cli path (next to redis-server); skips like :func:`redis_binary`."""
    server = redis_binary()
    cli = Path(server).with_name("redis-cli")
    found = str(cli) if cli.exists() else shutil.which("redis-cli")
    if found is None:
        # Like a missing redis-server: DTQ_REQUIRE_REDIS=1 (CI) makes it a failure.
        msg = "redis-cli not found (it forms the test cluster; it comes with redis-server)"
        if os.environ.get("DTQ_REQUIRE_REDIS") == "1":
            pytest.fail(msg + "; DTQ_REQUIRE_REDIS=1 makes this a failure", pytrace=False)
        pytest.skip(msg)
    return found


def cluster_port() -> int:
    """A free port under 55536 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode:
    """One ``redis-server --cluster-enabled yes`` process."""

    def __init__(self, binary: str, base: Path, password: str = "") -> None:
        self.binary = binary
        self.password = password
        self.port = cluster_port()
        self.dir = base / str(self.port)
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (it keeps its cluster config across restarts)."""
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                *(["--requirepass", self.password, "--masterauth", self.password]
                  if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def client(self) -> Any:
        """A plain (non-cluster) client of this node."""
        import redis

        return redis.Redis(
            port=self.port,
            password=self.password or None,
            decode_responses=True,
            socket_timeout=5,
        )

    def kill(self) -> None:
        """SIGKILL the node."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RedisCluster:
    """A local Redis Cluster of ``masters`` masters with ``replicas`` replicas each."""

    def __init__(self, masters: int = 3, replicas: int = 0, password: str = "") -> None:
        binary = redis_binary()
        self.cli = redis_cli()
        self._tmp = tempfile.mkdtemp(prefix="dtq-rcluster-")
        self.nodes = [
            ClusterNode(binary, Path(self._tmp), password) for _ in range(masters * (1 + replicas))
        ]
        self.replicas = replicas
        self.password = password

    def _env(self) -> dict[str, str]:
        """redis-cli's environment: the password in ``REDISCLI_AUTH``, not on its args."""
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        return env

    @property
    def port(self) -> int:
        """The seed node's port (the first node)."""
        return self.nodes[0].port

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start every node, form the cluster, wait until it serves every slot.

        A cluster that does not form is stopped (no node outlives a failed start).
        """
        try:
            return self._start(timeout)
        except BaseException:
            self.cleanup()
            raise

    def _start(self, timeout: float) -> RedisCluster:
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            self._wait_ping(n, timeout)
        if len(self.nodes) < 3:
            # redis-cli refuses fewer than 3 masters: slots and meetings by hand.
            self._form_small()
            self.wait_ok(timeout)
            return self
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [self.cli, "--cluster", "create", *addrs, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
            env=self._env(),
        )  # fmt: skip
        self.wait_ok(timeout)
        if self.replicas:
            self.wait_synced(timeout)
        return self

    def _form_small(self) -> None:
        """1 or 2 masters, no replicas: each takes an even share of the 16384 slots."""
        share = 16384 // len(self.nodes)
        for i, n in enumerate(self.nodes):
            c = n.client()
            try:
                last = 16383 if i == len(self.nodes) - 1 else (i + 1) * share - 1
                c.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
                if i:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            finally:
                c.close()

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Wait until every master has all its replicas connected and in sync."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for m in self.masters():
                c = m.client()
                try:
                    info = c.info("replication")
                finally:
                    c.close()
                online = [
                    v for k, v in info.items()
                    if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
                ]  # fmt: skip
                ok = ok and len(online) >= self.replicas
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster's replicas did not come online")
            time.sleep(0.1)

    def _wait_ping(self, node: ClusterNode, timeout: float) -> None:
        c = node.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                with contextlib.suppress(Exception):
                    if c.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node on port {node.port} did not answer")
                time.sleep(0.02)
        finally:
            c.close()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for n in self.nodes:
                if n.proc is None or n.proc.poll() is not None:
                    continue
                c = n.client()
                try:
                    info = c.execute_command("CLUSTER INFO")
                    ok = (
                        info.get("cluster_state") == "ok"
                        if isinstance(info, dict)
                        else "cluster_state:ok" in info
                    )
                    states.append(ok)
                except Exception:
                    states.append(False)
                finally:
                    c.close()
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def topology(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` of a live node: id, port, role, master id, slots, per node."""
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        text = subprocess.run(
            [self.cli, "-p", str(live.port), "cluster", "nodes"],
            check=True, capture_output=True, text=True, timeout=10, env=self._env(),
        ).stdout  # fmt: skip
        out = []
        for line in text.splitlines():
            f = line.split()
            out.append({
                "id": f[0], "port": int(f[1].split(":")[1].split("@")[0]),
                "master": "master" in f[2] and "fail" not in f[2],
                "failed": "fail" in f[2], "master_id": f[3], "slots": f[8:],
            })  # fmt: skip
        return out

    def node(self, port: int) -> ClusterNode:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now (asked of a live node)."""
        return [self.node(t["port"]) for t in self.topology() if t["master"]]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """A replica of ``master``."""
        topo = self.topology()
        mid = next(t["id"] for t in topo if t["port"] == master.port)
        return self.node(next(t["port"] for t in topo if t["master_id"] == mid))

    def node_id(self, node: ClusterNode) -> str:
        """The cluster id of ``node``."""
        return str(next(t["id"] for t in self.topology() if t["port"] == node.port))

    def reshard(self, source: ClusterNode, target: ClusterNode, slots: int) -> None:
        """Move ``slots`` slots (the lowest of ``source``'s) to ``target``, keys and all."""
        subprocess.run(
            [self.cli, "--cluster", "reshard", f"127.0.0.1:{source.port}",
             "--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target),
             "--cluster-slots", str(slots), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
            env=self._env(),
        )  # fmt: skip

    #: Added to every URL :meth:`url` makes (``&wait_replicas=1``, say).
    options = ""

    def url(self, prefix: str, retry_s: float = 30.0) -> str:
        """A ``redis+cluster://`` backend URL on the seed node under ``prefix``."""
        auth = f":{self.password}@" if self.password else ""
        return (
            f"redis+cluster://{auth}127.0.0.1:{self.port}?prefix={prefix}&retry_s={retry_s:g}"
            + self.options
        )

    def cleanup(self) -> None:
        """Stop every node and delete their directories."""
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)


_shared: RedisCluster | None = None


def shared_cluster() -> RedisCluster:
    """The session's cluster of 3 masters, started on first use and stopped at exit."""
    global _shared
    if _shared is None:
        cluster = RedisCluster(masters=3)
        atexit.register(cluster.cleanup)
        cluster.start()
        _shared = cluster
    return _shared


def stop_shared_cluster() -> None:
    """Stop the session's cluster (the session fixture's finalizer)."""
    global _shared
    if _shared is not None:
        with contextlib.suppress(Exception):
            _shared.cleanup()
        _shared = None


def contract_cluster_backend(clock: Clock, tmp: Path) -> Backend:
    """A Redis Cluster backend for the shared contract suite, under a fresh prefix."""
    return make_backend(shared_cluster().url(unique_prefix("ccontract")), clock)
