-- inspect: the status of one task and, while it is live, what it is.
-- KEYS[1..2]    job hash, result key
-- KEYS[3..2+L]  the lanes' streams
-- ARGV          group, L, lane names
-- Returns       {status} for complete / not_found, else
--               {status, fn, payload, enqueue ms, tries, scheduled-at ms or 0, lane}
local job, result = KEYS[1], KEYS[2]
local group, nl = ARGV[1], tonumber(ARGV[2])
local lanes = {}
for i = 1, nl do lanes[ARGV[2 + i]] = KEYS[2 + i] end
local f = to_map(redis.call('HGETALL', job))
if not f['s'] then
  if redis.call('EXISTS', result) == 1 then return {'complete'} end
  return {'not_found'}
end
local status, payload = 'scheduled', f['p'] or ''
if f['s'] == 'k' then
  status = 'queued' -- parked by a limit (PROTOCOL.md, Limits): waiting for its turn
elseif f['s'] == 'q' then
  status = 'queued'
  local stream = lanes[f['l']]
  if stream and f['e'] then
    if is_pending(stream, group, f['e'], nil) then status = 'running' end
    local entry = read_entry(stream, f['e'])
    if entry then payload = entry['p'] or '' end
  end
end
return {status, f['fn'] or '', payload, tonumber(f['enq']) or 0, tonumber(f['t']) or 0,
  tonumber(f['at']) or 0, f['l'] or ''}
