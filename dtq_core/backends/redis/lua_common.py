"""The Lua helpers prepended to every task script: one queue's keys, counts, events, leases.

``T`` is ``KEYS[1]``, the queue's hash tag (``{prefix:queue}``); every key a helper
touches derives from it, so each script stays on one cluster slot.
"""

from __future__ import annotations

__all__ = ["COMMON", "CORE", "RECORD"]

#: Lua: write new task record ``rec`` (PENDING at ``now``), the one layout every script
#: that creates a task writes (``create`` below, ``_STORE`` in :mod:`.enqueue_scripts`).
#: A field holding its first value is left out (id and queue are the key's, created_at is
#: enqueued_at; attempt, deliveries, lease_token and priority 0, time_limit none: `read`
#: gives them back), and so are empty optional ones: each field costs the most frequent
#: script. Locals read: ``rec now name payload maxr prio tl dedup rf wf eta later edits``
#: (strings, '' for none; ``later``: delayed until ``eta``). Numbers come as strings (a
#: Lua number is formatted with '%.17g' on each redis.call).
RECORD = r"""
  if prio == '0' and tl == '' and dedup == '' and rf == '' and wf == '' and edits == ''
      and not later then
    redis.call('HSET', rec, 'name', name, 'payload', payload, 'state', 'PENDING',
               'enqueued_at', now, 'max_retries', maxr)
  else
    local h = {'name', name, 'payload', payload, 'state', 'PENDING', 'enqueued_at', now,
               'max_retries', maxr}
    if prio ~= '0' then h[#h + 1] = 'priority'; h[#h + 1] = prio end
    if tl ~= '' then h[#h + 1] = 'time_limit'; h[#h + 1] = tl end
    if dedup ~= '' then h[#h + 1] = 'dedup_key'; h[#h + 1] = dedup end
    if rf ~= '' then h[#h + 1] = 'replayed_from'; h[#h + 1] = rf end
    if wf ~= '' then h[#h + 1] = 'workflow'; h[#h + 1] = wf end
    if later then h[#h + 1] = 'eta'; h[#h + 1] = eta end
    if edits ~= '' then h[#h + 1] = 'edits'; h[#h + 1] = edits end
    redis.call('HSET', rec, unpack(h))
  end
"""

