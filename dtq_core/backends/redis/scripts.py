"""Lua scripts: every state change of a task is one atomic script on its queue's slot.

Each script gets ``KEYS[1]`` = the queue's hash tag (``{prefix:queue}``) and derives its
keys from it, so it touches one cluster slot. Every transition also bumps the state
counts, a per-second counter (rates for the console) and appends to the queue's event
stream (trimmed to ``maxlen``).
"""

from __future__ import annotations

from dtq_core.backends.redis.enqueue_scripts import ENQUEUE
from dtq_core.backends.redis.kv_scripts import (
    ADD_COUNTS,
    CAS,
    KV,
    KV_DEL,
    KV_GET,
    KV_SET,
    KV_SETNX,
    OWNER_RELEASE,
    OWNER_TAKE,
    RESERVE,
)
from dtq_core.backends.redis.lua_common import COMMON

__all__ = [
    "ADD_COUNTS",
    "BURY",
    "CANCEL",
    "CAS",
    "COMMON",
    "ENQUEUE",
    "EXPIRE",
    "EXTEND",
    "FAIL",
    "KV",
    "KV_DEL",
    "KV_GET",
    "KV_SET",
    "KV_SETNX",
    "OWNER_RELEASE",
    "OWNER_TAKE",
    "PROMOTE",
    "PURGE",
    "RECLAIM",
    "RELEASE",
    "REPLAY",
    "RESERVE",
]


#: ARGV: id, token, error JSON, now, retry_at, dead_reason, expires_at, maxlen, worker,
#: note. Returns the states passed through ({} when stale).
FAIL = (
    COMMON
    + r"""
local id, now, maxlen, worker = ARGV[1], ARGV[4], ARGV[8], ARGV[9]
local rec = T..':t:'..id
local r, why = read(id)
if r[1] ~= 'RUNNING' or r[10] ~= ARGV[2] then return {} end
if why then
  malformed(id, why, now, maxlen)
  return {'DEAD'}
end
local f = {r[1], r[10], r[2], r[9]}
move(rec, 'RUNNING', 'FAILED')
redis.call('HSET', rec, 'error', ARGV[3], 'finished_at', now, 'lease_deadline', '')
redis.call('ZREM', T..':leases', id)
tick(now, 'failed')
ev(maxlen, now, id, f[3], 'RUNNING', 'FAILED', worker, ARGV[10])
if ARGV[5] ~= '' then
  close_attempt(rec, 'FAILED', now)
  move(rec, 'FAILED', 'RETRY')
  tick(now, 'retried')
  ev(maxlen, now, id, f[3], 'FAILED', 'RETRY', worker, '')
  if tonumber(ARGV[5]) > tonumber(now) then
    redis.call('HSET', rec, 'eta', ARGV[5])
    redis.call('ZADD', T..':delayed', ARGV[5], id)
    return {'FAILED', 'RETRY'}
  end
  move(rec, 'RETRY', 'PENDING')
  ready(id, f[4])
  ev(maxlen, now, id, f[3], 'RETRY', 'PENDING', worker, '')
  return {'FAILED', 'RETRY', 'PENDING'}
elseif ARGV[6] ~= '' then
  redis.call('HSET', rec, 'dead_reason', ARGV[6])
  move(rec, 'FAILED', 'DEAD')
  redis.call('ZADD', T..':dead', now, id)
  tick(now, 'dead')
  ev(maxlen, now, id, f[3], 'FAILED', 'DEAD', worker, ARGV[6])
  return {'FAILED', 'DEAD'}
end
redis.call('ZADD', T..':done', ARGV[7], id)
return {'FAILED'}
"""
)

