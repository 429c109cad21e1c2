"""A Redis with ``--requirepass``: the password is in no output, wherever it came from.

Real ``dtq`` processes (a worker, stats, health, metrics, errors) against a real server;
the password reaches them by URL, ``DTQ_REDIS_PASSWORD`` or ``?password_file=``. Also:
a read-only console on Redis refuses every change before it reaches the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtq_core.console_api import CONSOLE_WRITES
from dtq_core.control import connect
from dtq_core.errors import BackendUnavailable, ConfigError, ReadOnlyError
from tests.backends.redis.server import RedisServer, free_port, unique_prefix

pytestmark = pytest.mark.redis

PASSWORD = "Pw-s3cret-XYZ"
REPO = Path(__file__).resolve().parents[3]
APP = """
from dtq_core import task


@task(name="sec.login", max_retries=0)
def login(user, password=""):
    raise ValueError("refused")


@task(name="sec.add")
def add(a, b):
    return a + b
"""


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer(password=PASSWORD).start()
    yield s
    s.cleanup()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "secapp.py").write_text(APP)
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    for k in ("DTQ_BACKEND", "DTQ_APP", "DTQ_REDIS_PASSWORD"):
        e.pop(k, None)
    e["DTQ_NO_PROGRESS"] = "1"
    e["COLUMNS"] = "200"
    return e


def dtq(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def no_password(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text, text


def test_password_in_no_output(server: RedisServer, env: dict[str, str], tmp_path: Path) -> None:
    url = server.url(unique_prefix("sec"), retry_s=2)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "-v", "worker", "secapp", "-c", "1", "--backend", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        banner = ""
        for line in worker.stderr:
            if "dtq worker:" in line:
                banner = line
                break
        assert ":***@127.0.0.1" in banner, banner
        run = dtq(
            env,
            tmp_path,
            "--backend",
            url,
            "enqueue",
            "sec.add",
            "--args",
            "[1, 2]",
            "--wait",
            "20",
        )
        assert run.stdout == "3\n", run.stderr
        kwargs = json.dumps({"password": "user-pw-777"})
        dead = dtq(
            env, tmp_path, "--backend", url, "enqueue", "sec.login",
            "--args", '["ann"]', "--kwargs", kwargs, "--wait", "20",
        )  # fmt: skip
        assert dead.returncode == 1
        outputs = [banner, run.stdout, run.stderr, dead.stdout, dead.stderr]
        stats = dtq(env, tmp_path, "--backend", url, "stats")
        assert stats.returncode == 0, stats.stderr
        assert "redis://:***@127.0.0.1" in stats.stdout
        stats_json = dtq(env, tmp_path, "--backend", url, "stats", "--json")
        snap = json.loads(stats_json.stdout)
        assert snap["backend"].startswith("redis://:***@127.0.0.1")
        health = dtq(env, tmp_path, "--backend", url, "health")
        assert health.returncode in (0, 1), health.stderr
        metrics = dtq(env, tmp_path, "--backend", url, "metrics", "--prometheus")
        assert "dtq_tasks_succeeded_total" in metrics.stdout
        dlq = dtq(env, tmp_path, "--backend", url, "dlq", "list", "--json")
        shown = dtq(env, tmp_path, "--backend", url, "tasks", "list", "--json")
        for out in (stats, stats_json, health, metrics, dlq, shown):
            outputs += [out.stdout, out.stderr]
        assert "user-pw-777" not in dlq.stdout + shown.stdout
        assert "«redacted»" in dlq.stdout
        # Errors: a wrong password, and the server's port closed.
        wrong = dtq(
            env, tmp_path, "--backend", url.replace(PASSWORD, "nope-" + PASSWORD[::-1]), "stats"
        )
        assert wrong.returncode == 3 and "refused the credentials" in wrong.stderr, wrong.stderr
        assert "nope-" not in wrong.stderr
        closed = url.replace(f":{server.port}/", f":{free_port()}/")
        down = dtq(env, tmp_path, "--backend", closed, "stats")
        assert down.returncode == 3 and ":***@" in down.stderr, down.stderr
        bad = dtq(env, tmp_path, "--backend", url + "&colour=blue", "stats")
        assert bad.returncode == 2 and "unknown option 'colour'" in bad.stderr
        outputs += [wrong.stdout, wrong.stderr, down.stdout, down.stderr, bad.stderr]
        no_password(*outputs)
    finally:
        worker.terminate()
        out, err = worker.communicate(timeout=30)
    no_password(out, err)  # the -v event log and the stop summary
    assert worker.returncode == 0, err


def test_password_from_environment_and_file(
    server: RedisServer, env: dict[str, str], tmp_path: Path
) -> None:
    bare = server.url(unique_prefix("sec"), retry_s=1, auth=False)
    refused = dtq(env, tmp_path, "--backend", bare, "stats")
    assert refused.returncode == 3, refused.stderr
    by_env = dtq({**env, "DTQ_REDIS_PASSWORD": PASSWORD}, tmp_path, "--backend", bare, "stats")
    assert by_env.returncode == 0, by_env.stderr
    secret = tmp_path / "redis.pw"
    secret.write_text(PASSWORD + "\n")
    by_file = dtq(env, tmp_path, "--backend", f"{bare}&password_file={secret}", "stats", "--json")
    assert by_file.returncode == 0, by_file.stderr
    assert f"password_file={secret}" in json.loads(by_file.stdout)["backend"]
    missing = dtq(env, tmp_path, "--backend", f"{bare}&password_file={secret}.nope", "stats")
    assert missing.returncode == 2
    assert (
        missing.stderr.count("\n") == 1 and "cannot read the redis password_file" in missing.stderr
    )
    no_password(refused.stderr, by_env.stdout, by_env.stderr, by_file.stdout, missing.stderr)


def test_password_sources_in_the_engine(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = server.url(unique_prefix("sec"), retry_s=1, auth=False)
    monkeypatch.delenv("DTQ_REDIS_PASSWORD", raising=False)
    with pytest.raises(BackendUnavailable) as err:
        connect(bare, connect_timeout=1)
    assert "refused the credentials" in str(err.value) or "NOAUTH" in str(err.value)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        connect(f"{bare}&password_file={empty}")
    with pytest.raises(ConfigError, match="only one"):
        connect(f"{server.url('x')}&password_file={empty}")
    monkeypatch.setenv("DTQ_REDIS_PASSWORD", PASSWORD)
    console = connect(bare, connect_timeout=2)
    try:
        assert console.health().status != "down"
    finally:
        console.close()  # type: ignore[attr-defined]


def test_read_only_console_on_redis_refuses_before_the_server(server: RedisServer) -> None:
    url = server.url(unique_prefix("ro"), retry_s=1)
    writer = connect(url)
    writer.pause_queue("kept")
    writer.resume_queue("kept")
    ro = connect(url, read_only=True)
    client = server.client()
    before = client.info("stats")["total_commands_processed"]  # type: ignore[attr-defined]
    try:
        assert ro.read_only is True and writer.read_only is False
        for name, args in (
            ("pause_queue", ("kept",)),
            ("purge", (["x"],)),
            ("cancel", ("x",)),
            ("enqueue", ("sec.add",)),
            ("set_breaker", ("k", "open")),
            ("replay", (["x"],)),
        ):
            assert name in CONSOLE_WRITES
            with pytest.raises(ReadOnlyError):
                getattr(ro, name)(*args)
        after = client.info("stats")["total_commands_processed"]  # type: ignore[attr-defined]
        assert after - before <= 1  # only the INFO that measured it
        assert not any(q.paused for q in ro.snapshot().queues)
    finally:
        ro.close()  # type: ignore[attr-defined]
        writer.close()  # type: ignore[attr-defined]
        client.close()  # type: ignore[attr-defined]
