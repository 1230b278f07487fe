-- wait: fetch a result, or register interest so that finishing the task publishes its
-- id on the done channel. The caller subscribes before calling, so no wake-up is lost.
-- KEYS          job hash, wait key, result key
-- ARGV          how long the registration lives, ms
-- Returns       {1, result} when finished, {0} when registered, {-1} when unknown
local job, wait, result = KEYS[1], KEYS[2], KEYS[3]
local r = redis.call('GET', result)
if r then return {1, r} end
if redis.call('EXISTS', job) == 0 then return {-1} end
redis.call('SET', wait, '1', 'PX', tonumber(ARGV[1]))
return {0}
