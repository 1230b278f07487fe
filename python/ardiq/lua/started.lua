-- started: mark suspect entries as started, just before this worker runs them. A suspect
-- is an entry already reclaimed once (`r` >= 1): its task may be what killed a worker.
-- `reclaim` counts a delivery against the cap for a suspect only when its job carries
-- this mark for that very entry, so a task that was merely prefetched by a worker that
-- died (never started there) is not blamed. Entries with `r` = 0 need no mark.
-- KEYS[2i+1..]  per entry i: stream, job hash
-- ARGV          group, consumer, then the entry ids (same order)
-- Returns       per entry {held, job e, job n}: held is 1 when this consumer still holds
--               it (lease renewed, marked when its job exists; run it), 0 when it does
--               not (reclaimed elsewhere: do not run it); the job's entry id and nonce
--               ('' when missing) let a signing worker check the delivery against its
--               seal (PROTOCOL.md, Signed payloads)
local group, consumer = ARGV[1], ARGV[2]
local out = {}
for a = 3, #ARGV do
  local i = a - 3
  local stream, job, eid = KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[a]
  if is_pending(stream, group, eid, consumer) then
    -- Renewed as well (JUSTID resets the idle time without counting a delivery): after
    -- a stall the entry may be past its lease, and another worker's reclaim must not
    -- take it between this check and the body's start.
    redis.call('XCLAIM', stream, group, consumer, 0, eid, 'JUSTID')
    local f = redis.call('HMGET', job, 'e', 'n')
    if f[1] then redis.call('HSET', job, 'st', eid) end
    out[i + 1] = {1, f[1] or '', f[2] or ''}
  else
    out[i + 1] = {0, '', ''}
  end
end
return out
