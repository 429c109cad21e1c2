"""Redis-side cost of one enqueue: the enqueue script alone, and what each part costs.

    python bench/redis_script_cost.py [--n 20000] [--runs 5] [--parts] [--callgrind]
                                      [--url redis://...]

Starts its own ``redis-server`` on a free port (``--save '' --appendonly no``) unless
``--url`` names one (it is flushed). Each run calls ``ENQUEUE_ONE`` with the
arguments a single ``apply_async`` sends (one task, its owner key, a 30-byte payload),
and ``ENQUEUE`` with those of a batch of one task,
``--n`` times, pipelined by 1000 so that round trips do not count, after as many calls
to fill the queue (the event stream towards its ``maxlen``, the sorted sets as large
as a real backlog's). What Redis spent is read two ways, server side only:

- in the command: ``usec_per_call`` of ``evalsha`` in ``INFO commandstats`` (wall time,
  reset before each pipeline): the median and the lowest over every pipeline of
  ``--runs`` runs;
- CPU: the main thread's CPU time over the calls (their reading and replying
  included), per call, median over the runs. The steadier figure on a shared machine.

``--callgrind`` runs the server under ``valgrind --tool=callgrind`` instead and reports
instructions per call (Ir): exact and the same on a loaded machine, so the one to
compare versions of a script by (``--n`` 300 is plenty: valgrind is ~50x slower).

``--parts`` also measures scripts made of one piece of the enqueue's work each (a bare
script with the same arguments, the shared prelude, each command ``create`` issues, as
it issues it), so the cost of each reads as its difference to the bare script. A
baseline: one ``LPUSH`` of a Huey-sized message (Huey's enqueue).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _redis_run import Server, wait_ping

from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.enqueue import _one_args, enqueue_args
from dtq_core.backends.redis.enqueue_scripts import ENQUEUE, ENQUEUE_ONE
from dtq_core.backends.redis.keys import Keys
from dtq_core.backends.redis.lua_common import CORE

PAYLOAD = b'{"args":[1],"kwargs":{}}' + b"\0" * 6
QUEUE = "default"
BATCH = 1000

# One piece of the enqueue's work each, after the same unpacking of the task's fields
# (``a``: create's arguments, ``now``, ``id``), so each reads as its own cost.
_UNPACK = r"""
local now, maxlen = ARGV[1], ARGV[2]
local a = {ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]}
local id = a[1]
"""
PARTS: dict[str, str] = {
    "bare script (same args)": "return 1",
    "prelude (CORE)": CORE + "return 1",
    "arguments unpacked": _UNPACK + "return 1",
    "SET NX GET owner": _UNPACK + "redis.call('SET', KEYS[3], now..'|'..a[3], 'NX', 'GET')",
    "EXISTS record": _UNPACK + "redis.call('EXISTS', KEYS[1]..':t:'..id)",
    "HSET 13 fields": _UNPACK
    + r"""redis.call('HSET', KEYS[1]..':t:'..id, 'id', a[1], 'name', a[2], 'queue', a[3],
  'priority', a[4], 'payload', a[5], 'state', 'PENDING', 'created_at', now,
  'enqueued_at', now, 'max_retries', a[7], 'time_limit', a[8], 'attempt', '0',
  'deliveries', '0', 'lease_token', '0')""",
    "HINCRBY counts": _UNPACK + "redis.call('HINCRBY', KEYS[1]..':counts', 'PENDING', '1')",
    "ZADD all": _UNPACK + "redis.call('ZADD', KEYS[1]..':all', now, id)",
    "HINCRBY sec + EXPIRE once": _UNPACK
    + r"""local k = KEYS[1]..':sec:'..string.match(now, '^(%d+)%.?%d*$')
