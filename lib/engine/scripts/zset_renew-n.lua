--[[
zset_renew: push the expiry scores of many sorted sets forward in one call (the
holding node's renewals of connection slots and of users' live connections).

KEYS[i]      a sorted set of connection ids scored by expiry (ms)
ARGV[1]      key TTL, ms (PEXPIRE of every key; a missing key stays missing)
ARGV[2]      'XX' to renew only members still there (a released slot stays released),
             '' to add them as well
ARGV[3]      the new expiry score
ARGV[3 + i]  KEYS[i]'s members, separated by NUL bytes

Returns the number of keys renewed. One call instead of two commands per key: with
thousands of users per node, the renewals were most of an idle node's garbage.
The keys span hash slots (one per user), so this does not run on Redis Cluster,
which Streamgate does not support yet (README).
]]

local ttl, xx, score = ARGV[1], ARGV[2] == 'XX', ARGV[3]
local CHUNK = 200
local renewed = 0
for i, key in ipairs(KEYS) do
  local args = {}
  for m in string.gmatch(ARGV[3 + i], '[^%z]+') do
    args[#args + 1] = score
    args[#args + 1] = m
    if #args >= 2 * CHUNK then
      if xx then redis.call('ZADD', key, 'XX', unpack(args)) else redis.call('ZADD', key, unpack(args)) end
      args = {}
    end
  end
  if #args > 0 then
    if xx then redis.call('ZADD', key, 'XX', unpack(args)) else redis.call('ZADD', key, unpack(args)) end
  end
  redis.call('PEXPIRE', key, ttl)
  renewed = renewed + 1
end
return renewed