#: The helpers that create and hand over tasks, prepended to the enqueue scripts alone:
#: each helper is a closure made on every call of a script (Lua has no state kept
#: between calls), and the most frequent script is cheaper without those it never calls.
CORE = (
    r"""
local T = KEYS[1]
local function ev(maxlen, now, id, name, old, new, worker, note)
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now, 'id', id,
             'name', name, 'old', old, 'new', new, 'worker', worker or '', 'note', note or '')
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
-- Cost note: a Lua number passed to redis.call is formatted with '%.17g' on each call
-- (as dear as a cheap command), so the hot paths pass numbers as strings ('1', not 1).
-- Count `n` (a number; nil for one) under `counter` in this second's and the total.
local function tick(now, counter, n)
  -- The second, cut from `now`'s digits ('1733456789.25'); a time written otherwise
  -- ('1e-05') takes the arithmetic way, which gives the same key.
  local k = T..':sec:'..(string.match(now, '^(%d+)%.?%d*$') or math.floor(tonumber(now)))
  local by = n or '1'
  -- The second's hash is made by its first increment: its expiry is set then, once.
  if redis.call('HINCRBY', k, counter, by) == (n or 1) then redis.call('EXPIRE', k, 120) end
  redis.call('HINCRBY', T..':totals', counter, by)
end
-- Make task `id` ready (FIFO within its priority). `quiet`: the caller has just seen
-- that no worker is registered idle on this queue, so no claimer is blocked on the
-- notify list (a blocking claim registers before it blocks: see IDLE), and no wake-up
-- is pushed.
local function ready(id, priority, quiet)
  local seq = redis.call('INCR', T..':seq')
  redis.call('ZADD', T..':ready', tonumber(priority) * 17179869184 + seq, id)
  if quiet then return end
  -- Wakes blocked claimers (a BLPOP takes one each); 64 are enough to wake them all.
  if redis.call('LLEN', T..':notify') < 64 then redis.call('RPUSH', T..':notify', '1') end
end
-- The task states; the fields every transition of a task reads, and what each must
-- hold. Built by `tables()` on a script's first `read` only: they were most of the
-- cost of this prelude, paid by every script call, and an enqueue with nobody waiting
-- never reads a record. Code that reads them runs after a `read`.
local STATES, FIELDS, KINDS
local function tables()
  if STATES then return end
  STATES = {PENDING = 1, RUNNING = 1, SUCCESS = 1, FAILED = 1, RETRY = 1, DEAD = 1,
            CANCELLED = 1}
  FIELDS = {'state', 'name', 'payload', 'enqueued_at', 'time_limit', 'max_retries',
            'attempt', 'deliveries', 'priority', 'lease_token'}
  KINDS = {state = 'state', name = 'text', payload = 'any', enqueued_at = 'number',
           time_limit = 'number?', max_retries = 'integer', attempt = 'integer',
           deliveries = 'integer', priority = 'integer', lease_token = 'integer'}
end
local function flaw_of(name, v)
  local kind = KINDS[name]
  if v == false then return "field '"..name.."' is missing" end
  local shown = string.sub(v, 1, 40)
  if kind == 'state' and not STATES[v] then
    return "field 'state' is not a task state: "..shown
  elseif kind == 'text' and v == '' then
    return "field '"..name.."' is empty"
  elseif kind == 'number' or kind == 'integer' or (kind == 'number?' and v ~= '') then
    local n = tonumber(v)
    if n == nil or n ~= n or n == math.huge or n == -math.huge then
      return "field '"..name.."' is not a number: "..shown
    end
    if kind == 'integer' and n ~= math.floor(n) then
      return "field '"..name.."' is not an integer: "..shown
    end
  end
  return nil
end
-- Task `id`'s record fields (FIELDS order) and what is wrong with them (nil: nothing).
-- Every script reads a record through this before it writes anything: Redis does not
-- roll a script back, so a failure half-way would leave a record in no structure.
local function read(id)
  tables()
  local f = redis.pcall('HMGET', T..':t:'..id, unpack(FIELDS))
  if f.err then return {}, 'the record is not a hash' end
  if f[1] == false and redis.call('EXISTS', T..':t:'..id) == 0 then return f, nil end
  -- Fields a record leaves out while they hold their first value (see create).
  if f[5] == false then f[5] = '' end
  if f[7] == false then f[7] = '0' end
  if f[8] == false then f[8] = '0' end
  if f[9] == false then f[9] = '0' end
  if f[10] == false then f[10] = '0' end
  for i, name in ipairs(FIELDS) do
    local why = flaw_of(name, f[i])
    if why then return f, why end
  end
  return f, nil
end
-- Dead-letter task `id`, whose record cannot be used, with reason 'malformed record'
-- and an error naming what is wrong. A key that is not a hash is kept beside as
-- `<key>:malformed` and a record is written in its place. Returns the task's name.
local function malformed(id, why, now, maxlen)
  tables()
  local rec = T..':t:'..id
  redis.call('ZREM', T..':ready', id)
  redis.call('ZREM', T..':delayed', id)
  redis.call('ZREM', T..':leases', id)
  redis.call('ZREM', T..':done', id)
  local kind = redis.call('TYPE', rec)['ok']
  local old, name = nil, '?'
  if kind == 'hash' then
    local f = redis.call('HMGET', rec, 'state', 'name')
    if f[1] and STATES[f[1]] then old = f[1] end
    if f[2] and f[2] ~= '' then name = f[2] end
  elseif kind ~= 'none' then
    redis.call('RENAME', rec, rec..':malformed')
  end
  if old then redis.call('HINCRBY', T..':counts', old, -1) end
  redis.call('HINCRBY', T..':counts', 'DEAD', 1)
  local err = cjson.encode({type = 'MalformedRecord', message = why, traceback = ''})
  redis.call('HSET', rec, 'id', id, 'state', 'DEAD', 'dead_reason', 'malformed record',
             'error', err, 'finished_at', now, 'lease_deadline', '')
  redis.call('HSETNX', rec, 'name', name)
  redis.call('ZADD', T..':dead', now, id)
  tick(now, 'dead')
  ev(maxlen, now, id, name, old or '', 'DEAD', '', 'malformed record: '..why)
  return name
end
-- Lease PENDING task `id` to `worker` (the record's side of a claim): its delivery row
-- {id, token, name, payload, attempt, deliveries, enqueued_at, time_limit, max_retries},
-- or nil when the task is not PENDING (or was dead-lettered as malformed). The caller
-- writes the lease set and the counts (and the event, when it passes a `batch` to
-- gather events in: see `evs`).
local function take(id, token, worker, now, deadline, maxlen, batch)
  local rec = T..':t:'..id
  local f, why = read(id)
  if why then
    if f[1] == nil or f[1] == 'PENDING' or not STATES[f[1]] then
      malformed(id, why, now, maxlen)
    end
    return nil
  end
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
-- trip of a claim after its wake-up. Nil: no worker is registered idle (the usual case
-- while producers outpace workers: one O(1) read); false: not handed over (nobody
-- waits any more, the queue is paused, or tasks are ready already).
local function handoff(id, name, now, maxlen)
  if redis.call('ZCARD', T..':idle') == 0 then return nil end
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
local function create(a, now, maxlen)
  -- a: id, name, queue, priority, payload, eta, max_retries, time_limit, dedup,
  --    replayed_from, workflow, edits (strings; `now` and `maxlen` too)
  local rec = T..':t:'..a[1]
  if redis.call('EXISTS', rec) == 1 then return false end
  local name, payload, prio, maxr, tl = a[2], a[5], a[4], a[7], a[8]
  local dedup, rf, wf, eta, edits = a[9], a[10], a[11], a[6], a[12] or ''
  local later = eta ~= '' and tonumber(eta) > tonumber(now)
"""
    + RECORD
    + r"""
  redis.call('HINCRBY', T..':counts', 'PENDING', '1')
  redis.call('ZADD', T..':all', now, a[1])  -- the listing index: by (enqueued_at, id)
  tick(now, 'enqueued')
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now, 'id', a[1],
             'name', a[2], 'new', 'PENDING')
  if later then
    redis.call('ZADD', T..':delayed', a[6], a[1])
  else
    local handed = handoff(a[1], a[2], now, maxlen)
    if not handed then ready(a[1], a[4], handed == nil) end
  end
  return true
end
"""
)