#: ARGV: id, token, error JSON, reason, now, maxlen, worker. Returns 1 or 0 (stale).
BURY = (
    COMMON
    + r"""
local id, now = ARGV[1], ARGV[5]
local rec = T..':t:'..id
local r, why = read(id)
if r[1] ~= 'RUNNING' or r[10] ~= ARGV[2] then return 0 end
if why then
  malformed(id, why, now, ARGV[6])
  return 1
end
local f = {r[1], r[10], r[2]}
move(rec, 'RUNNING', 'DEAD')
redis.call('HSET', rec, 'error', ARGV[3], 'dead_reason', ARGV[4], 'finished_at', now,
           'lease_deadline', '')
redis.call('ZREM', T..':leases', id)
redis.call('ZADD', T..':dead', now, id)
tick(now, 'dead')
ev(ARGV[6], now, id, f[3], 'RUNNING', 'DEAD', ARGV[7], ARGV[4])
return 1
"""
)

#: ARGV: id, token, now, eta, note, maxlen. RUNNING -> PENDING, no attempt counted.
RELEASE = (
    COMMON
    + r"""
local id, now = ARGV[1], ARGV[3]
local rec = T..':t:'..id
local r, why = read(id)
if r[1] ~= 'RUNNING' or r[10] ~= ARGV[2] then return 0 end
if why then
  malformed(id, why, now, ARGV[6])
  return 0
end
local f = {r[1], r[10], r[2], r[9], redis.call('HGET', rec, 'history')}
move(rec, 'RUNNING', 'PENDING')
redis.call('HINCRBY', rec, 'attempt', -1)
redis.call('HINCRBY', rec, 'deliveries', -1)
local h = jsonf(f[5], {})
local last = h[#h]
if last then
  redis.call('HSET', rec, 'started_at', tostring(last.started_at or ''),
             'finished_at', tostring(last.finished_at or ''), 'worker', last.worker or '')
else
  redis.call('HSET', rec, 'started_at', '', 'worker', '', 'finished_at', '')
end
redis.call('HSET', rec, 'lease_deadline', '')
redis.call('ZREM', T..':leases', id)
if ARGV[4] ~= '' and tonumber(ARGV[4]) > tonumber(now) then
  redis.call('HSET', rec, 'eta', ARGV[4])
  redis.call('ZADD', T..':delayed', ARGV[4], id)
else
  redis.call('HSET', rec, 'eta', '')
  ready(id, f[4])
end
tick(now, 'requeued')
ev(ARGV[6], now, id, f[3], 'RUNNING', 'PENDING', '', ARGV[5])
return 1
"""
)

#: ARGV: deadline, then id, token pairs. Renews live leases; returns how many.
EXTEND = (
    COMMON
    + r"""
-- A renewal never moves a deadline earlier: one computed before a stall (a heartbeat
-- queued behind it) must not shorten a lease renewed since, or the task is reclaimed
-- while its worker rightly believes it holds it. Counted as renewed all the same.
local n, upto = 0, tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local rec = T..':t:'..ARGV[i]
  local f = redis.pcall('HMGET', rec, 'state', 'lease_token', 'lease_deadline')
  if not f.err and f[1] == 'RUNNING' and f[2] == ARGV[i + 1] then
    local old = tonumber(f[3] or '')
    if not old or upto > old then
      redis.call('HSET', rec, 'lease_deadline', ARGV[1])
      redis.call('ZADD', T..':leases', 'XX', ARGV[1], ARGV[i])
    end
    n = n + 1
  end
end
return n
"""
)

