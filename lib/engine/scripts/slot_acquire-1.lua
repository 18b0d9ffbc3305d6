--[[
slot_acquire: take a connection slot under one name, if fewer than `limit` live
connections hold one. Expired holders (a dead node stopped refreshing) are dropped
first.

KEYS[1]  sorted set of holders   P:slots:<name>  (member: connection id, score: expiry ms)

ARGV[1]  now, ms
ARGV[2]  expiry of the new slot, ms
ARGV[3]  limit
ARGV[4]  connection id
ARGV[5]  key TTL, ms

Returns 1 when the slot is held (also when this connection already held it), 0 when
the name is at its limit.
]]

local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
if not redis.call('ZSCORE', key, ARGV[4]) and redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', key, ARGV[2], ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return 1
