--[[
publish: append one event to its shard log and to its channel stream with the same
id, trim both, and remember the idempotency key. Atomic, one hash slot.

KEYS[1]  shard log        P:{s<n>}:log
KEYS[2]  channel stream   P:{s<n>}:ch:<tenant>:<channel>
KEYS[3]  channel meta     P:{s<n>}:meta:<tenant>:<channel>  (hash: last, trimmed)
KEYS[4]  idempotency key  P:{s<n>}:idem:<tenant>:<channel>#<key>  (unused when ARGV[7] is "")

ARGV[1]  tenant
ARGV[2]  channel
ARGV[3]  event name
ARGV[4]  data, JSON
ARGV[5]  priority
ARGV[6]  publisher, JSON, or "" for none
ARGV[7]  idempotency key, or "" for none
ARGV[8]  shard log max length (trimmed approximately, MAXLEN ~)
ARGV[9]  retention count (>= 1)
ARGV[10] retention seconds (>= 0)
ARGV[11] idempotency key TTL, seconds

Returns {id, duplicate}: duplicate = 1 when the idempotency key had already answered
(id is that first answer and nothing was appended), else 0.

meta.trimmed is kept here because Redis 7.0 does not move XINFO's
max-deleted-entry-id on MAXLEN/MINID trims; history() compares `since` with it.
]]

local log, ch, meta, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local hasIdem = ARGV[7] ~= ''

if hasIdem then
  local first = redis.call('GET', idem)
  if first then
    return {first, 1}
  end
end

local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

local maxlen = ARGV[8]
local count = tonumber(ARGV[9])
local seconds = tonumber(ARGV[10])
local fields = {'event', ARGV[3], 'data', ARGV[4], 'priority', ARGV[5], 'publisher', ARGV[6]}

local trimmed = false
local function trimmedUpTo(id)
  if not trimmed or before(trimmed, id) then
    trimmed = id
  end
end

-- An expired channel stream lost every event up to `last`.
local last = redis.call('HGET', meta, 'last')
if last and redis.call('EXISTS', ch) == 0 then
  trimmedUpTo(last)
end

local id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*',
  'tenant', ARGV[1], 'channel', ARGV[2], unpack(fields))

local added = redis.pcall('XADD', ch, id, unpack(fields))
if type(added) == 'table' and added.err then
  -- The channel already holds an id >= the new one: the shard log was deleted or
  -- reset under it. Append again after the channel's latest id so ids still
  -- strictly increase in both streams.
  redis.call('XDEL', log, id)
  -- The stream's last generated id, even when its entries were all trimmed.
  local info = redis.call('XINFO', 'STREAM', ch)
  local top = '0-0'
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then top = info[i + 1] end
  end
  local ms, seq = parse(top)
  id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, string.format('%d-%d', ms, seq + 1),
    'tenant', ARGV[1], 'channel', ARGV[2], unpack(fields))
  redis.call('XADD', ch, id, unpack(fields))
end

redis.call('HSET', meta, 'last', id)

-- Count: let the stream grow by a slack, then cut back to exactly `count`, so the
-- XRANGE that finds the last trimmed id is paid once every `slack` publishes.
local len = redis.call('XLEN', ch)
local slack = math.min(1000, math.max(1, math.floor(count / 10)))
if len > count + slack then
  local old = redis.call('XRANGE', ch, '-', '+', 'COUNT', len - count)
  trimmedUpTo(old[#old][1])
  redis.call('XTRIM', ch, 'MAXLEN', count)
end

-- Age: drop what is older than `seconds` before the new event (its id is "now").
local cutoff = parse(id) - seconds * 1000
local boundary = string.format('%d-0', cutoff)
local oldest = cutoff > 0 and redis.call('XRANGE', ch, '-', '+', 'COUNT', 1)[1]
if oldest and before(oldest[1], boundary) then
  local below = redis.call('XREVRANGE', ch, '(' .. boundary, '-', 'COUNT', 1)[1]
  if below then
    trimmedUpTo(below[1])
  end
  redis.call('XTRIM', ch, 'MINID', boundary)
end

if trimmed then
  local known = redis.call('HGET', meta, 'trimmed')
  if not known or before(known, trimmed) then
    redis.call('HSET', meta, 'trimmed', trimmed)
  end
end

-- Idle channels must not leak: the stream outlives its retention a little, the meta
-- hash (recovery answers) longer.
redis.call('PEXPIRE', ch, string.format('%d', seconds * 1000 + 60000))
redis.call('PEXPIRE', meta, string.format('%d', 2 * seconds * 1000 + 86400000))

if hasIdem then
  redis.call('SET', idem, id, 'EX', ARGV[11])
end

return {id, 0}
