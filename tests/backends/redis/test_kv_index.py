"""Generic keys are found through per-namespace indexes, never a scan of the keyspace.

A shared production Redis may hold millions of keys of other applications; every worker
looks up rate-limit overrides, breakers and workflow runs each second. A namespace's keys
are spread over buckets (hash tags), each with its index in the same slot, so a key and
its index entry are written by one script, on one Redis Cluster slot.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.backends.redis.keys import KV_BUCKETS, kv_bucket
from dtq_core.backends.redis.kv import namespace
from tests.backends.redis.server import RedisServer

NOW = 1_000_000.0


def count_commands(b: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every single command the backend's client sends from now on."""
    sent: list[str] = []
    conn_cls = b.r.connection_pool.connection_class
    orig = conn_cls.send_command

    def send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]).upper())
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(conn_cls, "send_command", send_command)
    return sent


def test_namespace_is_the_first_two_segments() -> None:
    assert namespace("dtq:rl:cfg:queue:emails") == "dtq:rl:"
    assert namespace("dtq:dag-active:wf1") == "dtq:dag-active:"
    assert namespace("plain") == ""


def test_scan_keys_finds_written_keys_and_not_others(be: RedisBackend) -> None:
    be.set_key("dtq:rl:cfg:queue:a", "1", None, NOW)
    be.set_if_absent("dtq:rl:cfg:task:b", "2", 60, NOW)
    assert be.compare_and_set("dtq:rl:cfg:queue:c", None, "3", None, NOW)
    be.set_key("dtq:rl:other", "x", None, NOW)
    be.set_key("dtq:cb:x", "x", None, NOW)
    assert be.scan_keys("dtq:rl:cfg:", NOW) == [
        "dtq:rl:cfg:queue:a",
        "dtq:rl:cfg:queue:c",
        "dtq:rl:cfg:task:b",
    ]
    be.delete_key("dtq:rl:cfg:queue:a")
    assert be.scan_keys("dtq:rl:cfg:", NOW) == ["dtq:rl:cfg:queue:c", "dtq:rl:cfg:task:b"]


def test_expired_keys_leave_the_index(be: RedisBackend, prefix: str) -> None:
    be.set_key("dtq:dd:k1", "1", 10, NOW)
    be.set_key("dtq:dd:k2", "2", 100, NOW)
    assert be.scan_keys("dtq:dd:", NOW + 50) == ["dtq:dd:k2"]
    idx = be.keys.kv_index("dtq:dd:", kv_bucket("dtq:dd:k2"))
    assert be.r.zrange(idx, 0, -1) == [b"dtq:dd:k2"]


def test_no_keyspace_scan(
    be: RedisBackend, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many keys of another application in the same database.
    other = redis.Redis(port=redis_server.port)
    pipe = other.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"someone-else:{be.keys.prefix}:{i}", "v")
    pipe.execute()
    try:
        sent = count_commands(be, monkeypatch)
        be.set_key("dtq:rl:cfg:queue:a", "1", None, NOW)
        for _ in range(3):
            assert be.scan_keys("dtq:rl:cfg:", NOW) == ["dtq:rl:cfg:queue:a"]
        assert "SCAN" not in sent, sent
    finally:
        for k in other.scan_iter(f"someone-else:{be.keys.prefix}:*", count=1000):
            other.delete(k)
        other.close()


def test_a_key_and_its_index_share_a_slot(be: RedisBackend) -> None:
    from redis.crc import key_slot

    names = [f"dtq:dd:k{i}" for i in range(64)]
    for n in names:
        key = be.keys.kv(n).encode()
        idx = be.keys.kv_index(namespace(n), kv_bucket(n)).encode()
        assert key_slot(key) == key_slot(idx)
    # ...and a namespace is spread over several slots, not one hot node.
    assert len({kv_bucket(n) for n in names}) == KV_BUCKETS


def test_keys_without_a_namespace_are_found_by_a_scan(be: RedisBackend) -> None:
    be.set_key("plain1", "v", None, NOW)
    be.set_key("dtq:cb:x", "v", None, NOW)
    assert be.scan_keys("plain", NOW) == ["plain1"]


def test_the_index_drops_expired_entries_as_keys_are_written(be: RedisBackend) -> None:
    """Dedup keys come and go: the index must not keep every key ever written."""
    for i in range(50):
        be.set_if_absent(f"dtq:dd:k{i}", "1", 1.0, NOW + i)
    total = sum(be.r.zcard(be.keys.kv_index("dtq:dd:", b)) for b in range(KV_BUCKETS))
    # Each bucket drops its expired entries when it is written: at most the live keys
    # and one stale entry per bucket remain, not the 50 ever written.
    assert total <= KV_BUCKETS + 2


def test_a_refused_compare_and_set_keeps_the_live_key_indexed(be: RedisBackend) -> None:
    be.set_key("dtq:cb:x", "v", 100.0, NOW)
    assert be.scan_keys("dtq:cb:", NOW) == ["dtq:cb:x"]  # (the index is built)
    assert not be.compare_and_set("dtq:cb:x", "other", "w", 1.0, NOW)
    assert be.scan_keys("dtq:cb:", NOW + 50) == ["dtq:cb:x"]
