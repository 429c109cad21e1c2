"""The Lua script that stores new tasks of one queue (and claims their ids on one Redis).

``ENQUEUE`` touches the queue's slot, plus the ids' owner keys when it is given them
(one Redis: one round trip); on a Redis Cluster an owner key is in a slot of its own, so
the client claims them first and the script is given none (a cluster refuses a script
whose keys span slots).

It is the most frequent script, so it is written for its cost, measured by
``bench/redis_script_cost.py --callgrind`` (instructions per call; each Redis call from
Lua costs 3 to 9 k, the call itself 23 k):

- no helper closures on the usual path: every ``local function`` of a prelude is made
  anew on each call (Lua keeps nothing between calls), and :data:`.lua_common.CORE`'s
  dozen cost 12 k. Its helpers are made only when a worker waits idle on the queue
  (a hand-over, see ``handoff`` there);
- the task fields come as plain arguments: a ``cmsgpack.unpack`` of them cost more in
  Redis than the arguments do, and the client packs them in C;
- a batch bumps the counters once.

The record it writes is the one ``create`` in :mod:`.lua_common` writes (replays use
that one): the same fields, so workers of every release read either.
"""

from __future__ import annotations

from dtq_core.backends.redis.lua_common import CORE, RECORD

__all__ = [
    "ENQUEUE",
    "ENQUEUE_ONE",
    "FIELDS_PER_TASK",
    "HEAD_ARGS",
    "HELD",
    "ONE_FIELDS",
    "OWNER_GRACE_S",
]

#: Seconds an id's claim by a queue is honoured even though that queue holds no record
#: of it yet (its script is on its way); after that, a claim without a record is stale.
OWNER_GRACE_S = 60.0

#: First element of ``ENQUEUE``'s reply when an id is held by another queue.
HELD = "held"

#: ``ENQUEUE``'s leading arguments: now, maxlen, owner grace (seconds), key prefix.
HEAD_ARGS = 4

#: ``ENQUEUE``'s arguments per task: id, name, queue, priority, payload, eta,
#: max_retries, time_limit, dedup_key, replayed_from, workflow (strings; '' for none).
FIELDS_PER_TASK = 11

#: Lua: store new task ``id`` of this queue in record ``rec`` and make it ready (or
#: delayed, or hand it to a worker waiting ``idle``), with its enqueue event. The
#: locals it reads are set by each script: ``T now maxlen idle rec id name q prio
#: payload eta maxr tl dedup rf wf`` (strings; '' for none).
_STORE = (
    r"""
  -- The record, laid out as every creating script does (RECORD in lua_common).
  local later = eta ~= '' and tonumber(eta) > tonumber(now)
  local edits = ''
"""
    + RECORD
    + r"""
  redis.call('ZADD', T..':all', now, id)  -- the listing index: by (enqueued_at, id)
  -- The event's empty fields are left out too (readers take a missing one as empty).
  redis.call('XADD', T..':events', 'MAXLEN', '~', maxlen, '*', 'ts', now, 'id', id,
             'name', name, 'new', 'PENDING')
  if later then
    redis.call('ZADD', T..':delayed', eta, id)
  else
    local handed = nil
    if idle then
      -- A worker waits idle: CORE's helpers, made only now, hand the task over (or
      -- return nil when no worker is left idle: an earlier task of the batch took it).
      local function hand_over()
"""
    + CORE
    + r"""
        return handoff(id, name, now, maxlen)
      end
      handed = hand_over()
    end
    if not handed then
      -- ready (lua_common): FIFO within the priority; the notify list wakes blocked
      -- claimers, who registered idle first (none registered: nobody to wake).
      local score = redis.call('INCR', T..':seq')
      if prio ~= '0' then score = tonumber(prio) * 17179869184 + score end
      redis.call('ZADD', T..':ready', score, id)
      if handed == false and redis.call('LLEN', T..':notify') < 64 then
        redis.call('RPUSH', T..':notify', '1')
      end
    end
  end
"""
)

#: Lua: count the ``nt`` tasks stored as PENDING.
_PENDING = r"""
local n = tostring(nt)
redis.call('HINCRBY', T..':counts', 'PENDING', n)
"""

#: Lua: ``_PENDING``, and ``enqueued`` in this second's counters and the totals (tick in
#: lua_common).
_COUNT = (
    _PENDING
    + r"""local sec = T..':sec:'..(string.match(now, '^(%d+)%.?%d*$') or math.floor(tonumber(now)))
if redis.call('HINCRBY', sec, 'enqueued', n) == nt then redis.call('EXPIRE', sec, 120) end
redis.call('HINCRBY', T..':totals', 'enqueued', n)
"""
)

