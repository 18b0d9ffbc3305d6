--[[
presence_sweep: remove a channel's expired presence entries. Atomic, so when several
nodes sweep the same channel exactly one of them gets each removed entry.

KEYS[1]  entries    P:{s<n>}:pres:<tenant>:<channel>   (hash: connection id -> entry JSON)
KEYS[2]  expiries   P:{s<n>}:presx:<tenant>:<channel>  (zset: connection id -> expiry ms)

ARGV[1]  now, ms

Returns {count, changed, left entry JSON...}: count = distinct users still present,
changed = 1 when anything was removed, then one entry JSON per user who has no live
entry any more (a leave to announce).
]]

local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local removed = {}
for _, conn in ipairs(expired) do
  local json = redis.call('HGET', KEYS[1], conn)
  if json then removed[#removed + 1] = json end
  redis.call('HDEL', KEYS[1], conn)
  redis.call('ZREM', KEYS[2], conn)
end
-- Entries whose expiry record is gone (never happens unless keys were edited by hand).
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
local users = {}
local count = 0
for _, conn in ipairs(live) do
  local json = redis.call('HGET', KEYS[1], conn)
  if json then
    local u = cjson.decode(json)['u']
    if not users[u] then
      users[u] = true
      count = count + 1
    end
  end
end
local out = {count, #expired > 0 and 1 or 0}
local announced = {}
for _, json in ipairs(removed) do
  local u = cjson.decode(json)['u']
  if not users[u] and not announced[u] then
    announced[u] = true
    out[#out + 1] = json
  end
end
return out
