"""The orphan sweep: task records that sit in no structure are put back or dead-lettered.

Every script keeps a record and its structure (ready, delayed, leases, dead, done) in
step, but a record can still end up in none of them: written or edited by hand, left by
an older version whose script failed half-way (Redis does not roll a script back), or
restored from a partial copy. Such a record never runs, never expires and is counted
forever. The sweep scans each queue's records (``SCAN``, so it is O(records) and runs
rarely: see :data:`SWEEP_EVERY_S`) and checks each one in a script, atomically:

- PENDING, not ready nor delayed: made ready again (delayed when its eta is ahead);
- RETRY, not delayed: delayed to its eta (or now);
- RUNNING, not leased: leased until its deadline (or now), so the reclaim requeues it;
- DEAD, not in the dead-letter index: indexed; SUCCESS/FAILED/CANCELLED not in the
  expiry index: indexed to expire after the result TTL;
- a record that cannot be read (not a hash, no valid state, a field a transition needs
  missing or of the wrong type): dead-lettered as ``malformed record``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from dtq_core.backends.redis.lua_common import COMMON
from dtq_core.backends.redis.records import _s

if TYPE_CHECKING:
    from dtq_core.backends.redis.backend import RedisBackend

__all__ = ["SWEEP", "SWEEP_EVERY_S", "sweep_orphans"]

#: How often the maintenance round sweeps (seconds): a SCAN of every record.
SWEEP_EVERY_S = 3600.0
#: Records checked per script.
BATCH = 500

#: ARGV: now, expires_at, maxlen, then task ids. Returns {id, what was done} pairs.
SWEEP = (
    COMMON
    + r"""
local now, expires, maxlen = ARGV[1], ARGV[2], ARGV[3]
local out = {}
local function in_(z, id) return redis.call('ZSCORE', T..':'..z, id) ~= false end
for i = 4, #ARGV do
  local id = ARGV[i]
  local rec = T..':t:'..id
  local r, why = read(id)
  if why then
    local st = r[1]
    local placed = st and STATES[st] and (in_('ready', id) or in_('delayed', id)
                   or in_('leases', id) or in_('dead', id) or in_('done', id))
    if not placed or st == 'PENDING' or st == 'RETRY' then
      malformed(id, why, now, maxlen)
      out[#out + 1] = {id, 'dead-lettered: '..why}
    end
  elseif r[1] then
    local st = r[1]
    local f = redis.call('HMGET', rec, 'eta', 'lease_deadline', 'finished_at')
    local eta = tonumber(f[1])
    if st == 'PENDING' and not in_('ready', id) and not in_('delayed', id) then
      if eta and eta > tonumber(now) then
        redis.call('ZADD', T..':delayed', eta, id)
        out[#out + 1] = {id, 'PENDING: delayed again'}
      else
        ready(id, r[9])
        out[#out + 1] = {id, 'PENDING: made ready again'}
      end
    elseif st == 'RETRY' and not in_('delayed', id) then
      redis.call('ZADD', T..':delayed', eta or now, id)
      out[#out + 1] = {id, 'RETRY: delayed again'}
    elseif st == 'RUNNING' and not in_('leases', id) then
      redis.call('ZADD', T..':leases', tonumber(f[2]) or now, id)
      out[#out + 1] = {id, 'RUNNING: leased again (the reclaim requeues it)'}
    elseif st == 'DEAD' and not in_('dead', id) then
      redis.call('ZADD', T..':dead', tonumber(f[3]) or now, id)
      out[#out + 1] = {id, 'DEAD: indexed again'}
    elseif (st == 'SUCCESS' or st == 'FAILED' or st == 'CANCELLED') and not in_('done', id) then
      redis.call('ZADD', T..':done', expires, id)
      out[#out + 1] = {id, st..': indexed to expire'}
    end
  end
end
return out
"""
)


def sweep_orphans(be: RedisBackend, now: float) -> list[tuple[str, str]]:
    """Check every record of every queue; return ``(task_id, what was done)`` per fix."""
    script = be._sweep
    out: list[tuple[str, str]] = []
    args = [repr(now), repr(now + be.result_ttl), be.maxlen]
    for q in be._known_queues(fresh=True):
        ids = be._record_ids(q)
        for k in range(0, len(ids), BATCH):
            batch = args + ids[k : k + BATCH]
            call = functools.partial(script, keys=be.keys.script_keys(q), args=batch)
            out.extend((_s(i), _s(what)) for i, what in be._call(call))
    return out
