-- purge: drop queued and scheduled tasks without running them; each is finalized as
-- aborted with the error `purged` (so waiters wake). A delivered task held by a worker
-- whose heartbeat is recent is skipped unless `force`: that worker would still ack it.
-- The caller lists candidate ids (stream entries, `P delayed` and `P parked`) and calls this in
-- chunks; every id is checked again here, atomically.
-- KEYS[1..2]    delayed set, workers set
-- KEYS[3..2+L]  the lanes' streams
-- KEYS[3+L]     parked set (v2, flow control: tasks parked by a limit count as queued)
-- KEYS[4+L..]   per task: job hash, wait key, result key
-- ARGV          key prefix, group, result ttl ms, alive-after ms (a heartbeat at or after
--               it is a live worker), force (0/1), L, lane names, then the task ids
-- Returns       {queued purged, scheduled purged, delivered purged, skipped (held by a
--               live worker), gone (finished or unknown meanwhile)}
local delayed, workers = KEYS[1], KEYS[2]
local prefix, group, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local alive_after, force = tonumber(ARGV[4]), ARGV[5] == '1'
local nl = tonumber(ARGV[6])
local lanes = {}
for i = 1, nl do lanes[ARGV[6 + i]] = KEYS[2 + i] end
local first_id = 7 + nl
local queued, scheduled, delivered, skipped, gone = 0, 0, 0, 0, 0
local now = now_ms()
for i = first_id, #ARGV do
  local id = ARGV[i]
  local k = 3 + nl + (i - first_id) * 3
  local job, wait, result = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local f = to_map(redis.call('HGETALL', job))
  local blob = result_blob(false, 'purged', f['t'], f['enq'], 0, now, true)
  if f['s'] == 'd' then
    redis.call('ZREM', delayed, id)
    finalize(prefix, job, wait, result, id, blob, ttl)
    scheduled = scheduled + 1
  elseif f['s'] == 'k' then
    redis.call('ZREM', KEYS[3 + nl], id)
    finalize(prefix, job, wait, result, id, blob, ttl)
    queued = queued + 1
  elseif f['s'] == 'q' then
    local stream = lanes[f['l']]
    local eid = f['e']
    if not stream or not eid then
      gone = gone + 1
    else
      local p = redis.pcall('XPENDING', stream, group, eid, eid, 1)
      local owner = nil
      if type(p) == 'table' and p.err == nil and #p > 0 then owner = p[1][2] end
      if owner == nil then
        redis.call('XDEL', stream, eid)
        finalize(prefix, job, wait, result, id, blob, ttl)
        queued = queued + 1
      else
        local beat = tonumber(redis.call('ZSCORE', workers, owner))
        if not force and beat and beat >= alive_after then
          skipped = skipped + 1
        else
          -- The owner's own finish will find nothing to ack (stale) and change nothing.
          redis.call('XACK', stream, group, eid)
          redis.call('XDEL', stream, eid)
          finalize(prefix, job, wait, result, id, blob, ttl)
          delivered = delivered + 1
        end
      end
    end
  else
    gone = gone + 1
  end
end
return {queued, scheduled, delivered, skipped, gone}