#: ARGV: now, max_deliveries, limit, maxlen. Returns {id, name, new state} triples.
#: A task dead-lettered as ``worker_lost`` names, in its error's ``beside``, the tasks
#: that were running in the same worker process (``host:pid``): those lost recently
#: (the queue's ``lost`` list, the last 256) and those still leased to it.
RECLAIM = (
    COMMON
    + r"""
local now, maxd, maxlen = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', T..':leases', '-inf', now, 'LIMIT', 0, ARGV[3])
local out = {}
local function proc(w)
  if not w or select(2, string.gsub(w, ':', '')) < 2 then return nil end
  return string.match(w, '^(.*):[^:]*$')
end
local function beside(id, worker)
  local p = proc(worker)
  if not p then return nil end
  local found, seen = {}, {[id] = true}
  local function add(oid, name)
    if not seen[oid] and #found < 20 then
      seen[oid] = true
      found[#found + 1] = {oid, name}
    end
  end
  for _, e in ipairs(redis.call('LRANGE', T..':lost', 0, -1)) do
    local w, oid, name = string.match(e, '^([^\n]*)\n([^\n]*)\n(.*)$')
    if w and proc(w) == p then add(oid, name) end
  end
  local live = redis.call('ZRANGE', T..':leases', 0, 999)
  for _, oid in ipairs(ids) do live[#live + 1] = oid end
  for _, oid in ipairs(live) do
    local f = redis.pcall('HMGET', T..':t:'..oid, 'state', 'worker', 'name')
    if not f.err and f[1] == 'RUNNING' and proc(f[2]) == p then add(oid, f[3] or '?') end
  end
  if #found == 0 then return nil end
  return found
end
for _, id in ipairs(ids) do
  redis.call('ZREM', T..':leases', id)
  local rec = T..':t:'..id
  local r, why = read(id)
  if why and (r[1] == nil or r[1] == 'RUNNING' or not STATES[r[1]]) then
    out[#out + 1] = {id, malformed(id, why, now, maxlen), 'DEAD'}
  elseif r[1] == 'RUNNING' then
    local f = {r[1], r[8], r[2], r[9], redis.call('HGET', rec, 'worker')}
    local who = f[5] or '?'
    redis.call('LPUSH', T..':lost', who..'\n'..id..'\n'..f[3])
    redis.call('LTRIM', T..':lost', 0, 255)
    local lost = {type = 'WorkerLost', message = 'lease expired on worker '..who,
                  traceback = ''}
    if tonumber(f[2]) >= maxd then lost.beside = beside(id, f[5]) end
    redis.call('HSET', rec, 'error', cjson.encode(lost), 'finished_at', now,
               'lease_deadline', '')
    if tonumber(f[2]) >= maxd then
      move(rec, 'RUNNING', 'DEAD')
      redis.call('HSET', rec, 'dead_reason', 'worker_lost')
      redis.call('ZADD', T..':dead', now, id)
      tick(now, 'dead')
      ev(maxlen, now, id, f[3], 'RUNNING', 'DEAD', '', 'worker_lost')
      out[#out + 1] = {id, f[3], 'DEAD'}
    else
      close_attempt(rec, 'LOST', now)
      move(rec, 'RUNNING', 'PENDING')
      ready(id, f[4])
      tick(now, 'requeued')
      ev(maxlen, now, id, f[3], 'RUNNING', 'PENDING', '', 'lease expired: requeued')
      out[#out + 1] = {id, f[3], 'PENDING'}
    end
  end
end
return out
"""
)

#: ARGV: now, limit, maxlen. Returns {id, name, was_retry} triples.
PROMOTE = (
    COMMON
    + r"""
local now, maxlen = ARGV[1], ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', T..':delayed', '-inf', now, 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', T..':delayed', id)
  local rec = T..':t:'..id
  local r, why = read(id)
  local f = {r[1], r[2], r[9]}
  local was = 0
  if why then
    if r[1] == nil or r[1] == 'RETRY' or r[1] == 'PENDING' or not STATES[r[1]] then
      malformed(id, why, now, maxlen)
    end
    f[1] = 'malformed'
  elseif f[1] == 'RETRY' then
    move(rec, 'RETRY', 'PENDING')
    ev(maxlen, now, id, f[2], 'RETRY', 'PENDING', '', '')
    was = 1
  end
  if f[1] == 'RETRY' or f[1] == 'PENDING' then
    redis.call('HSET', rec, 'eta', '')
    ready(id, f[3])
    out[#out + 1] = {id, f[2], was}
  end
end
return out
"""
)

