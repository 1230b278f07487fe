-- promote: move due tasks from the delayed set to their lanes' streams.
-- Called in two steps because a script must name every key it touches: first with no
-- ids (it reports which ids are due), then with the due ids and their job hashes.
-- KEYS[1]          delayed set
-- KEYS[2..1+L]     the streams of the L lanes this worker knows
-- KEYS[2+L..]      job hash of each id in ARGV (same order)
-- ARGV[1]          L; ARGV[2..1+L] lane names; ARGV[2+L] batch size; ARGV[3+L..] ids
-- Returns          {promoted, server_now_ms, next_due_ms or -1, {due ids not yet moved}}
local delayed = KEYS[1]
local nl = tonumber(ARGV[1])
local lanes = {}
for i = 1, nl do lanes[ARGV[1 + i]] = KEYS[1 + i] end
local batch = tonumber(ARGV[2 + nl])
local now = now_ms()
local moved = 0
for i = 3 + nl, #ARGV do
  local id, job = ARGV[i], KEYS[i - 1]
  local score = redis.call('ZSCORE', delayed, id)
  if score and tonumber(score) <= now then
    local f = redis.call('HMGET', job, 'fn', 'p', 'l', 't', 'enq', 'x', 'lk')
    if not f[1] then
      redis.call('ZREM', delayed, id) -- its job hash is gone: nothing to run
    elseif lanes[f[3]] then
      local eid = add_entry(lanes[f[3]], id, f[1], f[2] or '', f[4] or 0, f[5] or now,
        f[6] or 0, 0, f[7])
      redis.call('HSET', job, 's', 'q', 'e', eid)
      redis.call('HDEL', job, 'p', 'at')
      redis.call('ZREM', delayed, id)
      moved = moved + 1
    end
  end
end
local due = redis.call('ZRANGE', delayed, '-inf', now, 'BYSCORE', 'LIMIT', 0, batch)
local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local next_due = -1
if #head > 0 then next_due = tonumber(head[2]) end
return {moved, now, next_due, due}
