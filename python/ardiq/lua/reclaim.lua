-- reclaim: take over entries whose worker stopped renewing them (found by the caller
-- with XAUTOCLAIM, which made this consumer their owner). Each is re-queued as a fresh
-- entry, so the stale worker's later ack finds nothing. Its reclaim count `r` is raised
-- only when the lost delivery may have run the task: always for a first delivery
-- (`r` = 0), and for a suspect (`r` >= 1) only when the job's `st` names this entry (the
-- worker marked it with `started` before running it) or the job record is missing. An
-- unmarked suspect was merely prefetched by the worker that died: it is re-queued with
-- `r` unchanged. Once the raised count reaches `cap` the task goes to the dead letters
-- as "worker lost". A task whose abort was requested is finalized as aborted.
-- KEYS[1..3]     dead-letter index, history stream, stats hash
-- KEYS[4+6i..]   per entry i: stream, job hash, wait key, result key, dead-letter hash,
--                attempts list
-- ARGV[1..7]     key prefix, group, consumer, result ttl ms, delivery cap, n, history
--                entries kept (0: no history, attempts or stats written)
-- ARGV[8+3i..]   per entry: entry id, task id (or "entry:<entry id>" when unreadable),
--                lane
-- History        (PROTOCOL.md, History) when ARGV[7] > 0: a task this call completes
--                (`lost` at the cap, or `abort`) gets its `P history` entry, a lost one
--                its attempts record too; `P stats` counts them once per kind
-- Returns        {re-queued, dead-lettered, aborted}
local dead_index, history, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, cap, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keep = tonumber(ARGV[7]) or 0
local now = now_ms()
local requeued, buried, aborted = 0, 0, 0
local lost = 0
for i = 0, n - 1 do
  local k = 4 + 6 * i
  local stream, job, wait, result, dead_key = KEYS[k], KEYS[k + 1], KEYS[k + 2],
    KEYS[k + 3], KEYS[k + 4]
  local attempts = KEYS[k + 5]
  local a = 8 + 3 * i
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
        if keep > 0 then
          if tries > 0 then attempts_settle(attempts, ttl) end
          history_add(history, keep, id, f['fn'], lane, 'abort', tries, f['enq'] or 0, 0,
            now, consumer, 'aborted')
        end
      elseif counted and deliveries >= cap then
        local err = 'worker lost (delivered ' .. deliveries .. ' times)'
        bury(dead_index, dead_key, id, f, lane, err, tries + 1, now)
        finalize(prefix, job, wait, result, id,
          result_blob(false, err, tries + 1, f['enq'], 0, now, false), ttl)
        buried = buried + 1
        if keep > 0 then
          lost = lost + 1
          attempt_add(attempts, tries + 1, 'lost', consumer, 0, now, err)
          attempts_settle(attempts, ttl)
          history_add(history, keep, id, f['fn'], lane, 'lost', tries + 1, f['enq'] or 0, 0,
            now, consumer, err)
        end
      else
        local new = add_entry(stream, f['id'], f['fn'], f['p'], tries, f['enq'] or now,
          f['x'] or 0, deliveries, f['lk'])
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
if keep > 0 then stats_add(stats, {lost = lost, abort = aborted}, now) end
return {requeued, buried, aborted}
