-- Helpers shared by every ArdiQ script. Both the Python package and the Rust engine
-- prepend this file to each script before loading it, so there is one copy of each
-- helper and every script stays a single EVAL. See PROTOCOL.md for the layout.

-- Server time in epoch milliseconds: every worker and producer agrees on it, whatever
-- their own clocks say.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A flat field/value array (as XRANGE and HGETALL return it) as a table.
local function to_map(flat)
  local m = {}
  if flat then
    for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  end
  return m
end

-- The fields of one stream entry as a table, or nil when the entry is gone.
local function read_entry(stream, eid)
  local r = redis.call('XRANGE', stream, eid, eid)
  if #r == 0 then return nil end
  return to_map(r[1][2])
end

-- Append a task entry to a work stream; returns the new entry id.
local function add_entry(stream, id, fn, payload, tries, enq, expire, reclaims)
  return redis.call('XADD', stream, '*', 'id', id, 'fn', fn, 'p', payload,
    't', tries, 'enq', enq, 'x', expire, 'r', reclaims)
end

-- A field of a job record; nil when the record is missing or is not a hash. What someone
-- else wrote under a job's key must not fail a whole call: the other entries of a
-- reclaim page would wait behind it for ever.
local function job_field(job, field)
  local v = redis.pcall('HGET', job, field)
  if type(v) == 'table' and v.err then return nil end
  return v or nil
end

-- Is `eid` in the group's pending list, owned by `consumer` (any owner when nil)?
local function is_pending(stream, group, eid, consumer)
  local r
  if consumer then
    r = redis.pcall('XPENDING', stream, group, eid, eid, 1, consumer)
  else
    r = redis.pcall('XPENDING', stream, group, eid, eid, 1)
  end
  return type(r) == 'table' and r.err == nil and #r > 0
end

-- The result record (protocol version 2): a msgpack array [version, ok, value, tries,
-- enqueued, started,
-- finished, aborted]. On success `value` is the app serializer's bytes; on failure it
-- is UTF-8 text that says what went wrong.
local function result_blob(ok, value, tries, enq, start, fin, aborted)
  return cmsgpack.pack({2, ok, value, tonumber(tries) or 0, tonumber(enq) or 0,
    tonumber(start) or 0, tonumber(fin) or 0, aborted})
end

-- Retire a live task: drop its job record, store its result (ttl > 0: for that long,
-- 0: not at all, < 0: forever), keep its progress as long as the result, and wake result
-- waiters if one registered. `progress` false: the caller knows no progress was
-- reported (finish), so there is none to keep.
local function finalize(prefix, job, wait, result, id, blob, ttl, progress)
  local waited = redis.call('DEL', job, wait) == 2
  if ttl > 0 then
    redis.call('SET', result, blob, 'PX', ttl)
  elseif ttl < 0 then
    redis.call('SET', result, blob)
  end
  if progress ~= false then
    if ttl > 0 then
      redis.call('PEXPIRE', prefix .. 'progress:' .. id, ttl)
    elseif ttl == 0 then
      redis.call('DEL', prefix .. 'progress:' .. id)
    end
  end
  if waited then redis.call('PUBLISH', prefix .. 'done', id) end
end

-- Keep a dead letter: its record and its place in the index (newest first by score).
local function bury(dead_index, dead_key, id, fields, lane, err, tries, now)
  redis.call('HSET', dead_key, 'fn', fields['fn'] or '', 'p', fields['p'] or '',
    'l', lane, 'err', err, 't', tries, 'enq', fields['enq'] or 0, 'fail', now)
  redis.call('ZADD', dead_index, now, id)
end
