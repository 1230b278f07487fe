-- run_now: move one scheduled task (delay, schedule or retry backoff) to its lane's
-- stream now, as `promote` does at its due time (the dashboard's "run now").
-- KEYS[1]          delayed set
-- KEYS[2]          the task's job hash
-- KEYS[3..2+L]     the streams of the caller's L lanes
-- ARGV             task id, L, lane names
-- Returns          1 queued, 0 not scheduled (any more), -2 its lane is not one of the
--                  caller's lanes
local delayed, job = KEYS[1], KEYS[2]
local id, nl = ARGV[1], tonumber(ARGV[2])
local lanes = {}
for i = 1, nl do lanes[ARGV[2 + i]] = KEYS[2 + i] end
if not redis.call('ZSCORE', delayed, id) then return 0 end
local f = redis.call('HMGET', job, 'fn', 'p', 'l', 't', 'enq', 'x', 's', 'lk')
if not f[1] or f[7] ~= 'd' then
  if not f[1] then redis.call('ZREM', delayed, id) end -- its job hash is gone
  return 0
end
local stream = lanes[f[3]]
if not stream then return -2 end
local now = now_ms()
local eid = add_entry(stream, id, f[1], f[2] or '', f[4] or 0, f[5] or now, f[6] or 0, 0,
  f[8])
redis.call('HSET', job, 's', 'q', 'e', eid)
redis.call('HDEL', job, 'p', 'at')
redis.call('ZREM', delayed, id)
return 1
