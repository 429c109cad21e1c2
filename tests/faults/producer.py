"""A producer process of the fault suite: enqueues ``fa.rec`` tasks and logs each ack.

    python -m tests.faults.producer URL ACKFILE FIRST COUNT [SLEEP]

Before each send it appends ``intent I`` to ``ACKFILE``, after the send returned (the
enqueue is acknowledged) ``ack I TASK_ID``; a send that raises is logged ``error I``
and the producer goes on. A SIGKILL can land anywhere: a task whose ``intent`` line is
there but whose ``ack`` line is not may or may not exist, and either is correct.
"""

from __future__ import annotations

import os
import sys

from dtq_core import Broker, BrokerConfig
from dtq_core.errors import DTQError
from dtq_core.registry import Registry


def _line(fd: int, text: str) -> None:
    os.write(fd, (text + "\n").encode())


def main(argv: list[str]) -> int:
    url, ackfile, first, count = argv[0], argv[1], int(argv[2]), int(argv[3])
    sleep = float(argv[4]) if len(argv) > 4 else 0.0
    fd = os.open(ackfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    b = Broker(BrokerConfig(backend=url, num_workers=0, registry=Registry()))
    b.open()
    b.backend.register_names(("fa.rec",))
    for i in range(first, first + count):
        _line(fd, f"intent {i}")
        try:
            tid = b.send("fa.rec", [i], {"sleep": sleep}).id
        except DTQError as exc:
            _line(fd, f"error {i} {type(exc).__name__}")
            continue
        _line(fd, f"ack {i} {tid}")
    b.stop(drain_timeout=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
