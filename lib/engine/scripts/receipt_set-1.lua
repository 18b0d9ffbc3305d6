--[[
receipt_set: move a user's delivered or read cursor on a channel forward, never back.
Reading implies delivery.

KEYS[1]  P:rc:<tenant>:<user>   (hash: channel -> "<delivered id>|<read id>", either may be empty)

ARGV[1]  channel
ARGV[2]  kind: "delivered" or "read"
ARGV[3]  event id

Returns 1 when the cursor moved, else 0.
]]

local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local function after(a, b)
  if b == '' then return true end
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end

local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '|'
local bar = string.find(cur, '|', 1, true)
local delivered = string.sub(cur, 1, bar - 1)
local read = string.sub(cur, bar + 1)
local until_ = ARGV[3]
if ARGV[2] == 'read' then
  if not after(until_, read) then return 0 end
  read = until_
  if after(until_, delivered) then delivered = until_ end
else
  if not after(until_, delivered) then return 0 end
  delivered = until_
end
redis.call('HSET', KEYS[1], ARGV[1], delivered .. '|' .. read)
return 1
