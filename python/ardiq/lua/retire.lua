-- retire: a worker leaving for good removes its consumer from each lane's group, but
-- only where it owns no pending entry (those stay for reclaim), and its heartbeat.
-- KEYS          workers set, then the lanes' streams
-- ARGV          group, consumer
-- Returns       the number of groups it left
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZREM', KEYS[1], consumer)
local left = 0
for i = 2, #KEYS do
  local p = redis.pcall('XPENDING', KEYS[i], group, '-', '+', 1, consumer)
  if type(p) == 'table' and p.err == nil and #p == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[i], group, consumer)
    left = left + 1
  end
end
return left
