-- reclaim: take over entries whose worker stopped renewing them (found by the caller
-- with XAUTOCLAIM, which made this consumer their owner). Each is re-queued as a fresh
-- entry, so the stale worker's later ack finds nothing. Its reclaim count `r` is raised
-- only when the lost delivery may have run the task: always for a first delivery
-- (`r` = 0), and for a suspect (`r` >= 1) only when the job's `st` names this entry (the
-- worker marked it with `started` before running it) or the job record is missing. An
-- unmarked suspect was merely prefetched by the worker that died: it is re-queued with
-- `r` unchanged. Once the raised count reaches `cap` the task goes to the dead letters
-- as "worker lost". A task whose abort was requested is finalized as aborted.
-- KEYS[1]        dead-letter index
-- KEYS[2+5i..]   per entry i: stream, job hash, wait key, result key, dead-letter hash
-- ARGV[1..6]     key prefix, group, consumer, result ttl ms, delivery cap, n
-- ARGV[7+3i..]   per entry: entry id, task id (or "entry:<entry id>" when unreadable),
--                lane
-- Returns        {re-queued, dead-lettered, aborted}
local dead_index = KEYS[1]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, cap, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local requeued, buried, aborted = 0, 0, 0
for i = 0, n - 1 do
  local k = 2 + 5 * i
  local stream, job, wait, result, dead_key = KEYS[k], KEYS[k + 1], KEYS[k + 2],
    KEYS[k + 3], KEYS[k + 4]
  local a = 7 + 3 * i
  local eid, id, lane = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if is_pending(stream, group, eid, consumer) then
    local f = read_entry(stream, eid)
    redis.call('XACK', stream, group, eid)
    redis.call('XDEL', stream, eid)
    if f and f['id'] and f['fn'] and f['p'] then
      local tries = tonumber(f['t']) or 0
      local reclaims = tonumber(f['r']) or 0
      local counted = reclaims == 0 or job_field(job, 'st') == eid
        or redis.call('EXISTS', job) == 0
      local deliveries = reclaims
      if counted then deliveries = reclaims + 1 end
      if job_field(job, 'a') == '1' then
        finalize(prefix, job, wait, result, id,
          result_blob(false, 'aborted', tries, f['enq'], 0, now, true), ttl)
        aborted = aborted + 1
      elseif counted and deliveries >= cap then
        local err = 'worker lost (delivered ' .. deliveries .. ' times)'
        bury(dead_index, dead_key, id, f, lane, err, tries + 1, now)
        finalize(prefix, job, wait, result, id,
          result_blob(false, err, tries + 1, f['enq'], 0, now, false), ttl)
        buried = buried + 1
      else
        local new = add_entry(stream, f['id'], f['fn'], f['p'], tries, f['enq'] or now,
          f['x'] or 0, deliveries)
        if job_field(job, 'e') == eid then
          redis.call('HSET', job, 'e', new)
          -- The next delivery starts afresh, without the lost one's progress (whose
          -- outcome, which would have given it a TTL, never comes).
          redis.call('DEL', prefix .. 'progress:' .. id)
        end
        requeued = requeued + 1
      end
    elseif f then
      bury(dead_index, dead_key, id, f, lane, 'malformed entry (needs id, fn and p)', 0, now)
      buried = buried + 1
    end
  end
end
return {requeued, buried, aborted}
