"""The worker's hot path in Lua: claiming a batch and acknowledging a batch.

Both run once per batch, not once per task: per task they make one ``HMGET``, one
``HSET`` and one ``XADD`` (the event); the lease set, the state counts and the rate
counters are written once for the whole batch.
"""

from __future__ import annotations

from dtq_core.backends.redis.scripts import COMMON

__all__ = ["ACK_MANY", "CLAIM"]

#: ARGV: worker, now, deadline, limit, maxlen. Returns deliveries:
#: {id, token, name, payload, attempt, deliveries, enqueued_at, time_limit, max_retries}.
CLAIM = (
    COMMON
    + r"""
if redis.call('EXISTS', T..':paused') == 1 then return {} end
local worker, now, deadline, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local popped = redis.call('ZPOPMIN', T..':ready', tonumber(ARGV[4]))
local out, leases, n = {}, {}, 0
if #popped > 0 then
  -- Tokens for the whole batch at once; a skipped id leaves a gap, which is harmless.
  local token = redis.call('INCRBY', T..':tokens', #popped / 2) - #popped / 2
  for i = 1, #popped, 2 do
    local id = popped[i]
    local rec = T..':t:'..id
    token = token + 1
    local f = redis.call('HMGET', rec, 'state', 'name', 'payload', 'enqueued_at',
                         'time_limit', 'max_retries', 'attempt', 'deliveries')
    if f[1] == 'PENDING' then
      local attempt = tonumber(f[7]) + 1
      local deliveries = tonumber(f[8]) + 1
      redis.call('HSET', rec, 'state', 'RUNNING', 'worker', worker, 'started_at', now,
                 'finished_at', '', 'lease_token', token, 'lease_deadline', deadline,
                 'attempt', attempt, 'deliveries', deliveries)
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      n = n + 1
      out[n] = {id, token, f[2], f[3], attempt, deliveries, f[4], f[5], f[6]}
      ev(maxlen, now, id, f[2], 'PENDING', 'RUNNING', worker, '')
    end
  end
end
if n > 0 then
  redis.call('ZADD', T..':leases', unpack(leases))
  redis.call('HINCRBY', T..':counts', 'PENDING', -n)
  redis.call('HINCRBY', T..':counts', 'RUNNING', n)
  tick(now, 'started', n)
end
if redis.call('ZCARD', T..':ready') == 0 then redis.call('DEL', T..':notify') end
return out
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
for i = 5, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local rec = T..':t:'..id
  local f = redis.call('HMGET', rec, 'state', 'lease_token', 'name')
  if f[1] == 'RUNNING' and f[2] == token then
    redis.call('HSET', rec, 'state', 'SUCCESS', 'result', ARGV[i + 2], 'error', '',
               'finished_at', now, 'lease_deadline', '')
    n = n + 1
    ids[n] = id
    done[2 * n - 1] = expires
    done[2 * n] = id
    ev(maxlen, now, id, f[3], 'RUNNING', 'SUCCESS', ARGV[i + 3], '')
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
end
return out
"""
)
