"""DTQ: the no-op task, and a worker process (``python -m bench.peers.dtq_app``).

The worker is what ``dtq worker`` builds (a Broker with a thread pool and signal
handlers), plus the ``BENCH_PREFETCH`` and ``BENCH_ACK_DELAY`` settings the command has
no option for.
"""

from __future__ import annotations

import os

from bench.peers import _probe
from dtq_core import Broker, BrokerConfig, task

_probe.install()


@task(name="bench.noop")
def noop(i: int) -> None:
    _probe.record(i)


def config(workers: int) -> BrokerConfig:
    return BrokerConfig(
        backend=_probe.url() + "?prefix=bench",
        num_workers=workers,
        prefetch=int(os.environ["BENCH_PREFETCH"]) if os.environ.get("BENCH_PREFETCH") else None,
        ack_delay_s=float(os.environ.get("BENCH_ACK_DELAY", "0.002")),
        install_signal_handlers=workers > 0,
    )


def main() -> None:
    broker = Broker(config(_probe.concurrency()))
    broker.start()
    while not broker.wait_until_stopped(0.25):
        pass


if __name__ == "__main__":
    main()
