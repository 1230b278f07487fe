-- delete_dead: forget one dead letter.
-- KEYS          dead-letter index, dead-letter hash
-- ARGV          task id
-- Returns       1 deleted, 0 no such dead letter
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
return math.max(removed, redis.call('DEL', KEYS[2]))