#: KEYS: the queue's two script keys, then either the owner key of each task in order
#: (one Redis) or none (the client claimed them: a cluster). ARGV: ``now``, ``maxlen``,
#: ``grace``, the key prefix, then :data:`FIELDS_PER_TASK` per task, every task of the
#: queue of ``KEYS[1]``.
#:
#: With owner keys, it claims each (``<now>|<queue>``); an id whose owner key names
#: another queue is refused before anything is written (reply ``{HELD, id, queue}``)
#: unless that claim is stale: older than ``grace`` seconds and that queue holds no
#: record of it (then it is taken over). An id this queue already holds is a ``DUP``
#: error, also before anything is written (a batch's new claims undone). Returns the
#: created count.
ENQUEUE = (
    r"""
local T = KEYS[1]
local now, maxlen, grace, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local nt = (#ARGV - 4) / 11
local owned = #KEYS > 2
local claimed, stale
if owned then
  for j = 1, nt do
    local b = 4 + (j - 1) * 11
    local q = ARGV[b + 3]
    local old = redis.call('SET', KEYS[j + 2], now..'|'..q, 'NX', 'GET')
    if not old then
      if nt > 1 then
        claimed = claimed or {}
        claimed[#claimed + 1] = KEYS[j + 2]
      end
    else
      local bar = string.find(old, '|', 1, true) or (#old + 1)
      local other = string.sub(old, bar + 1)
      if other ~= q then
        local at = tonumber(string.sub(old, 1, bar - 1)) or 0
        if tonumber(now) - at < tonumber(grace)
            or redis.call('EXISTS', '{'..prefix..':'..other..'}:t:'..ARGV[b + 1]) == 1 then
          -- Refused whole: the claims made above are undone, nothing else was written.
          if claimed then
            for _, key in ipairs(claimed) do redis.call('DEL', key) end
          end
          return {'held', ARGV[b + 1], other}
        end
        stale = stale or {}
        stale[j] = true
      end
    end
  end
end
-- One EXISTS over the records and the idle set (per 200 tasks): 0, the usual answer,
-- says that no id is held here and that no worker waits idle (a sorted set exists
-- only while it has members), for the cost of one command instead of one per task and
-- one more. Otherwise each record is looked at.
local recs, found = {}, 0
for j = 1, nt do recs[j] = T..':t:'..ARGV[4 + (j - 1) * 11 + 1] end
if nt == 1 then
  found = redis.call('EXISTS', recs[1], T..':idle')
else
  for c = 1, nt, 200 do
    local last = math.min(c + 199, nt)
    if last == nt then
      found = found + redis.call('EXISTS', T..':idle', unpack(recs, c, last))
    else
      found = found + redis.call('EXISTS', unpack(recs, c, last))
    end
  end
end
if found > 0 then
  for j = 1, nt do
    if redis.call('EXISTS', recs[j]) == 1 then
      -- Refused whole too: the batch's new claims are undone.
      if claimed then
        for _, key in ipairs(claimed) do redis.call('DEL', key) end
      end
      return redis.error_reply('DUP task id '..ARGV[4 + (j - 1) * 11 + 1]..' exists')
    end
  end
end
-- No record held here: what EXISTS found is the idle set.
local idle = found > 0
for j = 1, nt do
  local b = 4 + (j - 1) * 11
  local id, name, q, prio, payload = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local eta, maxr, tl = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local dedup, rf, wf = ARGV[b + 9], ARGV[b + 10], ARGV[b + 11]
  if stale and stale[j] then redis.call('SET', KEYS[j + 2], now..'|'..q) end
  local rec = recs[j]
"""
    + _STORE
    + r"""end
"""
    + _COUNT
    + r"""return nt
"""
)

#: ``ENQUEUE_ONE``'s ARGV after ``now`` and ``maxlen``: id, name, queue, priority,
#: payload, max_retries, time_limit, then only when one is set, eta, dedup_key,
#: replayed_from and workflow.
ONE_FIELDS = 7

#: One task on one Redis: a single ``apply_async``, the most frequent call. ``ENQUEUE``
#: given one owner key does the same; this one is written for its cost, which is paid
#: in Redis per argument (about 1.1 k instructions each, `bench/redis_script_cost.py
#: --callgrind`) and per loop: KEYS are the queue's tag and the owner key alone (one
#: Redis has no slot to reshard), the grace is part of the text, the prefix is read from
#: the tag when a stale claim needs it, and the optional fields come only when set.
#: Replies as ``ENQUEUE`` does: 1, ``{HELD, id, queue}`` or a ``DUP`` error, with nothing
#: written on either refusal. It counts the task as PENDING but not as ``enqueued``:
#: its producer adds those counts in batches (see :mod:`.tally`).
ENQUEUE_ONE = (
    r"""
local T, owner = KEYS[1], KEYS[2]
local now, maxlen, id, name, q = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local prio, payload, maxr, tl = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local eta, dedup, rf, wf = ARGV[10] or '', ARGV[11] or '', ARGV[12] or '', ARGV[13] or ''
local nt = 1
local old = redis.call('SET', owner, now..'|'..q, 'NX', 'GET')
local stale = false
if old then
  local bar = string.find(old, '|', 1, true) or (#old + 1)
  local other = string.sub(old, bar + 1)
  if other ~= q then
    local at = tonumber(string.sub(old, 1, bar - 1)) or 0
    -- The other queue's tag: this one's ('{prefix:queue}') with its queue replaced.
    local there = string.sub(T, 1, #T - #q - 1)..other..'}'
    if tonumber(now) - at < """
    + repr(OWNER_GRACE_S)
    + r""" or redis.call('EXISTS', there..':t:'..id) == 1 then
      return {'held', id, other}
    end
    stale = true
  end
end
local rec = T..':t:'..id
-- As in ENQUEUE: one EXISTS says that the id is new here and that no worker waits idle.
local found = redis.call('EXISTS', rec, T..':idle')
if found > 0 and redis.call('EXISTS', rec) == 1 then
  return redis.error_reply('DUP task id '..id..' exists')
end
local idle = found > 0
if stale then redis.call('SET', owner, now..'|'..q) end
"""
    + _STORE
    + _PENDING
    + r"""return 1
"""
)
