-- cron: enqueue one occurrence of a cron job, at most once across all workers, or (an
-- occurrence of 0) a run triggered now. The occurrence time comes from the spec, so
-- workers whose clocks disagree still name the same occurrence; the last occurrence fired
-- is kept per cron and never goes back. A paused cron (a field of the paused hash) skips
-- its occurrences without recording them, so resuming fires the next one, none missed.
-- A triggered run ignores the pause and leaves the schedule alone.
-- KEYS          cron hash, stream of the lane, job hash, result key, paused hash
-- ARGV          cron name, occurrence ms (0: triggered now), task id, fn, payload, lane,
--               nonce ('' = none: the worker does not sign)
-- Returns       1 enqueued, 0 this occurrence (or a later one) already fired, or the id
--               is taken, 2 the cron is paused (nothing written)
local crons, stream, job, result, paused = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, occ = ARGV[1], tonumber(ARGV[2])
if occ > 0 then
  if redis.call('HGET', paused, name) then return 2 end
  local last = tonumber(redis.call('HGET', crons, name))
  if last and last >= occ then return 0 end
  redis.call('HSET', crons, name, occ)
end
if redis.call('EXISTS', job) == 1 then return 0 end
local now = now_ms()
redis.call('DEL', result)
local eid = add_entry(stream, ARGV[3], ARGV[4], ARGV[5], 0, now, 0, 0)
redis.call('HSET', job, 'fn', ARGV[4], 'l', ARGV[6], 's', 'q', 't', 0, 'enq', now,
  'x', 0, 'e', eid)
if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', job, 'n', ARGV[7]) end
return 1