#: Shared helpers, prepended to every other script: :data:`CORE` and the rest.
COMMON = (
    CORE
    + r"""
local function move(rec, old, new)
  redis.call('HSET', rec, 'state', new)
  redis.call('HINCRBY', T..':counts', old, -1)
  redis.call('HINCRBY', T..':counts', new, 1)
end
-- One stream entry for the tasks of a batch that made the same transition: ids and
-- names joined by newlines, their count in `n` (readers split them again).
local function evs(maxlen, now, batch, old, new, worker)
  if #batch.ids == 0 then return end
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now,
             'id', table.concat(batch.ids, '\n'), 'name', table.concat(batch.names, '\n'),
             'old', old, 'new', new, 'worker', worker or '', 'note', '', 'n', #batch.ids)
end
-- JSON field `raw` decoded, or `default` when it is empty or not JSON of that kind.
local function jsonf(raw, default)
  if not raw or raw == '' then return default end
  local ok, v = pcall(cjson.decode, raw)
  if ok and type(v) == type(default) then return v end
  return default
end
local function close_attempt(rec, outcome, now)
  local f = redis.call('HMGET', rec, 'history', 'attempt', 'worker', 'started_at', 'error')
  local h = jsonf(f[1], {})
  local err = jsonf(f[5], {})
  if next(err) == nil then err = cjson.null end
  local started = cjson.null
  if f[4] and f[4] ~= '' then started = tonumber(f[4]) end
  h[#h + 1] = {number = tonumber(f[2]), worker = f[3] or cjson.null, started_at = started,
               finished_at = tonumber(now), outcome = outcome, error = err}
  redis.call('HSET', rec, 'history', cjson.encode(h))
end
-- Empty `worker`'s inbox: the deliveries in it still leased to it under their token (one
-- whose lease ran out meanwhile may have gone to another worker, so it is dropped).
local function unbox(worker)
  local box = T..':inbox:'..worker
  local boxed = {}
  for _, e in ipairs(redis.call('LRANGE', box, 0, -1)) do
    local id, token = string.match(e, '^([^\n]*)\n([^\n]*)\n')
    if id then
      local f = redis.pcall('HMGET', T..':t:'..id, 'state', 'lease_token', 'worker')
      if not f.err and f[1] == 'RUNNING' and f[2] == token and f[3] == worker then
        boxed[#boxed + 1] = e
      end
    end
  end
  redis.call('DEL', box)
  return boxed
end
"""
)
