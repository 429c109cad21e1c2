"""Cross-process metrics of the Redis backend: per-second counters, totals and events."""

from __future__ import annotations

import logging
from typing import Any

from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.records import _s
from dtq_core.backends.redis.tally import Counts, Tally

log = logging.getLogger("dtq.redis")


class MetricsMixin(RedisClient):
    """Readers of the counters and event streams every process's scripts write.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`; the console reads
    them so that it sees the work of every worker process.
    """

    #: This process's single enqueues not yet counted in Redis (``None``: a cluster,
    #: where every enqueue script counts its own).
    _tally: Tally | None

    def _add_enqueued(self, counts: Counts) -> None:
        """Add ``enqueued`` counts per (queue, second) to the counters (one pipeline)."""
        totals: dict[str, int] = {}
        for (q, _), n in counts.items():
            totals[q] = totals.get(q, 0) + n

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for (q, second), n in counts.items():
                key = f"{self.keys.queue(q)['sec']}{second}"
                pipe.hincrby(key, "enqueued", n)
                pipe.expire(key, 120)  # as the scripts' tick: kept two minutes
            for q, n in totals.items():
                pipe.hincrby(self.keys.queue(q)["totals"], "enqueued", n)
            # Every command runs whatever another's reply: an error reply is one key's
            # (a hand-made key of another type), and the rest were counted.
            return pipe.execute(raise_on_error=False)

        # Unreachable: raised, and the tally keeps the counts for its next flush.
        refused = [r for r in self._call(run, retry=False) if isinstance(r, Exception)]
        if refused:
            log.warning(
                "%d enqueue counter update(s) refused by redis, dropped: %s",
                len(refused),
                self._say(refused[0]),
            )

    def _own_counts(self) -> None:
        """Add this process's pending enqueue counts first, so that it reads its own."""
        if self._tally is not None:
            try:
                self._tally.flush()
            except Exception as exc:  # kept for the next flush; the read says the rest
                log.debug("enqueue counts not added to redis yet: %s", exc)

    def rate_series(self, now: float, seconds: int = 60) -> dict[str, dict[str, list[int]]]:
        """Per-queue, per-counter counts for each of the last ``seconds`` whole seconds."""
        self._own_counts()
        names = self._known_queues()
        end = int(now)
        secs = list(range(end - seconds, end))

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                base = self.keys.queue(q)["sec"]
                for s in secs:
                    pipe.hgetall(f"{base}{s}")
            return pipe.execute()

        rows = self._call(run) if names else []
        out: dict[str, dict[str, list[int]]] = {}
        for qi, q in enumerate(names):
            series: dict[str, list[int]] = {}
            for si in range(len(secs)):
                for k, v in rows[qi * len(secs) + si].items():
                    series.setdefault(_s(k), [0] * len(secs))[si] = int(v)
            out[q] = series
        return out

    def totals(self) -> dict[str, dict[str, int]]:
        """Per-queue counter totals."""
        self._own_counts()
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.hgetall(self.keys.queue(q)["totals"])
            return pipe.execute()

        rows = self._call(run) if names else []
        return {q: {_s(k): int(v) for k, v in h.items()} for q, h in zip(names, rows, strict=True)}

    def read_events(self, since: int, limit: int = 1000) -> list[tuple[int, dict[str, str]]]:
        """Events after ``since`` (stream time in ms * 1000 + sequence), merged over queues."""
        names = self._known_queues()
        start = f"{since // 1000}-{since % 1000 + 1}" if since else "-"

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.xrange(self.keys.queue(q)["events"], min=start, count=limit)
            return pipe.execute()

        out: list[tuple[int, dict[str, str]]] = []
        for q, rows in zip(names, self._call(run) if names else [], strict=False):
            for sid, fields in rows:
                ms, seq = _s(sid).split("-")
                pos = int(ms) * 1000 + int(seq)
                ev = {_s(k): _s(v) for k, v in fields.items()}
                ev["queue"] = q
                n = ev.pop("n", "")
                if n and int(n) > 1:
                    # A batch's entry: one event per task, all at the entry's position.
                    ids, tnames = ev["id"].split("\n"), ev["name"].split("\n")
                    out.extend(
                        (pos, {**ev, "id": i, "name": t}) for i, t in zip(ids, tnames, strict=False)
                    )
                else:
                    out.append((pos, ev))
        out.sort(key=lambda e: e[0])  # stable: a batch's events keep their order
        if len(out) > limit:
            # Never cut inside an entry: its position is the caller's next cursor.
            last = out[limit - 1][0]
            out = [e for e in out if e[0] <= last]
        return out
