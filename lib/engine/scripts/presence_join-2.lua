--[[
presence_join: add or renew one connection's presence entry in a channel.

KEYS[1]  entries    P:{s<n>}:pres:<tenant>:<channel>   (hash: connection id -> entry JSON {"u","n","d"})
KEYS[2]  expiries   P:{s<n>}:presx:<tenant>:<channel>  (zset: connection id -> expiry ms)

ARGV[1]  now, ms
ARGV[2]  expiry of this entry, ms
ARGV[3]  connection id
ARGV[4]  user id
ARGV[5]  entry JSON
ARGV[6]  key TTL, ms

Returns {first, count}: first = 1 when the user had no live entry here (a join to
announce; renewing this connection's own live entry, as every long-poll does, is
none), count = distinct users with a live entry after this one.
]]

local now = tonumber(ARGV[1])
local first = 1
local users = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
for _, conn in ipairs(live) do
  if conn == ARGV[3] then
    first = 0
  else
    local json = redis.call('HGET', KEYS[1], conn)
    if json then
      local u = cjson.decode(json)['u']
      users[u] = true
      if u == ARGV[4] then first = 0 end
    end
  end
end
users[ARGV[4]] = true
redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local count = 0
for _ in pairs(users) do count = count + 1 end
return {first, count}
