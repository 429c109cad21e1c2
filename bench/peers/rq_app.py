"""RQ: ``rq worker -u URL bench`` (the default worker: one forked work horse per job)."""

from __future__ import annotations

from bench.peers import _probe

_probe.install()


def noop(i: int) -> None:
    _probe.record(i)
