-- replay: queue a dead letter again under the same id with a fresh retry budget. It is a
-- new enqueue: a signed dead letter comes with a payload the caller sealed again, with a
-- new nonce (PROTOCOL.md, Signed payloads); keyless callers replay unsigned ones as they
-- are.
-- KEYS[1..4]    dead-letter index, dead-letter hash, job hash, result key
-- KEYS[5..4+L]  the lanes' streams
-- ARGV          task id, payload ('' = the dead letter's own), nonce ('' = none), L,
--               lane names
-- Returns       1 re-queued, 0 no such dead letter, -1 a live task holds the id,
--               -2 its lane is not one of the caller's lanes
local dead_index, dead_key, job, result = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, payload, nonce, nl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local lanes = {}
for i = 1, nl do lanes[ARGV[4 + i]] = KEYS[4 + i] end
local f = to_map(redis.call('HGETALL', dead_key))
if not f['fn'] then return 0 end
if redis.call('EXISTS', job) == 1 then return -1 end
local stream = lanes[f['l']]
if not stream then return -2 end
if payload == '' then payload = f['p'] or '' end
local now = now_ms()
local eid = add_entry(stream, id, f['fn'], payload, 0, now, 0, 0, f['lk'])
redis.call('HSET', job, 'fn', f['fn'], 'l', f['l'], 's', 'q', 't', 0, 'enq', now,
  'x', 0, 'e', eid)
if nonce ~= '' then redis.call('HSET', job, 'n', nonce) end
if f['lk'] then redis.call('HSET', job, 'lk', f['lk']) end
-- The failed run's progress goes with its result (the queue's prefix is the result
-- key's, PROTOCOL.md).
local progress = string.sub(result, 1, #result - #('result:' .. id)) .. 'progress:' .. id
redis.call('DEL', result, dead_key, progress)
redis.call('ZREM', dead_index, id)
return 1
