"""The worker's hot path in Lua: claiming a batch and acknowledging a batch.

Both run once per batch, not once per task: per task they make one ``HMGET`` and one
``HSET``; the lease set, the state counts, the rate counters and the events (one stream
entry for the batch, see ``evs``) are written once for the whole batch.
"""

from __future__ import annotations

from dtq_core.backends.redis.lua_common import COMMON

__all__ = ["ACK_MANY", "CLAIM", "IDLE"]

#: ARGV: worker, now, deadline, limit, maxlen, idle member. Returns {deliveries, inbox}:
#: deliveries are {id, token, name, payload, attempt, deliveries, enqueued_at,
#: time_limit, max_retries}; inbox holds what was handed to this worker while it waited
#: (see ``handoff`` in COMMON), still leased to it, and counts towards ``limit``.
#: Claiming ends the wait; a limit of 0 only ends it (and collects the inbox).
CLAIM = (
    COMMON
    + r"""
local worker, now, deadline, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
redis.call('ZREM', T..':idle', ARGV[6])
local boxed = unbox(worker)
local limit = tonumber(ARGV[4]) - #boxed
if redis.call('EXISTS', T..':paused') == 1 or limit < 1 then return {{}, boxed} end
local popped = redis.call('ZPOPMIN', T..':ready', limit)
local out, leases, n = {}, {}, 0
local batch = {ids = {}, names = {}}
if #popped > 0 then
  -- Tokens for the whole batch at once; a skipped id leaves a gap, which is harmless.
  local token = redis.call('INCRBY', T..':tokens', #popped / 2) - #popped / 2
  for i = 1, #popped, 2 do
    local id = popped[i]
    token = token + 1
    local row = take(id, token, worker, now, deadline, maxlen, batch)
    if row then
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      n = n + 1
      out[n] = row
    end
  end
end
if n > 0 then
  redis.call('ZADD', T..':leases', unpack(leases))
  redis.call('HINCRBY', T..':counts', 'PENDING', -n)
  redis.call('HINCRBY', T..':counts', 'RUNNING', n)
  tick(now, 'started', n)
  evs(maxlen, now, batch, 'PENDING', 'RUNNING', worker)
end
if redis.call('ZCARD', T..':ready') == 0 then redis.call('DEL', T..':notify') end
return {out, boxed}
"""
)

#: ARGV: idle member ("<lease_s>|<worker>"), now, until, worker. A worker about to block
#: on its inbox: registered as idle (new tasks are handed to it) unless the queue has
#: ready tasks already, then a wake-up mark in its inbox makes it claim at once. The
#: inbox is emptied first, so the wait pops only what is handed over during it. Returns
#: {1 (work is there) or 0 (registered), deliveries left in the inbox still leased to it}.
IDLE = (
    COMMON
    + r"""
local boxed = unbox(ARGV[4])
if #boxed > 0 or (redis.call('EXISTS', T..':paused') == 0
                  and redis.call('ZCARD', T..':ready') > 0) then
  -- Work is here already: no registration, and a mark that ends the wait at once.
  local box = T..':inbox:'..ARGV[4]
  redis.call('RPUSH', box, '!')
  redis.call('PEXPIRE', box, 60000)
  return {1, boxed}
end
redis.call('ZREMRANGEBYSCORE', T..':idle', '-inf', '('..ARGV[2])
redis.call('ZADD', T..':idle', ARGV[3], ARGV[1])
return {0, boxed}
"""
)

#: ARGV: now, expires_at, maxlen, retried, then per ack: id, token, result JSON, worker.
#: Returns one 1 (stored) or 0 (stale token, or acked already) per ack. On a retry
#: (``retried`` = 1) a task already SUCCESS under the same token counts as stored: the
#: first attempt was stored and only its reply was lost to a dropped connection.
ACK_MANY = (
    COMMON
    + r"""
local now, expires, maxlen, retried = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local out, ids, done, n = {}, {}, {}, 0
local by_worker, workers = {}, {}
for i = 5, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local rec = T..':t:'..id
  local f = redis.pcall('HMGET', rec, 'state', 'lease_token', 'name')
  if f.err then f = {} end
  if f[1] == 'RUNNING' and f[2] == token then
    f[3] = f[3] or '?'
    redis.call('HSET', rec, 'state', 'SUCCESS', 'result', ARGV[i + 2], 'error', '',
               'finished_at', now, 'lease_deadline', '')
    n = n + 1
    ids[n] = id
    done[2 * n - 1] = expires
    done[2 * n] = id
    local w = ARGV[i + 3]
    if not by_worker[w] then
      by_worker[w] = {ids = {}, names = {}}
      workers[#workers + 1] = w
    end
    evb(by_worker[w], maxlen, now, id, f[3], 'RUNNING', 'SUCCESS', w)
    out[#out + 1] = 1
  elseif retried and f[1] == 'SUCCESS' and f[2] == token then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if n > 0 then
  redis.call('ZREM', T..':leases', unpack(ids))
  redis.call('ZADD', T..':done', unpack(done))
  redis.call('HINCRBY', T..':counts', 'RUNNING', -n)
  redis.call('HINCRBY', T..':counts', 'SUCCESS', n)
  tick(now, 'succeeded', n)
  for _, w in ipairs(workers) do evs(maxlen, now, by_worker[w], 'RUNNING', 'SUCCESS', w) end
end
return out
"""
)
