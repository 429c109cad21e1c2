"""Lua scripts of generic keys: values with an expiry on the injected clock, GCRA, CAS.

Each script gets ``KEYS[1]`` = the key itself, so it touches one cluster slot.
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

#: KEYS[1]: key. ARGV: value, now, ttl_s. Sets unless live; returns the existing value.
KV_SETNX = (
    KV
    + r"""
local cur = live(KEYS[1], ARGV[2])
if cur then return cur end
put(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return nil
"""
)

#: KEYS[1]: key. ARGV: value, now, ttl_s ('' = none).
KV_SET = (
    KV
    + r"""
put(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

#: KEYS[1]: key. ARGV: has_expected (0/1), expected, value, now, ttl_s ('' = none).
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
return 1
"""
)

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
