-- finish: record the outcomes of finished attempts and acknowledge their entries, in
-- one atomic step per outcome. An entry this consumer no longer holds (it was reclaimed
-- and re-queued while this worker stalled) is left alone: the outcome is stale.
-- KEYS[1..4]     delayed set, dead-letter index, history stream, stats hash
-- KEYS[5+6i..]   per outcome i: stream, job hash, wait key, result key, dead-letter hash,
--                attempts list
-- ARGV[1..6]     key prefix, group, consumer, result ttl ms, number of outcomes n,
--                history entries kept (0: no history, attempts or stats written)
-- ARGV[7+10i..]  per outcome: entry id, task id, kind, value, tries (attempts made,
--                this one included), enqueue ms, start ms, lane, retry delay ms, payload
--                (retry only: replaces the entry's payload when not empty; a signing
--                worker re-seals a retry with a fresh not-after)
-- ARGV[7+10n]    (optional) the numbers (1-based, space-separated) of the outcomes whose
--                attempt reported progress: their progress record takes the result's TTL
--                (deleted on retry); the others have none, and cost nothing
-- kinds          ok: value is the serialized return value
--                fail: value is the error; the task goes to the dead letters
--                expired: value is the error; not a dead letter (it never ran)
--                retry: run again after the delay (unless an abort was requested)
--                abort: the task was aborted before or while running
--                drop: an entry no live job holds (a replay, a moved or duplicated
--                entry): acknowledged, deleted and kept as a dead letter under the
--                outcome's task id (`entry:<entry id>`), value the reason; the job,
--                result and waiters of the task it names are left alone
-- History        (PROTOCOL.md, History) per recorded outcome when ARGV[6] > 0: a
--                `P history` entry per completed task, an attempts record per failed
--                attempt, and one HINCRBY of `P stats` per kind for the whole call
-- Returns        per outcome 1 when recorded, 0 when stale
-- The acknowledged entries are deleted at the end with one XDEL per stream (not one per
-- outcome), also when an outcome raises an error midway (what was acked is then deleted
-- before the error is returned, as if each had been deleted at its ack); a batch with an
-- unknown kind is rejected before anything is written.
local delayed, dead_index, history, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local ttl, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep = tonumber(ARGV[6]) or 0
local kinds = {ok = true, fail = true, expired = true, retry = true, abort = true,
  drop = true}
for i = 0, n - 1 do
  local kind = ARGV[7 + 10 * i + 2]
  if not kinds[kind] then
    return redis.error_reply('ardiq: unknown outcome kind ' .. tostring(kind))
  end
end
local now = now_ms()
local progressed = {}
for k in string.gmatch(ARGV[7 + 10 * n] or '', '%d+') do progressed[tonumber(k)] = true end
local out = {}
local acked, streams = {}, {}
local counts = {} -- kind -> recorded outcomes, for `P stats`
-- The history of one recorded outcome (keep > 0): its attempt when it failed, its
-- `P history` entry when it completed the task.
local function remember(attempts, fn, id, kind, value, tries, enq, start, lane)
  counts[kind] = (counts[kind] or 0) + 1
  local err
  if kind == 'abort' then err = 'aborted' elseif kind ~= 'ok' then err = value end
  local failed = kind == 'retry' or kind == 'fail' or kind == 'expired'
    or (kind == 'abort' and (tonumber(start) or 0) > 0)
  if failed then attempt_add(attempts, tries, kind, consumer, start, now, err) end
  if kind == 'retry' then
    -- Live again: no lifetime (one left by an earlier run of this id would cut it short).
    redis.pcall('PERSIST', attempts)
    return
  end
  if failed or (tonumber(tries) or 0) > 1 then attempts_settle(attempts, ttl) end
  history_add(history, keep, id, fn, lane, kind, tries, enq, start, now, consumer, err)
