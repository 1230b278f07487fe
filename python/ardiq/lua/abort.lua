-- abort: stop a task wherever it is. A delayed or queued (not yet delivered) task is
-- finalized as aborted at once; a delivered one (prefetched or running) is flagged and
-- its worker told on the abort channel; the worker finalizes it.
-- KEYS[1..4]    delayed set, job hash, wait key, result key
-- KEYS[5..4+L]  the lanes' streams
-- KEYS[5+L]     parked set (optional; v2, flow control)
-- ARGV          key prefix, group, result ttl ms, task id, L, lane names
-- Returns       0 unknown or finished, 1 aborted now, 2 abort signalled to its worker
local delayed, job, wait, result = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, group, ttl, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local nl = tonumber(ARGV[5])
local lanes = {}
for i = 1, nl do lanes[ARGV[5 + i]] = KEYS[4 + i] end
local f = to_map(redis.call('HGETALL', job))
if not f['s'] then return 0 end
local blob = result_blob(false, 'aborted', f['t'], f['enq'], 0, now_ms(), true)
if f['s'] == 'd' or f['s'] == 'k' then
  if f['s'] == 'd' then
    redis.call('ZREM', delayed, id)
  elseif KEYS[5 + nl] then
    redis.call('ZREM', KEYS[5 + nl], id)
  end
  finalize(prefix, job, wait, result, id, blob, ttl)
  return 1
end
local stream = lanes[f['l']]
if stream and f['e'] and not is_pending(stream, group, f['e'], nil) then
  redis.call('XDEL', stream, f['e'])
  finalize(prefix, job, wait, result, id, blob, ttl)
  return 1
end
redis.call('HSET', job, 'a', '1')
notify(prefix .. 'abort', id)
return 2
