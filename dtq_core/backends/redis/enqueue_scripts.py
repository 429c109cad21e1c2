"""Lua scripts that store new tasks: one per queue, and the one-trip form of one Redis.

Both create records with ``create`` (see :mod:`.lua_common`; they carry its ``CORE``
only). ``ENQUEUE`` touches one queue's slot only, so it runs on a Redis Cluster after
the client claimed the ids' owner keys (other slots); ``ENQUEUE_OWNED`` also claims them
itself, which only one Redis allows (a cluster refuses a script whose keys span slots).
"""

from __future__ import annotations

from dtq_core.backends.redis.lua_common import CORE

__all__ = ["ENQUEUE", "ENQUEUE_OWNED", "HELD"]

#: ARGV[1]: ``now|maxlen``; then two per task: its fields in msgpack
#: (``create``'s order, ``false`` in the payload's place: Redis's cmsgpack has no bytes
#: type) and its payload. Returns the created count; an existing id is an error.
ENQUEUE = (
    CORE
    + r"""
local now, maxlen = string.match(ARGV[1], '^([^|]*)|(.*)$')
local n = 0
for i = 2, #ARGV, 2 do
  local a = cmsgpack.unpack(ARGV[i])
  a[5] = ARGV[i + 1]
  if not create(a, now, maxlen) then
    return redis.error_reply('DUP task id '..a[1]..' exists')
  end
  n = n + 1
end
return n
"""
)

#: First element of ``ENQUEUE_OWNED``'s reply when an id is held by another queue.
HELD = "held"

#: One Redis only. KEYS: the queue's two script keys, then the owner key of each task in
#: order. ARGV[1]: ``now|maxlen|grace|key prefix``; then each task's fields
#: and payload as with ``ENQUEUE``, every task of the queue of KEYS[1]. Claims every
#: owner key and creates the records in one step. An id whose owner key names another
#: queue is refused before anything is written (reply ``{HELD, id, queue}``) unless
#: that claim is stale: older than ``grace`` seconds and that queue holds no record of
#: it (then it is taken over). Returns the created count; an id this queue already holds
#: is a ``DUP`` error, as with ``ENQUEUE``.
ENQUEUE_OWNED = (
    CORE
    + r"""
-- One string, not msgpack: a match is cheaper than building a table (the prefix is
-- last: it may hold a '|').
local now, maxlen, grace, prefix = string.match(ARGV[1], '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
local t, grace = tonumber(now), tonumber(grace)
local tasks, claimed, stale = {}, {}, {}
for i = 2, #ARGV, 2 do
  local k = i / 2 + 2
  local a = cmsgpack.unpack(ARGV[i])
  a[5] = ARGV[i + 1]
  tasks[#tasks + 1] = a
  local old = redis.call('SET', KEYS[k], now..'|'..a[3], 'NX', 'GET')
  if not old then
    claimed[#claimed + 1] = KEYS[k]
  else
    local bar = string.find(old, '|', 1, true) or (#old + 1)
    local other = string.sub(old, bar + 1)
    if other ~= a[3] then
      local at = tonumber(string.sub(old, 1, bar - 1)) or 0
      if t - at < grace or redis.call('EXISTS', '{'..prefix..':'..other..'}:t:'..a[1]) == 1 then
        -- Refused whole: the claims made above are undone, nothing else was written.
        for _, key in ipairs(claimed) do redis.call('DEL', key) end
        return {'held', a[1], other}
      end
      stale[k] = true
    end
  end
end
local n = 0
for j, a in ipairs(tasks) do
  if stale[j + 2] then redis.call('SET', KEYS[j + 2], now..'|'..a[3]) end
  if not create(a, now, maxlen) then
    return redis.error_reply('DUP task id '..a[1]..' exists')
  end
  n = n + 1
end
return n
"""
)