end
-- The task name for its history entry, read before the job record goes.
local function name_of(job, stream, eid, fields)
  local fn = fields and fields['fn'] or job_field(job, 'fn')
  if not fn then
    -- A lean job record (PROTOCOL.md) has no name: its entry has.
    local f = read_entry(stream, eid)
    fn = f and f['fn']
  end
  return fn or ''
end
local function finish_all()
  for i = 0, n - 1 do
    local k = 5 + 6 * i
    local stream, job, wait, result, dead_key = KEYS[k], KEYS[k + 1], KEYS[k + 2],
      KEYS[k + 3], KEYS[k + 4]
    local a = 7 + 10 * i
    local eid, id, kind, value = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    local tries, enq, start, lane = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
    local delay = tonumber(ARGV[a + 8])
    local payload = ARGV[a + 9]
    local reported = progressed[i + 1] == true
    if kind == 'retry' and redis.call('HGET', job, 'a') == '1' then kind = 'abort' end
    local fields
    if kind == 'fail' or kind == 'retry' or kind == 'drop' then
      fields = read_entry(stream, eid)
    end
    -- The ack comes first and decides: 0 means another worker owns this attempt now.
    if redis.call('XACK', stream, group, eid) == 0 then
      out[i + 1] = 0
    else
      local ids = acked[stream]
      if not ids then
        ids = {}
        acked[stream] = ids
        streams[#streams + 1] = stream
      end
      ids[#ids + 1] = eid
      local fn
      if keep > 0 and kind ~= 'retry' and kind ~= 'drop' then
        fn = name_of(job, stream, eid, fields)
      end
      if kind == 'ok' then
        finalize(prefix, job, wait, result, id,
          result_blob(true, value, tries, enq, start, now, false), ttl, reported)
      elseif kind == 'fail' then
        bury(dead_index, dead_key, id, fields or {}, lane, value, tries, now)
        finalize(prefix, job, wait, result, id,
          result_blob(false, value, tries, enq, start, now, false), ttl, reported)
      elseif kind == 'expired' then
        finalize(prefix, job, wait, result, id,
          result_blob(false, value, tries, enq, start, now, false), ttl, reported)
      elseif kind == 'drop' then
        bury(dead_index, dead_key, id, fields or {}, lane, value, tries, now)
      elseif kind == 'abort' then
        finalize(prefix, job, wait, result, id,
          result_blob(false, 'aborted', tries, enq, start, now, true), ttl, reported)
      else -- retry
        fields = fields or {}
        -- The next attempt starts without the failed one's progress.
        if reported then redis.call('DEL', prefix .. 'progress:' .. id) end
        if payload and payload ~= '' then fields['p'] = payload end
        if delay <= 0 then
          local new = add_entry(stream, id, fields['fn'] or '', fields['p'] or '', tries,
            fields['enq'] or enq, fields['x'] or 0, 0, fields['lk'])
          redis.call('HSET', job, 's', 'q', 'e', new, 't', tries)
        else
          -- The task name and times too: a lean job record (PROTOCOL.md) has none.
          redis.call('HSET', job, 's', 'd', 't', tries, 'at', now + delay,
            'p', fields['p'] or '', 'fn', fields['fn'] or '', 'enq', fields['enq'] or enq,
            'x', fields['x'] or 0)
          if fields['lk'] then redis.call('HSET', job, 'lk', fields['lk']) end
          redis.call('HDEL', job, 'e')
          redis.call('ZADD', delayed, now + delay, id)
        end
      end
      if keep > 0 and kind ~= 'drop' then
        remember(KEYS[k + 5], fn, id, kind, value, tries, enq, start, lane)
      end
      out[i + 1] = 1
    end
  end
end
local done, err = pcall(finish_all)
if keep > 0 then stats_add(stats, counts, now) end
for _, stream in ipairs(streams) do
  local ids = acked[stream]
  for j = 1, #ids, 1000 do
    redis.call('XDEL', stream, unpack(ids, j, math.min(j + 999, #ids)))
  end
end
if not done then
  if type(err) == 'table' then return err end
  return redis.error_reply(tostring(err))
end
return out
