"""The Lua helpers prepended to every task script: one queue's keys, counts, events, leases.

``T`` is ``KEYS[1]``, the queue's hash tag (``{prefix:queue}``); every key a helper
touches derives from it, so each script stays on one cluster slot.
"""

from __future__ import annotations

__all__ = ["COMMON"]

#: Shared helpers, prepended to every script.
COMMON = r"""
local T = KEYS[1]
local function move(rec, old, new)
  redis.call('HSET', rec, 'state', new)
  redis.call('HINCRBY', T..':counts', old, -1)
  redis.call('HINCRBY', T..':counts', new, 1)
end
local function ev(maxlen, now, id, name, old, new, worker, note)
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now, 'id', id,
             'name', name, 'old', old, 'new', new, 'worker', worker or '', 'note', note or '')
end
-- One stream entry for the tasks of a batch that made the same transition: ids and
-- names joined by newlines, their count in `n` (readers split them again).
local function evs(maxlen, now, batch, old, new, worker)
  if #batch.ids == 0 then return end
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now,
             'id', table.concat(batch.ids, '\n'), 'name', table.concat(batch.names, '\n'),
             'old', old, 'new', new, 'worker', worker or '', 'note', '', 'n', #batch.ids)
end
-- Add a task's event to `batch` (or write it alone when its id or name holds a newline).
local function evb(batch, maxlen, now, id, name, old, new, worker)
  if string.find(id, '\n', 1, true) or string.find(name, '\n', 1, true) then
    ev(maxlen, now, id, name, old, new, worker, '')
  else
    batch.ids[#batch.ids + 1] = id
    batch.names[#batch.names + 1] = name
  end
end
local function tick(now, counter, n)
  n = n or 1
  local k = T..':sec:'..math.floor(tonumber(now))
  redis.call('HINCRBY', k, counter, n)
  redis.call('EXPIRE', k, 120)
  redis.call('HINCRBY', T..':totals', counter, n)
end
local function ready(id, priority)
  local seq = redis.call('INCR', T..':seq')
  redis.call('ZADD', T..':ready', tonumber(priority) * 17179869184 + seq, id)
  redis.call('RPUSH', T..':notify', 1)
  redis.call('LTRIM', T..':notify', -64, -1)
end
local function close_attempt(rec, outcome, now)
  local f = redis.call('HMGET', rec, 'history', 'attempt', 'worker', 'started_at', 'error')
  local h = cjson.decode(f[1] ~= false and f[1] ~= '' and f[1] or '[]')
  local err = cjson.null
  if f[5] and f[5] ~= '' then err = cjson.decode(f[5]) end
  local started = cjson.null
  if f[4] and f[4] ~= '' then started = tonumber(f[4]) end
  h[#h + 1] = {number = tonumber(f[2]), worker = f[3] or cjson.null, started_at = started,
               finished_at = tonumber(now), outcome = outcome, error = err}
  redis.call('HSET', rec, 'history', cjson.encode(h))
end
-- Lease PENDING task `id` to `worker` (the record's side of a claim): its delivery row
-- {id, token, name, payload, attempt, deliveries, enqueued_at, time_limit, max_retries},
-- or nil when the task is not PENDING. The caller writes the lease set and the counts
-- (and the event, when it passes a `batch` to gather events in: see `evs`).
local function take(id, token, worker, now, deadline, maxlen, batch)
  local rec = T..':t:'..id
  local f = redis.call('HMGET', rec, 'state', 'name', 'payload', 'enqueued_at',
                       'time_limit', 'max_retries', 'attempt', 'deliveries')
  if f[1] ~= 'PENDING' then return nil end
  local attempt = tonumber(f[7]) + 1
  local deliveries = tonumber(f[8]) + 1
  redis.call('HSET', rec, 'state', 'RUNNING', 'worker', worker, 'started_at', now,
             'finished_at', '', 'lease_token', token, 'lease_deadline', deadline,
             'attempt', attempt, 'deliveries', deliveries)
  if batch then
    evb(batch, maxlen, now, id, f[2], 'PENDING', 'RUNNING', worker)
  else
    ev(maxlen, now, id, f[2], 'PENDING', 'RUNNING', worker, '')
  end
  return {id, token, f[2], f[3], attempt, deliveries, f[4], f[5], f[6]}
end
-- A worker blocked idle on this queue (registered by the IDLE script as
-- "<lease_s>|<worker id>") takes new task `id` at once: leased here, its delivery pushed
-- to the worker's inbox as 8 header lines then the payload. Saves the worker the round
-- trip of a claim after its wake-up. False: nobody is waiting (or the queue is paused).
local function handoff(id, name, now, maxlen)
  if string.find(id, '\n', 1, true) or string.find(name, '\n', 1, true) then return false end
  if redis.call('EXISTS', T..':paused') == 1 then return false end
  -- Tasks already ready (a retry or promotion just landed) go first, in priority order.
  if redis.call('ZCARD', T..':ready') > 0 then return false end
  local w = redis.call('ZRANGEBYSCORE', T..':idle', now, '+inf', 'LIMIT', 0, 1)
  if #w == 0 then return false end
  local member = w[1]
  redis.call('ZREM', T..':idle', member)
  local bar = string.find(member, '|', 1, true)
  local lease_s = tonumber(string.sub(member, 1, bar - 1))
  local worker = string.sub(member, bar + 1)
  local deadline = string.format('%.17g', tonumber(now) + lease_s)
  local token = redis.call('INCR', T..':tokens')
  local row = take(id, token, worker, now, deadline, maxlen)
  if not row then return false end
  redis.call('ZADD', T..':leases', deadline, id)
  redis.call('HINCRBY', T..':counts', 'PENDING', -1)
  redis.call('HINCRBY', T..':counts', 'RUNNING', 1)
  tick(now, 'started')
  local box = T..':inbox:'..worker
  redis.call('RPUSH', box, table.concat({row[1], row[2], row[3], row[5], row[6], row[7],
                                         row[8], row[9]}, '\n')..'\n'..row[4])
  redis.call('PEXPIRE', box, math.ceil(lease_s * 1000) + 60000)
  return true
end
-- Empty `worker`'s inbox: the deliveries in it still leased to it under their token (one
-- whose lease ran out meanwhile may have gone to another worker, so it is dropped).
local function unbox(worker)
  local box = T..':inbox:'..worker
  local boxed = {}
  for _, e in ipairs(redis.call('LRANGE', box, 0, -1)) do
    local id, token = string.match(e, '^([^\n]*)\n([^\n]*)\n')
    if id then
      local f = redis.call('HMGET', T..':t:'..id, 'state', 'lease_token', 'worker')
      if f[1] == 'RUNNING' and f[2] == token and f[3] == worker then boxed[#boxed + 1] = e end
    end
  end
  redis.call('DEL', box)
  return boxed
end
local function create(a, now, maxlen)
  -- a: id, name, queue, priority, payload, eta, max_retries, time_limit, dedup,
  --    replayed_from, workflow, edits
  local rec = T..':t:'..a[1]
  if redis.call('EXISTS', rec) == 1 then return false end
  redis.call('HSET', rec, 'id', a[1], 'name', a[2], 'queue', a[3], 'priority', a[4],
             'payload', a[5], 'state', 'PENDING', 'created_at', now, 'enqueued_at', now,
             'eta', '', 'max_retries', a[7], 'time_limit', a[8], 'attempt', 0,
             'deliveries', 0, 'dedup_key', a[9], 'replayed_from', a[10], 'workflow', a[11],
             'lease_token', 0, 'edits', a[12] or '')
  redis.call('HINCRBY', T..':counts', 'PENDING', 1)
  redis.call('ZADD', T..':all', now, a[1])  -- the listing index: by (enqueued_at, id)
  tick(now, 'enqueued')
  ev(maxlen, now, a[1], a[2], '', 'PENDING', '', '')
  if a[6] ~= '' and tonumber(a[6]) > tonumber(now) then
    redis.call('HSET', rec, 'eta', a[6])
    redis.call('ZADD', T..':delayed', a[6], a[1])
  elseif not handoff(a[1], a[2], now, maxlen) then
    ready(a[1], a[4])
  end
  return true
end
"""
