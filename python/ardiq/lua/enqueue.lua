-- enqueue: add tasks, each to its lane's stream or (when due later) to the delayed set.
-- KEYS[1]   delayed set
-- ARGV[1]   key prefix of the queue (`ardiq:{<queue>}:`): the stream, job hash and
--           result key of each task are named from it (all in the queue's hash slot)
-- ARGV[2]   the tasks, one msgpack array of arrays, each
--           [id, fn, payload, lane, due_ms (absolute; 0 = now), delay_ms (relative,
--           used when due_ms is 0), expire_ms (relative to now: drop the task if it has
--           not started that long after enqueue; 0 = never), fresh (0: check the id;
--           1: the producer just drew the id at random, 128 bits, so no task and no
--           result can hold it: the EXISTS and DEL of the id are skipped; 2: a resend
--           after a lost reply, the first call may have landed: skip the task when its
--           job *or its result* exists), nonce (optional: stored as job `n`; signing
--           apps), limit key (optional, v2 flow control: entry and job `lk`)]
--           One blob instead of eleven arguments per task: encoding arguments one by one
--           was most of a producer's cost per task (PROTOCOL.md, "enqueue").
-- Returns   a string with one character per task: '1' added, '0' a live task already
--           holds the id.
local delayed, prefix = KEYS[1], ARGV[1]
local tasks = cmsgpack.unpack(ARGV[2])
local now = now_ms()
-- Numbers go to Redis as strings made once here: Redis formats each Lua number argument
-- itself, and that was a third of this script's time per task.
local now_s = string.format('%d', now)
local out = {}
for i = 1, #tasks do
  local t = tasks[i]
  local id, fn, payload, lane = t[1], t[2], t[3], t[4]
  local due, delay, expire, mode, nonce, lk = t[5], t[6], t[7], t[8], t[9], t[10]
  local fresh = mode == 1
  local job = prefix .. 'job:' .. id
  if due == 0 and delay > 0 then due = now + delay end
  local expire_s = '0'
  if expire > 0 then expire_s = string.format('%d', now + expire) end
  if not fresh and redis.call('EXISTS', job) == 1 then
    out[i] = '0'
  elseif mode == 2 and redis.call('EXISTS', prefix .. 'result:' .. id) == 1 then
    out[i] = '0' -- the first call landed and the task already finished: not again
  else
    -- A finished task's old result (and progress) would answer for the new run: clear it.
    if not fresh then
      redis.call('DEL', prefix .. 'result:' .. id, prefix .. 'progress:' .. id)
    end
    if due > now then
      local due_s = string.format('%d', due)
      redis.call('HSET', job, 'fn', fn, 'l', lane, 's', 'd', 't', '0', 'enq', now_s,
        'x', expire_s, 'at', due_s, 'p', payload)
      redis.call('ZADD', delayed, due_s, id)
    else
      local eid = add_entry(prefix .. 'stream:' .. lane, id, fn, payload, '0', now_s, expire_s, '0',
        lk)
      redis.call('HSET', job, 'fn', fn, 'l', lane, 's', 'q', 't', '0', 'enq', now_s,
        'x', expire_s, 'e', eid)
    end
    if nonce and nonce ~= '' then redis.call('HSET', job, 'n', nonce) end
    if lk and lk ~= '' then redis.call('HSET', job, 'lk', lk) end
    out[i] = '1'
  end
end
return table.concat(out)
