"""Celery: ``celery -A bench.peers.celery_app worker -P threads -c N``.

No result backend (``ignore_result``): the peer's cheapest configuration for no-op tasks.
"""

from __future__ import annotations

from celery import Celery

from bench.peers import _probe

_probe.install()

app = Celery("bench", broker=_probe.url())
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    _probe.record(i)
