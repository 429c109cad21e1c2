"""The embedded backend in one process: URL, recovery figures, checkpoints, fsync modes,
group commit, ownership, and restarts of the same process (crashes are in test_crash.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dtq_core.backends import make_backend
from dtq_core.backends.embedded.backend import EmbeddedBackend, parse_url
from dtq_core.backends.embedded.store import EmbeddedStore
from dtq_core.backends.embedded.wal import list_segments
from dtq_core.clock import FakeClock
from dtq_core.errors import BackendError, BackendUnavailable, ConfigError, StoreFailed
from dtq_core.filters import TaskFilter
from dtq_core.task import ErrorInfo, TaskState
from tests.backends.embedded import crash_worker as cw

S = TaskState
T0 = cw.T0


def url_of(path: Path, **opts: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"embedded://{path}" + (f"?{query}" if query else "")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def opened(tmp_path: Path, clock: FakeClock) -> Any:
    """Open embedded backends on ``tmp_path/data`` (or elsewhere); closed at teardown."""
    made: list[EmbeddedBackend] = []

    def make(path: Path | None = None, **opts: Any) -> EmbeddedBackend:
        b = EmbeddedBackend(url_of(path or tmp_path / "data", **opts), clock)
        b.max_deliveries = cw.MAX_DELIVERIES
        b.open()
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def put(b: EmbeddedBackend, tid: str, now: float, **kw: Any) -> str:
    b.enqueue(cw.new_task(tid, **kw), now)
    return tid


# -- URL --------------------------------------------------------------------------------


def test_url_options_are_parsed() -> None:
    path, opts = parse_url(
        "embedded:///var/dtq?fsync=interval&interval_ms=20&checkpoint_mb=8"
        "&checkpoint_s=60&segment_mb=4"
    )
    assert path == Path("/var/dtq")
    assert opts == {
        "fsync": "interval",
        "interval_ms": 20.0,
        "checkpoint_mb": 8.0,
        "checkpoint_s": 60.0,
        "segment_mb": 4.0,
    }
    b = make_backend("embedded://./rel/dir?fsync=off", FakeClock())
    assert isinstance(b, EmbeddedStore)  # owned here or attached, decided at open
    assert b.path == Path("rel/dir") and not b.may_own
    assert b.capabilities.durable and not b.capabilities.cross_process
    default = EmbeddedBackend("embedded://x")
    assert (default.fsync, default.interval_ms) == ("always", 50)
    assert default.checkpoint_bytes == 64 * 2**20 and default.segment_bytes == 16 * 2**20
    assert parse_url("embedded://~/q")[0] == Path("~/q").expanduser()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("embedded://", "needs a directory"),
        ("embedded://d?fsync=sometimes", "always, interval or off"),
        ("embedded://d?interval_ms=fast", "not a number"),
        ("embedded://d?fsnyc=always", "unknown embedded:// option 'fsnyc'"),
    ],
)
def test_bad_urls_name_the_fix(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make_backend(url, FakeClock())


# -- recovery figures and the clean path -----------------------------------------------------


def test_clean_close_checkpoints_so_the_next_start_replays_nothing(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    b = opened()
    for i in range(20):
        put(b, f"t{i}", clock.now())
    (d,) = b.claim(None, "w", 30, 1, clock.now())
    b.ack(d.task_id, d.token, {"r": 1}, clock.now())
    info = b.info()
    assert info["fsync"] == "always" and info["path"] == str(tmp_path / "data")
    assert info["next_lsn"] == info["durable_lsn"] + 1  # everything acknowledged is synced
    assert info["failed"] is False
    b.close()
    b2 = opened()
    info = b2.info()
    assert info["replayed_records"] == 0
    assert info["checkpoint_lsn"] == info["next_lsn"] - 1
    assert info["recovered_tasks"] == 19
    assert info["requeued_running"] == 0 and info["worker_lost"] == 0
    assert info["dropped_bytes"] == 0 and info["broken_copy"] == ""
    assert info["recovery_seconds"] >= 0
    assert b2.get(d.task_id).result == {"r": 1}  # type: ignore[union-attr]
    assert b2.count_by_state()[S.PENDING] == 19


def test_recovery_requeues_running_with_deliveries_counted(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    """Close does not settle claims: each reopen finds both tasks RUNNING, requeues them
    with the delivery counted, and buries them as worker_lost at the limit."""
    d1 = tmp_path / "one"
    b = opened(d1)
    put(b, "a", clock.now())
    put(b, "b", clock.now(), queue="other")
    assert len(b.claim(None, "w", 30, 2, clock.now())) == 2
    b.close()
    for round_ in range(1, cw.MAX_DELIVERIES + 1):
        b = opened(d1)
        info = b.info()
        assert info["requeued_running"] == 2
        buried = round_ >= cw.MAX_DELIVERIES
        assert info["worker_lost"] == (2 if buried else 0)
        for tid in ("a", "b"):
            rec = b.get(tid)
            assert rec is not None and rec.deliveries == round_
            if buried:
                assert rec.state is S.DEAD and rec.dead_reason == "worker_lost"
                assert rec.error is not None and rec.error.type == "WorkerLost"
            else:
                assert rec.state is S.PENDING
                assert [a.outcome for a in rec.history] == ["LOST"] * round_
        if not buried:
            assert len(b.claim(None, "w", 30, 2, clock.now())) == 2
        b.close()
    b = opened(d1)
    assert b.info()["requeued_running"] == 0
    assert {r.id for r in b.list_dead(TaskFilter(), clock.now())} == {"a", "b"}


def test_tokens_issued_after_recovery_never_repeat_a_logged_one(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    d1 = tmp_path / "one"
    b = opened(d1)
    for i in range(5):
        put(b, f"t{i}", clock.now())
    tokens = {d.token for d in b.claim(None, "w", 30, 5, clock.now())}
    b.close()
    b = opened(d1)
    again = b.claim(None, "w", 30, 5, clock.now())
    assert len(again) == 5
    assert not tokens & {d.token for d in again}
    # A stale token from before the restart cannot ack the new delivery.
    old = min(tokens)
    assert all(b.ack(d.task_id, old, None, clock.now()) == [] for d in again)


def test_everything_survives_a_clean_restart(opened: Any, clock: FakeClock, tmp_path: Path) -> None:
    d1 = tmp_path / "one"
    b = cw.open_backend(url_of(d1), clock)
    cw.deterministic_workload(b, clock)
    before = cw.fingerprint(b, clock.now())
    b.close()
    b = opened(d1)
    after = cw.fingerprint(b, clock.now())
    # Only the RUNNING task changed: the restart requeued it.
    running = [t for t, r in before["records"].items() if r["state"] == "RUNNING"]
    assert len(running) == 2
    for fp in (before, after):
        for t in running:
            fp["records"].pop(t)
        for part in ("counts", "queues", "ready_order"):
            fp.pop(part)
    assert after == before
    assert all(b.get_state(t) is S.PENDING for t in running)


def test_names_and_paused_queues_persist(opened: Any, clock: FakeClock, tmp_path: Path) -> None:
    d1 = tmp_path / "one"
    b = opened(d1)
    b.register_names(["a.b", "c.d"])
    b.set_paused("slow", True)
    b.set_paused("fast", True)
    b.set_paused("fast", False)
    b.close()
    b = opened(d1)
    assert b.known_names() == {"a.b", "c.d"}
    paused = {q.name: q.paused for q in b.queue_stats()}
    assert paused.get("slow") is True and paused.get("fast", False) is False


def test_dlq_replay_purge_and_cancel_are_logged(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    d1 = tmp_path / "one"
    b = opened(d1)
    put(b, "dead1", clock.now())
    put(b, "dead2", clock.now())
    put(b, "cancel-me", clock.now(), eta=clock.now() + 100)
    for d in b.claim(None, "w", 30, 2, clock.now()):
        b.fail(d.task_id, d.token, ErrorInfo("E", "x"), clock.now(), dead_reason="failed")
    new = cw.new_task("replayed")
    b.replay("dead1", new, {"note": "fixed args"}, clock.now())
    assert b.purge(["dead2"]) == 1
    assert b.cancel("cancel-me", clock.now())
    b.close()
    # Reopen from the log alone: drop the checkpoint the clean close wrote.
    for ckpt in (d1 / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    b = opened(d1)
    assert b.info()["checkpoint_lsn"] == 0 and b.info()["replayed_records"] > 0
    old = b.get("dead1")
    assert old is not None and old.replayed_to == ("replayed",)
    assert old.edits[0]["note"] == "fixed args"
    rep = b.get("replayed")
    assert rep is not None and rep.replayed_from == "dead1" and rep.state is S.PENDING
    assert b.get("dead2") is None and b.count_dead() == 1
    assert b.get_state("cancel-me") is S.CANCELLED
    assert b.next_due() is None


def test_keys_counters_and_ttls_persist(opened: Any, clock: FakeClock, tmp_path: Path) -> None:
    d1 = tmp_path / "one"
    b = opened(d1)
    now = clock.now()
    assert b.set_if_absent("dd:1", "task-1", 60, now) is None
    assert b.set_if_absent("dd:1", "task-2", 60, now) == "task-1"
    b.set_key("cron:last", "123.5", None, now)
    b.set_key("gone", "x", None, now)
    b.delete_key("gone")
    assert b.compare_and_set("cb:state", None, "open", None, now)
    assert not b.compare_and_set("cb:state", "closed", "half", None, now)
    assert b.reserve("rl:q", 1.0, 1, now) == 0.0
    b.close()
    for ckpt in (d1 / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()  # replay the key records themselves
    b = opened(d1)
    assert b.get_key("dd:1", now + 59) == "task-1"
    assert b.get_key("dd:1", now + 61) is None  # the TTL survived too
    assert b.get_key("cron:last", now) == "123.5"
    assert b.get_key("gone", now) is None
    assert b.get_key("cb:state", now) == "open"
    assert b.reserve("rl:q", 1.0, 1, now) > 0  # the bucket remembers the last reservation


def test_scan_keys_skips_expired_keys(opened: Any, clock: FakeClock) -> None:
    b = opened()
    b.set_key("p:a", "1", 10, clock.now())
    b.set_key("p:b", "2", None, clock.now())
    assert b.scan_keys("p:", clock.now() + 60) == ["p:b"]


# -- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_drops_covered_segments_and_recovery_follows_live_state(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    d1 = tmp_path / "one"
    b = opened(d1, segment_mb=0.004)
    for i in range(200):
        put(b, f"t{i}", clock.now())
        for d in b.claim(None, "w", 30, 1, clock.now()):
            b.ack(d.task_id, d.token, i, clock.now())
    segments = len(list_segments(d1 / "wal"))
    assert segments > 10
    lsn = b.checkpoint()
    assert lsn == b.info()["next_lsn"] - 1
    assert len(list_segments(d1 / "wal")) == 1  # only the active one is left
    assert [p.name for p in (d1 / "checkpoints").glob("*.ckpt")] == [f"checkpoint-{lsn:016d}.ckpt"]
    put(b, "after", clock.now())
    lsn2 = b.checkpoint()
    lsn3 = b.checkpoint()
    assert lsn3 == lsn2 > lsn
    assert len(list((d1 / "checkpoints").glob("*.ckpt"))) == 2  # the two newest are kept
    assert b.info()["last_checkpoint_bytes"] > 0
    b.close()
    b = opened(d1, segment_mb=0.004)
    assert b.info()["replayed_records"] == 0
    assert b.count_by_state()[S.SUCCESS] == 200 and b.get("after") is not None


def test_background_checkpoint_by_size(opened: Any, clock: FakeClock, tmp_path: Path) -> None:
    d1 = tmp_path / "one"
    b = opened(d1, checkpoint_mb=0.01)
    for i in range(100):  # about 40 KB of log
        put(b, f"t{i}", clock.now())
    deadline = time.monotonic() + 20
    # The figure is recorded once the checkpoint is written and the log truncated: wait
    # for it, not for the file (which appears first).
    while not b.info().get("last_checkpoint_bytes") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((d1 / "checkpoints").glob("*.ckpt"))
    assert b.info()["last_checkpoint_bytes"] > 0


def test_background_checkpoint_by_age(opened: Any, clock: FakeClock, tmp_path: Path) -> None:
    d1 = tmp_path / "one"
    b = opened(d1, checkpoint_s=0.2)
    put(b, "t", clock.now())
    deadline = time.monotonic() + 20
    while not list((d1 / "checkpoints").glob("*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((d1 / "checkpoints").glob("*.ckpt"))


def test_closed_backend_refuses_work(opened: Any, clock: FakeClock) -> None:
    b = opened()
    b.close()
    with pytest.raises(BackendError, match="not open"):
        b.checkpoint()
    with pytest.raises(BackendError, match="not open"):
        put(b, "x", clock.now())
    b.close()  # idempotent


# -- durability modes and group commit ------------------------------------------------------


def test_group_commit_shares_fsyncs_between_producers(opened: Any, clock: FakeClock) -> None:
    b = opened()
    start = b.info()["fsyncs"]
    n_threads, per = 32, 25

    def producer(p: int) -> None:
        for i in range(per):
            put(b, f"p{p}-{i}", clock.now())

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fsyncs = b.info()["fsyncs"] - start
    total = n_threads * per
    assert b.count_by_state()[S.PENDING] == total
    assert fsyncs < total / 2, f"{fsyncs} fsyncs for {total} durable enqueues"
    assert b.info()["durable_lsn"] == b.info()["next_lsn"] - 1


def test_fsync_always_is_one_fsync_per_lone_enqueue(opened: Any, clock: FakeClock) -> None:
    b = opened()
    start = b.info()["fsyncs"]
    for i in range(10):
        put(b, f"t{i}", clock.now())
        assert b.info()["durable_lsn"] == b.info()["next_lsn"] - 1
    assert b.info()["fsyncs"] - start == 10


def test_fsync_off_and_interval_do_not_fsync_per_enqueue(
    opened: Any, clock: FakeClock, tmp_path: Path
) -> None:
    off = opened(tmp_path / "off", fsync="off")
    start = off.info()["fsyncs"]
    for i in range(50):
        put(off, f"t{i}", clock.now())
    assert off.info()["fsyncs"] == start
    assert off.info()["durable_lsn"] < off.info()["next_lsn"] - 1
    off.checkpoint()  # a checkpoint syncs the log first, whatever the mode
    assert off.info()["durable_lsn"] == off.info()["next_lsn"] - 1

    iv = opened(tmp_path / "iv", fsync="interval", interval_ms=20)
    start = iv.info()["fsyncs"]
    for i in range(50):
        put(iv, f"t{i}", clock.now())
    assert iv.info()["fsyncs"] - start < 25
    deadline = time.monotonic() + 2
    while iv.info()["durable_lsn"] < iv.info()["next_lsn"] - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert iv.info()["durable_lsn"] == iv.info()["next_lsn"] - 1  # the flusher caught up


def test_enqueue_many_waits_once(opened: Any, clock: FakeClock) -> None:
    b = opened()
    start = b.info()["fsyncs"]
    b.enqueue_many([cw.new_task(f"t{i}") for i in range(100)], clock.now())
    assert b.info()["fsyncs"] - start == 1
    assert b.count_by_state()[S.PENDING] == 100


# -- fsync failure -------------------------------------------------------------------------


def test_close_releases_the_directory_even_when_its_checkpoint_fails(
    tmp_path: Path, clock: FakeClock
) -> None:
    failing = False

    def fsync_fn(fd: int) -> None:
        if failing:
            raise OSError(5, "injected")
        os.fsync(fd)

    d1 = tmp_path / "one"
    b = EmbeddedBackend(url_of(d1, fsync="off"), clock, fsync_fn=fsync_fn)
    b.open()
    put(b, "a", clock.now())
    failing = True
    with pytest.raises(StoreFailed):
        b.close()
    failing = False
    b2 = EmbeddedBackend(url_of(d1), clock)
    b2.open()
    b2.close()


# -- ownership in one process, and restarts of the same object -------------------------------


def test_second_open_in_the_same_process_is_refused(opened: Any, tmp_path: Path) -> None:
    opened()
    other = EmbeddedBackend(url_of(tmp_path / "data"), FakeClock())
    with pytest.raises(BackendUnavailable, match=f"process {os.getpid()}"):
        other.open()
    assert (tmp_path / "data" / "LOCK").read_text() == str(os.getpid())


def test_reopening_the_same_instance_after_close(tmp_path: Path, clock: FakeClock) -> None:
    b = EmbeddedBackend(url_of(tmp_path / "data"), clock)
    b.result_ttl, b.max_results = 7.0, 9
    b.open()
    put(b, "a", clock.now())
    put(b, "b", clock.now())
    b.close()
    b.open()
    try:
        assert (b.result_ttl, b.max_results) == (7.0, 9)  # settings outlive the reset
        assert b.count_by_state()[S.PENDING] == 2
        assert sum(q.ready for q in b.queue_stats()) == 2
        assert len(b.claim(None, "w", 30, 10, clock.now())) == 2
        assert b.count_by_state()[S.PENDING] == 0
    finally:
        b.close()


def test_socket_path_is_inside_the_directory(tmp_path: Path) -> None:
    b = EmbeddedBackend(url_of(tmp_path / "d"))
    assert b.socket_path() == tmp_path / "d" / "dtq.sock"


def test_a_task_id_reused_after_its_result_expired_survives_a_crash(tmp_path: Path) -> None:
    from dtq_core.backends.base import NewTask
    from dtq_core.backends.embedded.backend import EmbeddedBackend
    from dtq_core.clock import FakeClock
    from dtq_core.codec import encode_message

    url = f"embedded://{tmp_path / 'data'}?checkpoint_s=100000"
    clock = FakeClock()

    def new(i: int) -> NewTask:
        return NewTask("x", "n", "q", 0, encode_message("x", "n", [i], {}))

    b = EmbeddedBackend(url, clock)
    b.result_ttl = 1.0
    b.open()
    b.enqueue(new(1), clock.now())
    (d,) = b.claim(None, "w", 30, 1, clock.now())
    b.ack("x", d.token, 1, clock.now())
    clock.advance(5)
    assert b.expire(clock.now()) == 1
    b.enqueue(new(2), clock.now())
    b._wal.sync()
    # A crash: no close, no checkpoint. Recovery must not trip over the reused id.
    b._wal.close()
    b._release_ownership()
    again = EmbeddedBackend(url, clock)
    again.open()
    try:
        rec = again.get("x")
        assert rec is not None and rec.args == [2]
    finally:
        again.close()


def test_expired_keys_are_swept_without_being_read(tmp_path: Path) -> None:
    from dtq_core.backends.memory import MemoryBackend
    from dtq_core.clock import FakeClock

    clock = FakeClock()
    b = MemoryBackend("memory://", clock)
    for i in range(100):
        b.set_key(f"k{i}", "v", 60, clock.now())
    clock.advance(3600)
    b.expire(clock.now())
    assert not b._state.keys.kv


def test_a_promoted_delayed_task_is_ready_after_a_crash(tmp_path: Path, clock: FakeClock) -> None:
    """A PENDING task promoted from ``delayed`` has no transition to report: it is logged."""
    b = EmbeddedBackend(url_of(tmp_path / "data"), clock)
    b.open()
    put(b, "later", T0, eta=T0 + 5)
    assert b.promote_due(T0 + 10) == []  # no state change, yet a change of the state
    put(b, "sync", T0 + 10)  # a waited record: the promotion before it is durable too
    assert b._wal is not None
    b._wal.close()  # a crash: no checkpoint
    b._log.wal = None
    b._release_ownership()
    again = EmbeddedBackend(url_of(tmp_path / "data"), clock)
    again.open()
    try:
        rec = again.get("later")
        assert rec is not None and rec.state is S.PENDING and rec.eta is None
        assert again.next_due() is None
        assert {d.task_id for d in again.claim(None, "w", 30.0, 5, T0 + 10)} == {"later", "sync"}
    finally:
        again.close()