#: ARGV: id, now, expires_at, maxlen. Returns the old state or ''.
CANCEL = (
    COMMON
    + r"""
local id, now = ARGV[1], ARGV[2]
local rec = T..':t:'..id
local r, why = read(id)
local f = {r[1], r[2]}
if why or (f[1] ~= 'PENDING' and f[1] ~= 'RETRY') then return '' end
redis.call('ZREM', T..':ready', id)
redis.call('ZREM', T..':delayed', id)
move(rec, f[1], 'CANCELLED')
redis.call('HSET', rec, 'finished_at', now)
redis.call('ZADD', T..':done', ARGV[3], id)
tick(now, 'cancelled')
ev(ARGV[4], now, id, f[2], f[1], 'CANCELLED', '', 'cancelled')
return f[1]
"""
)

#: ARGV: now, limit, max kept. Deletes finished records past their TTL, and the oldest
#: past the cap (per queue); returns their ids.
EXPIRE = (
    COMMON
    + r"""
local ids = redis.call('ZRANGEBYSCORE', T..':done', '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local over = redis.call('ZCARD', T..':done') - #ids - tonumber(ARGV[3])
if over > 0 then
  local extra = redis.call('ZRANGE', T..':done', #ids, #ids + math.min(over, 1000) - 1)
  for _, id in ipairs(extra) do ids[#ids + 1] = id end
end
for _, id in ipairs(ids) do
  local rec = T..':t:'..id
  local st = redis.pcall('HGET', rec, 'state')
  if st == 'SUCCESS' or st == 'FAILED' or st == 'CANCELLED' then
    redis.call('DEL', rec)
    redis.call('HINCRBY', T..':counts', st, -1)
    redis.call('ZREM', T..':all', id)
  end
  redis.call('ZREM', T..':done', id)
end
return ids
"""
)

#: ARGV: dead_id, edit JSON or '', now, maxlen, the 11 fields of the new task, then the
#: replays the dead task must have had ('': any). Returns 1, or 0 when it had others.
REPLAY = (
    COMMON
    + r"""
local old = T..':t:'..ARGV[1]
if redis.pcall('HGET', old, 'state') ~= 'DEAD' then
  return redis.error_reply('NOTDEAD no dead task '..ARGV[1])
end
-- ARGV[16]: replay only if replayed exactly that many times so far ('' : always).
if ARGV[16] and ARGV[16] ~= '' then
  local seen = jsonf(redis.call('HGET', old, 'replayed_to'), {})
  if #seen ~= tonumber(ARGV[16]) then return 0 end
end
local a = {}
for j = 0, 10 do a[j + 1] = ARGV[5 + j] end
a[10] = ARGV[1]  -- replayed_from: the dead task
local edit = ARGV[2]
if edit ~= '' then a[12] = cjson.encode({cjson.decode(edit)}) end
if not create(a, ARGV[3], ARGV[4]) then return redis.error_reply('DUP task id exists') end
local f = redis.call('HMGET', old, 'replayed_to', 'edits')
local to = jsonf(f[1], {})
to[#to + 1] = a[1]
redis.call('HSET', old, 'replayed_to', cjson.encode(to))
if edit ~= '' then
  local e = jsonf(f[2], {})
  local entry = cjson.decode(edit)
  entry.new_task = a[1]
  e[#e + 1] = entry
  redis.call('HSET', old, 'edits', cjson.encode(e))
end
return 1
"""
)

#: ARGV: ids. Deletes dead records; returns the ids deleted.
PURGE = (
    COMMON
    + r"""
local out = {}
for _, id in ipairs(ARGV) do
  local rec = T..':t:'..id
  if redis.pcall('HGET', rec, 'state') == 'DEAD' then
    redis.call('DEL', rec)
    redis.call('ZREM', T..':dead', id)
    redis.call('ZREM', T..':all', id)
    redis.call('HINCRBY', T..':counts', 'DEAD', -1)
    out[#out + 1] = id
  end
end
return out
"""
)
