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

-- Append a task entry to a work stream; returns the new entry id. `lk` (the limit key)
-- and `ad` (the entry holds its rate token: `unpark` only) are written when set.
local function add_entry(stream, id, fn, payload, tries, enq, expire, reclaims, lk, ad)
  if (lk == nil or lk == false or lk == '') and not ad then
    return redis.call('XADD', stream, '*', 'id', id, 'fn', fn, 'p', payload,
      't', tries, 'enq', enq, 'x', expire, 'r', reclaims)
  end
  local args = {'XADD', stream, '*', 'id', id, 'fn', fn, 'p', payload,
    't', tries, 'enq', enq, 'x', expire, 'r', reclaims}
  if lk and lk ~= '' then
    args[#args + 1] = 'lk'
    args[#args + 1] = lk
  end
  if ad then
    args[#args + 1] = 'ad'
    args[#args + 1] = '1'
  end
  return redis.call(unpack(args))
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

-- Wake the listeners of `channel` (PROTOCOL.md, "Pub/sub"). Cluster clients listen with
-- SSUBSCRIBE, which only SPUBLISH reaches and which stays on the queue's shard; clients of
-- one Redis (and older versions) listen with SUBSCRIBE, reached by PUBLISH. Broadcast only
-- when no sharded listener heard it, so a cluster does not carry every wake-up to every
-- node. A pcall: a user whose ACL predates SPUBLISH still gets the PUBLISH.
local function notify(channel, message)
  local heard = redis.pcall('SPUBLISH', channel, message)
  if type(heard) ~= 'number' or heard == 0 then redis.call('PUBLISH', channel, message) end
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
  if waited then notify(prefix .. 'done', id) end
end

-- Keep a dead letter: its record and its place in the index (newest first by score).
local function bury(dead_index, dead_key, id, fields, lane, err, tries, now)
  redis.call('HSET', dead_key, 'fn', fields['fn'] or '', 'p', fields['p'] or '',
    'l', lane, 'err', err, 't', tries, 'enq', fields['enq'] or 0, 'fail', now)
  if fields['lk'] then redis.call('HSET', dead_key, 'lk', fields['lk']) end
  redis.call('ZADD', dead_index, now, id)
end

-- History (PROTOCOL.md, History): what workers completed, kept for people and dashboards;
-- nothing reads it to decide anything. Every write is a pcall: a refused one (an ACL user
-- without the history commands, a key of the wrong type) must never stop an ack.

-- `s` cut to at most `n` bytes, never inside a UTF-8 character.
local function cut_text(s, n)
  if #s <= n then return s end
  while n > 0 do
    local b = string.byte(s, n + 1)
    if b < 128 or b >= 192 then break end
    n = n - 1
  end
  return string.sub(s, 1, n)
end

-- One completed task onto `P history`, capped (approximately) at `cap` entries. `err`
-- is nil for a success.
local function history_add(history, cap, id, fn, lane, kind, tries, enq, start, fin,
    worker, err)
  if err then
    redis.pcall('XADD', history, 'MAXLEN', '~', cap, '*', 'id', id, 'fn', fn, 'l', lane,
      'k', kind, 't', tries, 'enq', enq, 'st', start, 'fin', fin, 'w', worker,
      'err', cut_text(err, 2000))
  else
    redis.pcall('XADD', history, 'MAXLEN', '~', cap, '*', 'id', id, 'fn', fn, 'l', lane,
      'k', kind, 't', tries, 'enq', enq, 'st', start, 'fin', fin, 'w', worker)
  end
end

-- One failed attempt onto `P attempts:<id>` as JSON (fixed field order), the last 25
-- kept.
local function attempt_add(attempts, tries, kind, worker, start, fin, err)
  local rec = '{"n":' .. (tonumber(tries) or 0) .. ',"k":' .. cjson.encode(kind)
    .. ',"w":' .. cjson.encode(worker) .. ',"st":' .. (tonumber(start) or 0)
    .. ',"fin":' .. fin .. ',"err":' .. cjson.encode(cut_text(err, 2000)) .. '}'
  local len = redis.pcall('RPUSH', attempts, rec)
  if type(len) == 'number' and len > 25 then redis.pcall('LTRIM', attempts, -25, -1) end
end

-- A completed task's attempts take its result's lifetime (ttl as `finalize` takes it).
local function attempts_settle(attempts, ttl)
  if ttl > 0 then
    redis.pcall('PEXPIRE', attempts, ttl)
  elseif ttl == 0 then
    redis.pcall('DEL', attempts)
  else
    redis.pcall('PERSIST', attempts)
  end
end

-- Per call, one HINCRBY per kind: `counts` maps kind -> outcomes of that kind.
local function stats_add(stats, counts, now)
  local minute = ':' .. math.floor(now / 60000)
  for kind, count in pairs(counts) do
    if count > 0 then redis.pcall('HINCRBY', stats, kind .. minute, count) end
  end
end
