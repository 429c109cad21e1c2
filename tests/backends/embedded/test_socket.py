"""The owner's socket under hostile or careless peers: uid check, bounds, read-only,
garbage, vanishing peers. Each test runs an owner in this process and talks to it."""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from dtq_core import Broker, BrokerConfig
from dtq_core.backends.embedded import wire
from dtq_core.backends.embedded.client import Client
from dtq_core.backends.embedded.server import StoreServer
from dtq_core.client import task
from dtq_core.control import connect
from dtq_core.errors import BackendUnavailable, ConfigError, ReadOnlyError
from dtq_core.registry import Registry


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Broker]:
    reg = Registry()

    @task(name="echo", registry=reg)
    def echo(x: object) -> object:
        return x

    broker = Broker(
        BrokerConfig(backend=f"embedded://{tmp_path / 'data'}", num_workers=2, registry=reg)
    ).start()
    yield broker
    broker.stop()


def sock_of(broker: Broker) -> Path:
    return Path(broker.backend.info()["path"]) / "dtq.sock"


def raw_connect(path: Path) -> tuple[socket.socket, object]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return s, s.makefile("rb")


def reply(reader: object) -> tuple[int, str, str]:
    frame = wire.recv(reader)  # type: ignore[arg-type]
    assert frame is not None
    status, raw, message = wire.decode_reply(frame)
    return status, msgspec.msgpack.decode(raw), message


def test_read_only_console_is_refused_writes_by_the_owner(owner: Broker) -> None:
    url = owner.backend.url
    ro = connect(url, read_only=True)
    try:
        assert ro.snapshot().counts["PENDING"] == 0  # reads work
        with pytest.raises(ReadOnlyError, match="enqueue changes state"):
            ro.enqueue("echo", [1])
        with pytest.raises(ReadOnlyError):
            ro.pause_queue("default")
        with pytest.raises(ReadOnlyError):
            ro.purge(["x"])
    finally:
        ro.close()
    assert owner.backend.queue_stats() == []  # nothing was created


def test_read_only_backend_session_may_only_read(owner: Broker) -> None:
    client = Client(sock_of(owner), "backend", read_only=True)
    try:
        assert client.call("queue_stats", (), {}) == []
        with pytest.raises(ReadOnlyError):
            client.call("set_paused", ("q", True), {})
        with pytest.raises(ReadOnlyError):
            client.call("delete_key", ("k",), {})
        with pytest.raises(ReadOnlyError):  # the owned store's own method, too
            client.call("reclaim_unreceived", (["w"], [], 0.0), {})
    finally:
        client.close()
    # Callable by a session that may change state (nothing of w's to requeue here).
    client = Client(sock_of(owner), "backend")
    try:
        assert client.call("reclaim_unreceived", (["w"], [("t", 1)], 0.0), {}) == []
    finally:
        client.close()


def test_unknown_methods_and_bad_arguments_get_one_line_errors(owner: Broker) -> None:
    s, reader = raw_connect(sock_of(owner))
    with s:
        wire.send(s, wire.hello("backend", False, os.getpid()))
        assert reply(reader)[0] == 0
        wire.send(s, wire.encode(("__class__", [])))
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "ConfigError") and "unknown backend method" in message
        wire.send(s, wire.encode(("get", [12, "extra", "args"])))
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "ConfigError") and message.startswith("bad arguments for get")
        wire.send(s, wire.encode(("get", ["nope"])))
        status, _, _ = reply(reader)
        assert status == 0  # the connection is still fine after errors
        wire.send(s, b"\xc1garbage")
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "ConfigError") and "malformed request" in message


def test_garbage_hello_and_wrong_version_are_refused(owner: Broker) -> None:
    s, reader = raw_connect(sock_of(owner))
    with s:
        wire.send(s, b"GET / HTTP/1.1")
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "ConfigError") and "not a DTQ client" in message
    s, reader = raw_connect(sock_of(owner))
    with s:
        wire.send(s, wire.encode(wire.Hello(99, "backend")))
        status, _, message = reply(reader)
        assert status == 1 and "upgrade dtq" in message


def test_oversized_frames_are_refused_without_reading_them(owner: Broker) -> None:
    s, reader = raw_connect(sock_of(owner))
    with s:
        wire.send(s, wire.hello("backend", False, os.getpid()))
        reply(reader)
        # Announce 1 GiB and send nothing more: the owner refuses from the header alone.
        s.sendall(struct.pack("!I", 2**30))
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "ConfigError") and "over the" in message
        assert wire.recv(reader) is None  # and closes


def test_connections_are_bounded(owner: Broker) -> None:
    server = owner.backend._server  # type: ignore[attr-defined]
    assert isinstance(server, StoreServer)
    server.max_connections = server.connections + 2
    held = [raw_connect(sock_of(owner)) for _ in range(2)]
    for s, reader in held:
        wire.send(s, wire.hello("backend", False, os.getpid()))
        reply(reader)
    s, reader = raw_connect(sock_of(owner))
    with s:
        status, kind, message = reply(reader)
        assert (status, kind) == (1, "BackendUnavailable") and "too many connections" in message
    for s, _ in held:
        s.close()