if redis.call('HINCRBY', k, 'enqueued', '1') == 1 then redis.call('EXPIRE', k, 120) end""",
    "HINCRBY totals": _UNPACK + "redis.call('HINCRBY', KEYS[1]..':totals', 'enqueued', '1')",
    "XADD 8 fields MAXLEN ~": _UNPACK
    + r"""redis.call('XADD', KEYS[1]..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now,
  'id', id, 'name', a[2], 'old', '', 'new', 'PENDING', 'worker', '', 'note', '')""",
    "ZCARD idle": _UNPACK + "redis.call('ZCARD', KEYS[1]..':idle')",
    "INCR seq": _UNPACK + "redis.call('INCR', KEYS[1]..':seq')",
    "INCR seq + ZADD ready": _UNPACK
    + "redis.call('ZADD', KEYS[1]..':ready', tonumber(a[4]) * 17179869184 "
    "+ redis.call('INCR', KEYS[1]..':seq'), id)",
    "LLEN + RPUSH notify": _UNPACK + "if redis.call('LLEN', KEYS[1]..':notify') < 64 then "
    "redis.call('RPUSH', KEYS[1]..':notify', '1') end",
}


def _args(keys: Keys, i: int, now: float, script: str = ENQUEUE) -> list[Any]:
    """KEYS count, KEYS and ARGV of one single enqueue, as the backend sends them.

    ``ENQUEUE_ONE`` (``apply_async`` on one Redis) takes its own short arguments; every
    other script here takes ``ENQUEUE``'s (a batch of one task).
    """
    task = NewTask(
        id=f"t{i:012d}",
        name="bench.noop",
        queue=QUEUE,
        payload=PAYLOAD,
        priority=0,
        eta=None,
        max_retries=3,
        time_limit=None,
    )
    if script is ENQUEUE_ONE:
        return [2, keys.tag(QUEUE), keys.owner(task.id), repr(now), "10000", *_one_args(task)]
    ks, argv = enqueue_args(keys, QUEUE, [task], now, 10000, owned=True)
    return [len(ks), *ks, *argv]


def _calls(
    r: Any, sha: str, keys: Keys, start: int, n: int, stats: bool = True, script: str = ENQUEUE
) -> list[float]:
    """Call ``sha`` (of ``script``) ``n`` times; server µs per call of each pipeline of
    :data:`BATCH`."""
    out: list[float] = []
    for b in range(start, start + n, BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(b, min(b + BATCH, start + n)):
            pipe.evalsha(sha, *_args(keys, i, time.time(), script))
        if stats:
            r.config_resetstat()
        for res in pipe.execute(raise_on_error=False):
            if isinstance(res, Exception):
                raise res
        if stats:
            got = r.info("commandstats")["cmdstat_evalsha"]
            out.append(got["usec"] / got["calls"])
    return out


def _cpu(r: Any) -> float:
    """Seconds of CPU the Redis main thread has used."""
    c = r.info("cpu")
    return float(c["used_cpu_user_main_thread"]) + float(c["used_cpu_sys_main_thread"])


def measure(r: Any, script: str, n: int, runs: int) -> tuple[float, float, float]:
    """Server µs per call of ``script``: in the command, median and lowest; CPU.

    The machine may be shared: a pipeline during which Redis was preempted reads high
    in ``commandstats`` (wall time), so the median over many short pipelines is given,
    and the lowest shows the floor. The CPU figure (the main thread's CPU time over the
    calls, their reading and replying included) is the steadiest under load.
    """
    keys = Keys("dtq")
    vals: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        r.flushall()
        sha = r.script_load(script)
        _calls(r, sha, keys, 0, n, script=script)  # a backlog of n tasks first
        c0 = _cpu(r)
        vals += _calls(r, sha, keys, n, n, script=script)
        cpu.append((_cpu(r) - c0) / n * 1e6)
    return statistics.median(vals), min(vals), statistics.median(cpu)


def lpush_cost(r: Any, n: int, runs: int) -> tuple[float, float, float]:
    """Server µs of one ``LPUSH`` of a Huey-sized message, as :func:`measure` gives them."""
    vals: list[float] = []
    cpu: list[float] = []
    msg = PAYLOAD * 8
    for _ in range(runs):
        r.flushall()
        c0 = _cpu(r)
        for _ in range(0, n, BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.lpush("huey.redis.default", msg)
            r.config_resetstat()
            pipe.execute()
            stats = r.info("commandstats")["cmdstat_lpush"]
            vals.append(stats["usec"] / stats["calls"])
        cpu.append((_cpu(r) - c0) / n * 1e6)
    return statistics.median(vals), min(vals), statistics.median(cpu)


class CallgrindServer:
    """A redis-server under ``valgrind --tool=callgrind``: instructions per call."""

    def __init__(self) -> None:
        import redis

        if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
            sys.exit("--callgrind needs valgrind (apt-get install valgrind)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.dir = tempfile.mkdtemp(prefix="dtq-callgrind-")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.out",
             binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port)
        wait_ping(self.client, 60, 0.2)  # valgrind starts slowly
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _ctl(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       capture_output=True)  # fmt: skip

    def count(self, fn: Any) -> int:
        """Instructions the server ran while ``fn()`` ran."""
        for f in glob.glob(f"{self.dir}/cg.out.*"):
            os.remove(f)
        self._ctl("-z")
        fn()
        self._ctl("-d")
        deadline = time.monotonic() + 30
        while not (dumps := glob.glob(f"{self.dir}/cg.out.*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # the dump is written whole
        with open(dumps[0]) as fh:
            for line in fh:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        raise RuntimeError("no totals in the callgrind dump")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def instructions(srv: CallgrindServer, r: Any, script: str, n: int) -> float:
    """Server instructions per call of ``script`` (after a backlog of ``n`` calls)."""
    keys = Keys("dtq")
    r.flushall()
    sha = r.script_load(script)
    _calls(r, sha, keys, 0, n, stats=False, script=script)
    return srv.count(lambda: _calls(r, sha, keys, n, n, stats=False, script=script)) / n


def lpush_instructions(srv: CallgrindServer, r: Any, n: int) -> float:
    r.flushall()

    def run() -> None:
        pipe = r.pipeline(transaction=False)
        for _ in range(n):
            pipe.lpush("huey.redis.default", PAYLOAD * 8)
        pipe.execute()

    return srv.count(run) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=0, help="measured calls per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parts", action="store_true", help="also each part on its own")
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    ap.add_argument("--url", default="", help="a Redis to use (flushed!) instead of our own")
    args = ap.parse_args()
    import redis

    scripts = {"ENQUEUE_ONE (apply_async)": ENQUEUE_ONE, "ENQUEUE (a batch of one)": ENQUEUE}
    if args.parts:
        scripts.update(PARTS)
    if args.callgrind:
        n = args.n or 300
        srv = CallgrindServer()
        r = redis.Redis(port=srv.port)
        try:
            print(f"redis {r.info('server')['redis_version']} under callgrind, n={n}")
            print(f"{'':28s} {'Ir/call':>9s}")
            print(f"{'LPUSH (Huey enqueue)':28s} {lpush_instructions(srv, r, n):9.0f}")
            for name, text in scripts.items():
                print(f"{name:28s} {instructions(srv, r, text, n):9.0f}", flush=True)
        finally:
            r.close()
            srv.stop()
        return
    n = args.n or 20000
    server = None if args.url else Server()
    r = redis.Redis.from_url(args.url or server.url)  # type: ignore[union-attr]
    try:
        print(f"redis {r.info('server')['redis_version']}, n={n}, runs={args.runs}")
        print("server µs per call: in the command (commandstats: median, lowest), CPU")
        print(f"{'':28s} {'median':>7s} {'lowest':>7s} {'CPU':>7s}")
        med, low, cpu = lpush_cost(r, n, args.runs)
        print(f"{'LPUSH (Huey enqueue)':28s} {med:7.2f} {low:7.2f} {cpu:7.2f}")
        for name, text in scripts.items():
            med, low, cpu = measure(r, text, n, args.runs)
            print(f"{name:28s} {med:7.2f} {low:7.2f} {cpu:7.2f}", flush=True)
    finally:
        r.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
