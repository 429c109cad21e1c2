"""``--app MODULE[:ATTR]``: talk to a broker the user's module builds, in this process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from .conftest import RunDtq

APP = textwrap.dedent(
    """
    from dtq_core import Broker, BrokerConfig, task

    @task(name="boom", max_retries=0)
    def boom(x=1):
        raise ValueError(f"bad value {x}")

    broker = Broker(BrokerConfig(backend="memory://", num_workers=0))
    for i in range(3):
        broker.send("boom", [i])
    broker.work()
    other = broker
    not_a_broker = 42
    """
)


def test_app_broker_answers_in_process(run_dtq: RunDtq, tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    out = run_dtq("--app", "myapp", "dlq", "list", "--group-by", "cause", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["count"] == 3
    out = run_dtq("dlq", "purge", "--all", "--dry-run", "--json", env={"DTQ_APP": "myapp:other"})
    assert json.loads(out.stdout)["count"] == 3


def test_app_attribute_errors(run_dtq: RunDtq, tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    out = run_dtq("--app", "myapp:nope", "stats")
    assert out.returncode == 2
    assert "app module 'myapp' has no attribute 'nope'" in out.stderr
    out = run_dtq("--app", "myapp:not_a_broker", "stats")
    assert out.returncode == 2
    assert "myapp.not_a_broker is not a Broker" in out.stderr
