"""Lua scripts of generic keys: values with an expiry on the injected clock, GCRA, CAS.

Each script gets ``KEYS[1]`` = the key itself and, for the writes, ``KEYS[2]`` = the
index of its namespace's bucket, which shares its hash tag: a key and its index entry
are written by one script, on one cluster slot.
"""

from __future__ import annotations

#: Generic keys hold ``<expires_at>|<value>`` (``|<value>`` without expiry): expiry
#: follows the injected clock (``now`` passed in), like every backend; a Redis TTL with
#: a margin collects the garbage. A key holding anything else reads as absent.
KV = r"""
-- The live value of `key`, or nil. A value that is not ours to read (another type of
-- key, no '|', a non-numeric expiry: written by hand or by something else) counts as
-- absent and is deleted, so that it cannot wedge dedup, rate limits or breakers.
local function live(key, now)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw.err then
    redis.call('DEL', key)
    return nil
  end
  if not raw then return nil end
  local bar = string.find(raw, '|', 1, true)
  local exp = bar and string.sub(raw, 1, bar - 1)
  if not bar or (exp ~= '' and not tonumber(exp)) then
    redis.call('DEL', key)
    return nil
  end
  if exp ~= '' and tonumber(exp) <= tonumber(now) then
    redis.call('DEL', key)
    return nil
  end
  return string.sub(raw, bar + 1)
end
-- Index `name` (the key's name without its tag) in KEYS[2] by its expiry; `gt` only
-- raises an entry (a refused write must not lower the live key's expiry). Expired
-- entries go with every write: the index stays the size of the live keys.
local function index(name, now, ttl, gt)
  if not KEYS[2] then return end
  local score = '+inf'
  if ttl ~= '' then score = string.format('%.17g', tonumber(now) + tonumber(ttl)) end
  if gt then
    redis.call('ZADD', KEYS[2], 'GT', score, name)  -- GT still adds a new member
  else
    redis.call('ZADD', KEYS[2], score, name)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '('..now)
end
local function put(key, value, now, ttl)
  if ttl == '' then
    redis.call('SET', key, '|'..value)
  else
    local exp = tonumber(now) + tonumber(ttl)
    redis.call('SET', key, string.format('%.17g', exp)..'|'..value, 'PX',
               math.ceil(tonumber(ttl) * 1000) + 60000)
  end
end
"""

#: KEYS[1]: bucket key. ARGV: rate, burst, now. GCRA; returns the wait (string).
RESERVE = (
    KV
    + r"""
local interval = 1.0 / tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local tat = tonumber(live(KEYS[1], ARGV[3]) or '') or now  -- (garbage: a full bucket)
if tat < now then tat = now end
local wait = tat - now - (tonumber(ARGV[2]) - 1) * interval
if wait < 0 then wait = 0 end
local new = tat + interval
put(KEYS[1], string.format('%.17g', new), ARGV[3], tostring(new - now + 1))
return string.format('%.17g', wait)
"""
)

#: KEYS[1]: key. ARGV: now. Returns the live value or nil.
KV_GET = (
    KV
    + r"""
return live(KEYS[1], ARGV[1])
"""
)

#: KEYS[1]: key, KEYS[2]: its index. ARGV: value, now, ttl_s, name. Sets unless live;
#: returns the existing value.
KV_SETNX = (
    KV
    + r"""
local cur = live(KEYS[1], ARGV[2])
if cur then
  return cur
end
put(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
index(ARGV[4], ARGV[2], ARGV[3], true)
return nil
"""
)

#: KEYS[1]: key, KEYS[2]: its index. ARGV: value, now, ttl_s ('' = none), name.
KV_SET = (
    KV
    + r"""
put(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
index(ARGV[4], ARGV[2], ARGV[3], false)
return 1
"""
)

#: KEYS[1]: key, KEYS[2]: its index. ARGV: name. Deletes the key and its index entry.
KV_DEL = r"""
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

#: KEYS[1]: key, KEYS[2]: its index. ARGV: has_expected (0/1), expected, value, now,
#: ttl_s ('' = none), name.
CAS = (
    KV
    + r"""
local cur = live(KEYS[1], ARGV[4])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
put(KEYS[1], ARGV[3], ARGV[4], ARGV[5])
index(ARGV[6], ARGV[4], ARGV[5], true)
return 1
"""
)

#: KEYS[1]: a task id's owner key (``<claimed at>|<queue>``). ARGV: the value expected,
#: the new one. A stale claim taken over by another queue: 1, or 0 if it changed.
OWNER_TAKE = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

#: KEYS[1]: a task id's owner key. ARGV: queue. Deleted if that queue still owns it.
OWNER_RELEASE = r"""
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local bar = string.find(v, '|', 1, true)
if bar and string.sub(v, bar + 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

#: KEYS[1]: a hash of counts. ARGV: ttl_s ('' = none), n, then n (field, increment)
#: pairs, then (field, value) pairs each raised to at least that value. One key: any
#: number of processes add their share at once, on one Redis or a Cluster.
ADD_COUNTS = r"""
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if (not cur) or tonumber(ARGV[i + 1]) > cur then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
if ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
end
return 1
"""
