"""The event stream: a batch's transitions share one stream entry, readers see each task."""

from __future__ import annotations

from dtq_core.backends.redis.backend import RedisBackend
from tests.backends.test_contract import LEASE, new_task

NOW = 1_000_000.0


def test_a_batch_is_one_entry_and_one_event_per_task(be: RedisBackend) -> None:
    tasks = [new_task("q") for _ in range(5)]
    be.enqueue_many(tasks, NOW)
    got = be.claim(["q"], "w1", LEASE, 10, NOW)
    assert len(got) == 5
    be.ack_many([(d.task_id, d.token, None) for d in got], NOW + 1)

    entries = be.r.xrange(be.keys.queue("q")["events"])
    # 5 enqueues (one per task), then one entry for the claim and one for the acks.
    assert len(entries) == 7
    evs = be.read_events(0)
    ids = [t.id for t in tasks]
    assert [(e["id"], e.get("old", ""), e["new"]) for _, e in evs] == (
        [(i, "", "PENDING") for i in ids]
        + [(i, "PENDING", "RUNNING") for i in ids]
        + [(i, "RUNNING", "SUCCESS") for i in ids]
    )
    assert all(e["name"] == "app.work" and e["queue"] == "q" for _, e in evs)
    assert {e["worker"] for _, e in evs[5:]} == {"w1"}
    assert "n" not in evs[0][1]


def test_reads_never_stop_inside_an_entry(be: RedisBackend) -> None:
    be.enqueue_many([new_task("q") for _ in range(4)], NOW)
    be.claim(["q"], "w1", LEASE, 10, NOW)
    # A limit that falls inside the claim's entry: the whole entry comes back, and the
    # next read from the last position returns nothing twice.
    first = be.read_events(0, limit=5)
    assert len(first) == 8
    assert be.read_events(first[-1][0], limit=5) == []


def test_ids_with_a_newline_get_entries_of_their_own(be: RedisBackend) -> None:
    odd = new_task("q", task_id="two\nlines")
    plain = new_task("q")
    be.enqueue_many([odd, plain], NOW)
    got = be.claim(["q"], "w1", LEASE, 10, NOW)
    assert {d.task_id for d in got} == {odd.id, plain.id}
    running = [e["id"] for _, e in be.read_events(0) if e["new"] == "RUNNING"]
    assert sorted(running) == sorted([odd.id, plain.id])