def test_a_peer_that_vanishes_mid_call_leaves_no_traceback(
    owner: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        s, reader = raw_connect(sock_of(owner))
        wire.send(s, wire.hello("backend", False, os.getpid()))
        reply(reader)
        # A blocking claim, then the peer dies before the answer.
        wire.send(s, wire.encode(("claim", [None, "w", 30.0, 1, time.time(), 0.3])))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
    s, reader = raw_connect(sock_of(owner))
    with s:
        wire.send(s, wire.hello("backend", False, os.getpid()))
        wire.send(s, b"\x00\x00")  # half a frame header, then gone
    time.sleep(0.6)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert owner.control.health().status != "down"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a peer as another uid")
def test_a_peer_of_another_uid_is_refused() -> None:
    # A directory the other uid can reach (pytest's own are 0700 all the way up).
    base = Path(tempfile.mkdtemp(prefix="dtq-uid-", dir="/tmp"))
    os.chmod(base, 0o755)
    broker = Broker(BrokerConfig(backend=f"embedded://{base / 'data'}", num_workers=1))
    try:
        broker.start()
        path = sock_of(broker)
        os.chmod(path.parent, 0o755)
        os.chmod(path, 0o666)  # even with the file open to all, the owner checks the peer
        data = _connect_as_nobody(path)
        status, _, message = wire.decode_reply(data)
        assert status == 1 and "uid 65534" in message, data
        assert broker.backend._server.refused >= 1  # type: ignore[attr-defined]
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


#: The peer: become uid 65534, connect, read one frame (4-byte length, then the body),
#: print it. (It changes uid itself: the interpreter under /root is not nobody's to run.)
_NOBODY_PEER = """
import os, socket, struct, sys
os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rb")
head = f.read(4)
body = f.read(struct.unpack("!I", head)[0]) if len(head) == 4 else b""
sys.stdout.buffer.write(head + body)
"""


def _connect_as_nobody(path: Path) -> bytes:
    # A new process, not a fork of this threaded one (the owner's threads run here).
    out = subprocess.run(
        [sys.executable, "-I", "-c", _NOBODY_PEER, str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return wire.recv(io.BytesIO(out.stdout)) or b""


def test_producer_in_another_thread_waits_for_results_without_polling(owner: Broker) -> None:
    """AsyncResult.get in an attached broker blocks on the owner: few calls, prompt wake."""
    producer = Broker(
        BrokerConfig(backend=owner.backend.url, num_workers=0, registry=owner.registry)
    )
    try:
        producer.open()
        assert producer.backend.info()["role"] == "attached"
        owner.backend.set_paused("default", True)
        r = producer.send("echo", [7])
        calls: list[str] = []
        client = producer.backend._client  # type: ignore[attr-defined]
        real = client.call

        def counting(name: str, *a: object, **k: object) -> object:
            calls.append(name)
            return real(name, *a, **k)

        client.call = counting
        threading.Timer(0.5, owner.backend.set_paused, ("default", False)).start()
        t0 = time.monotonic()
        assert r.get(timeout=10) == 7
        took = time.monotonic() - t0
        assert 0.4 < took < 3
        # A poll loop would make dozens of calls in half a second; a wait makes a few.
        assert calls.count("wait_final") <= 2 and len(calls) <= 8, calls
    finally:
        producer.stop()


def test_no_owner_fails_fast_for_a_producer(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    producer = Broker(
        BrokerConfig(backend=f"embedded://{tmp_path / 'data'}", num_workers=0, attach_timeout=0.5)
    )
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="no process owns the embedded store"):
        producer.open()
    assert time.monotonic() - t0 < 3
    assert not (tmp_path / "data" / "LOCK").exists()
    with pytest.raises(BackendUnavailable, match="no embedded store at"):
        Broker(BrokerConfig(backend=f"embedded://{tmp_path / 'missing'}", num_workers=0)).open()
    assert not (tmp_path / "missing").exists()


def test_console_config_errors_survive_the_wire(owner: Broker) -> None:
    console = connect(owner.backend.url)
    try:
        with pytest.raises(ConfigError):
            console.tasks("state:NOPE")
    finally:
        console.close()


def test_a_console_call_the_moment_the_owner_starts_serving_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner is the owner before its socket answers: no "not open" in between."""
    url = f"embedded://{tmp_path / 'data'}"
    answers: list[str] = []
    real_start = StoreServer.start

    def start(server: StoreServer) -> None:
        real_start(server)
        # A console that connects as soon as the socket exists, before open() returns.
        console = connect(url, connect_timeout=5)
        try:
            answers.append(console.health().status)
        finally:
            console.close()

    monkeypatch.setattr(StoreServer, "start", start)
    b = Broker(BrokerConfig(backend=url, num_workers=0, own=True, registry=Registry()))
    try:
        b.open()
        assert b.backend.role == "owner"
        assert answers and answers[0] in ("ok", "degraded")
    finally:
        b.stop()
