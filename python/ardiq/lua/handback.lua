-- handback: return prefetched entries this consumer will not run (it is stopping) to
-- their streams at once, as fresh entries any worker can read. No attempt is counted.
-- KEYS[2i+1..]  per entry i: stream, job hash
-- ARGV          group, consumer, then the entry ids (same order)
-- Returns       the number handed back
local group, consumer = ARGV[1], ARGV[2]
local count = 0
for a = 3, #ARGV do
  local i = a - 3
  local stream, job, eid = KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[a]
  if is_pending(stream, group, eid, consumer) then
    local f = read_entry(stream, eid)
    redis.call('XACK', stream, group, eid)
    redis.call('XDEL', stream, eid)
    if f and f['id'] then
      local new = add_entry(stream, f['id'], f['fn'] or '', f['p'] or '', f['t'] or 0,
        f['enq'] or 0, f['x'] or 0, f['r'] or 0, f['lk'])
      if redis.call('HGET', job, 'e') == eid then redis.call('HSET', job, 'e', new) end
      count = count + 1
    end
  end
end
return count
