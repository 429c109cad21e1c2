"""The single enqueue's lane: a connection of its own, one thread at a time.

What the lane must not change: a task is stored once whatever happens to the lane's
connection (killed, reply lost, a restarted server without the scripts), threads that
find it busy take the pool's way, a forked child does not share the parent's socket,
and an enqueue without hiredis packs the command as redis-py does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import redis

from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.backends.redis import lane as lane_mod
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.backends.redis.lane import BUSY, Lane
from dtq_core.task import TaskState
from tests.backends.redis.test_batching import RoundTrips

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

S = TaskState


def new(tid: str, queue: str = "q") -> NewTask:
    return NewTask(tid, "app.x", queue, 0, b"{}")


def on_lane(be: RedisBackend) -> Lane:
    """The backend's lane, connected (the queue listed, one enqueue sent on it)."""
    now = time.time()
    be.enqueue(new("list-q"), now)
    be.enqueue(new("connect-lane"), now)
    lane = be._lane
    assert lane is not None and lane._conn is not None
    return lane


def test_single_enqueues_and_batches_of_one_queue_go_on_the_lane(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = on_lane(be)
    used: list[Any] = []
    real = Lane.call

    def spy(self: Lane, args: tuple[Any, ...]) -> Any:
        used.append(args[0])
        return real(self, args)

    monkeypatch.setattr(Lane, "call", spy)
    be.enqueue(new("one"), time.time())
    be.enqueue_many([new("b1"), new("b2")], time.time())
    be.enqueue_many([new("x1", "other")], time.time())  # a queue not listed yet: the pool
    assert used == ["EVALSHA", "EVALSHA"]
    assert lane._conn is not None
    assert [be.get_state(t) for t in ("one", "b1", "b2", "x1")] == [S.PENDING] * 4


def test_a_busy_lane_is_not_waited_for(be: RedisBackend) -> None:
    lane = on_lane(be)
    assert lane._lock.acquire()  # another thread is on the lane
    try:
        assert lane.call(("PING",)) is BUSY
        t0 = time.monotonic()
        be.enqueue(new("beside"), time.time())
        assert time.monotonic() - t0 < 5
    finally:
        lane._lock.release()
    assert be.get_state("beside") is S.PENDING


def test_threads_enqueueing_at_once_store_every_task_once(be: RedisBackend, plain: Any) -> None:
    on_lane(be)
    errors: list[BaseException] = []

    def produce(k: int) -> None:
        try:
            for i in range(150):
                be.enqueue(new(f"t{k}-{i}"), time.time())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    k = be.keys.queue("q")
    assert plain.zcard(k["ready"]) == 600 + 2
    assert plain.hget(k["counts"], "PENDING") == str(600 + 2)
    # Counted in this process, added in batches (tally); this process reads its own.
    assert be.totals()["q"]["enqueued"] == 600 + 2


def kill_lane(lane: Lane, plain: Any) -> int:
    """Close the lane's connection from the server's side (as a restart or a proxy)."""
    client_id = lane.call(("CLIENT", "ID"))
    assert plain.client_kill_filter(_id=client_id) == 1
    return int(client_id)


def test_a_killed_lane_connection_is_made_again(be: RedisBackend, plain: Any) -> None:
    lane = on_lane(be)
    killed = kill_lane(lane, plain)
    be.enqueue(new("after-kill"), time.time())
    assert be.get_state("after-kill") is S.PENDING
    assert lane.call(("CLIENT", "ID")) != killed  # connected again


def test_a_reply_lost_on_the_lane_is_not_taken_for_a_duplicate(
    be: RedisBackend, plain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = on_lane(be)
    real = Lane.call
    lost = []

    def lose_first_reply(self: Lane, args: tuple[Any, ...]) -> Any:
        reply = real(self, args)  # stored on the server...
        if not lost:
            lost.append(reply)
            assert self._conn is not None
            self._conn.disconnect()
            raise redis.ConnectionError("connection lost before the reply")  # ...not heard
        return reply

    monkeypatch.setattr(Lane, "call", lose_first_reply)
    [tr] = be.enqueue(new("once"), time.time())  # the retry's DUP means: it was stored
    assert (tr.task_id, tr.new) == ("once", S.PENDING)
    assert lost == [1]
    k = be.keys.queue("q")
    assert plain.zscore(k["ready"], "once") is not None
    assert plain.hget(k["counts"], "PENDING") == "3"
    assert lane._conn is not None


def test_a_server_that_forgot_the_scripts_costs_a_reload_on_the_lane(
    be: RedisBackend, plain: Any
) -> None:
    on_lane(be)
    plain.script_flush()
    be.enqueue(new("reloaded"), time.time())
    assert be.get_state("reloaded") is S.PENDING


def test_without_hiredis_the_command_is_packed_by_the_connection(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lane_mod, "_hiredis_pack", None)
    on_lane(be)
    be.enqueue(new("packed-in-python"), time.time())
    assert be.get_state("packed-in-python") is S.PENDING


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# This test forks a threaded process on purpose (an app that does so gets the same
# warning from Python 3.12+): the lane must still work in the child.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_enqueues_on_a_connection_of_its_own(
    be: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = on_lane(be)
    parent_conn = lane._conn
    rt = RoundTrips(monkeypatch)
    assert lane._lock.acquire()  # another thread is on the lane at the fork
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            be.enqueue(new("from-child"), time.time())
            # Its own lane connection (not the parent's, and the lock was not stuck).
            code = 0 if lane._conn is not None and lane._conn is not parent_conn else 2
        finally:
            os._exit(code)
    lane._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with rt:
        be.enqueue(new("from-parent"), time.time())
    assert rt.count == 1  # the parent's lane still connected and in step
    assert lane._conn is parent_conn
    assert be.get_state("from-child") is S.PENDING
    assert be.get_state("from-parent") is S.PENDING


def test_close_closes_the_lane_and_a_later_enqueue_connects_again(be: RedisBackend) -> None:
    lane = on_lane(be)
    lane.close()
    assert lane._conn is None
    be.enqueue(new("after-close"), time.time())
    assert be.get_state("after-close") is S.PENDING


@pytest.mark.parametrize("lost", ["scripts", "connection"])
def test_after_a_restart_the_lane_lists_the_queue_again(
    be: RedisBackend, plain: Any, lost: str
) -> None:
    # A server that comes back empty forgot the queue list too: the retry on the lane's
    # way lists the queue again, or workers serving every queue would not find it.
    lane = on_lane(be)
    plain.delete(be.keys.queues)
    if lost == "scripts":
        plain.script_flush()
    else:
        kill_lane(lane, plain)
    be.enqueue(new("relisted"), time.time())
    assert plain.smembers(be.keys.queues) == {"q"}
    assert be.get_state("relisted") is S.PENDING
    be.enqueue(new("on-lane-again"), time.time())
    assert be.get_state("on-lane-again") is S.PENDING


def test_a_server_that_stops_answering_times_out_on_the_lane(make_be: Any) -> None:
    """The lane's socket is blocking with kernel timeouts: a stalled server still times
    out within ``socket_timeout``, reported as redis-py's timeout, and the lane is usable
    again once the server answers."""
    from dtq_core.errors import BackendUnavailable
    from tests.backends.redis.server import RedisServer, unique_prefix

    srv = RedisServer().start()
    try:
        url = srv.url(unique_prefix("stall"), retry_s=0) + "&socket_timeout=0.5"
        be = make_backend(url)
        assert isinstance(be, RedisBackend)
        be.open()
        try:
            lane = on_lane(be)
            assert lane._conn._sock.gettimeout() is None  # blocking: no poll per call
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with pytest.raises(BackendUnavailable, match="Timeout reading from socket"):
                    be.enqueue(new("stalled"), time.time())
                assert time.monotonic() - t0 < 3.0
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            be.enqueue(new("after"), time.time())
            assert be.get_state("after") is S.PENDING
        finally:
            be.close()
    finally:
        srv.cleanup()


def test_an_error_reply_of_the_connection_kind_is_raised_and_ends_the_connection(
    be: RedisBackend,
) -> None:
    # redis-py reads -LOADING (a server loading its data) as BusyLoadingError, a
    # ConnectionError: never a value the enqueue could take for a stored task.
    lane = on_lane(be)
    loading = ("EVAL", "return redis.error_reply('LOADING Redis is loading')", 0)
    with pytest.raises(redis.exceptions.BusyLoadingError):
        lane.call(loading)
    assert lane._sock is None  # disconnected, as redis-py does
    with pytest.raises(redis.exceptions.ResponseError, match="boom"):
        lane.call(("EVAL", "return redis.error_reply('ERR boom')", 0))
    assert lane._sock is not None  # an ordinary error reply keeps the connection
    assert lane.call(("PING",)) in (b"PONG", "PONG", True)


def test_the_health_check_ping_that_reconnects_is_followed_by_the_lane(
    be: RedisBackend, plain: Any
) -> None:
    lane = on_lane(be)
    assert lane._conn is not None
    old_sock = lane._sock
    kill_lane(lane, plain)
    lane._conn.next_health_check = 0  # due: the next call PINGs first, finds the
    # socket dead and reconnects; the lane sends and reads on the new one
    be.enqueue(new("after-ping"), time.time())
    assert lane._sock is not None and lane._sock is not old_sock
    assert be.get_state("after-ping") is S.PENDING
    assert be.connected
