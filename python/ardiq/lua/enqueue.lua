-- enqueue: add tasks, each to its lane's stream or (when due later) to the delayed set.
-- KEYS[1]       delayed set
-- KEYS[2+3i..]  per task i (0-based): stream of its lane, job hash, result key
-- ARGV[1]       number of tasks n
-- ARGV[2+8i..]  per task: id, fn, payload, lane, due_ms (absolute; 0 = now),
--               delay_ms (relative, used when due_ms is 0), expire_ms (relative to now:
--               drop the task if it has not started that long after enqueue; 0 = never),
--               fresh (1: the producer just drew the id at random, 128 bits, so no task
--               and no result can hold it: the EXISTS and DEL of the id are skipped)
-- Returns       per task 1 when added, 0 when a live task already holds the id.
local delayed = KEYS[1]
local n = tonumber(ARGV[1])
local now = now_ms()
local out = {}
for i = 0, n - 1 do
  local stream, job, result = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 2 + 8 * i
  local id, fn, payload, lane = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local due, delay, expire = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  if due == 0 and delay > 0 then due = now + delay end
  if expire > 0 then expire = now + expire end
  local fresh = ARGV[a + 7] == '1'
  if not fresh and redis.call('EXISTS', job) == 1 then
    out[i + 1] = 0
  else
    -- A finished task's old result would answer for the new run: clear it.
    if not fresh then redis.call('DEL', result) end
    if due > now then
      redis.call('HSET', job, 'fn', fn, 'l', lane, 's', 'd', 't', 0, 'enq', now,
        'x', expire, 'at', due, 'p', payload)
      redis.call('ZADD', delayed, due, id)
    else
      local eid = add_entry(stream, id, fn, payload, 0, now, expire, 0)
      redis.call('HSET', job, 'fn', fn, 'l', lane, 's', 'q', 't', 0, 'enq', now,
        'x', expire, 'e', eid)
    end
    out[i + 1] = 1
  end
end
return out
