-- admit: flow control (PROTOCOL.md, Limits). Decide, for entries just delivered to this
-- consumer whose task has a rate limit or a concurrency cap, whether each may run now.
-- An admitted entry stays pending and runs; one over its limit is parked: acked and
-- deleted from its stream, its fields moved into its job hash (`s` = `k`) and its id put
-- in `P parked` with the time its token or slot is due. No attempt is counted.
-- Concurrency first: holders are fields `h:<lane index>:<entry id>` of the limit hash; at
-- the cap, holders no longer pending in their stream (finished, or re-queued by reclaim)
-- are dropped, and when the cap is still reached the entry is parked 10 ms after the
-- key's latest parked waiter (`cw`), so waiters are re-checked one at a time. Then the
-- rate (GCRA): the theoretical arrival time `tat` moves one interval per start; a start
-- is allowed while it is at most `burst` intervals ahead of now; otherwise the entry is
-- parked until its token is due and reserves it (it comes back with `ad` = 1 and is not
-- charged again). `g` in the job hash is the grant time of the entry's rate token.
-- KEYS[1..L]        the app's lanes' streams, lowest lane first
-- KEYS[L+1]         parked set
-- KEYS[L+2+2i..]    per entry i: its limit hash (`P limit:<task>[:<lk>]`), its job hash
-- ARGV[1..2]        group, L
-- ARGV[3+8i..]      per entry: lane index (0-based, lowest first), entry id, task id,
--                   ad ('1': the entry holds its rate token), rate (tokens per ms, 0 =
--                   none), burst (tokens), cap (0 = none), the limit key ('' = none)
-- Returns           one 1 (admitted) or 0 (parked) per entry, in order
local group, nl = ARGV[1], tonumber(ARGV[2])
local parked = KEYS[nl + 1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local HOUR = 3600000
local out = {}
local tats, ttls = {}, {} -- per limit key: its `tat` and TTL, written once at the end
local swept = {} -- limit keys whose stale holders this call already dropped

local function fmt(x) return string.format('%.3f', x) end

-- Move a delivered entry out of its stream into its job hash and `P parked`.
local function park(stream, job, eid, id, due, ad, grant)
  local f = read_entry(stream, eid)
  redis.call('XACK', stream, group, eid)
  redis.call('XDEL', stream, eid)
  if not f then return end
  redis.call('HSET', job, 's', 'k', 'p', f['p'] or '', 'r', f['r'] or 0,
    'fn', f['fn'] or '', 't', f['t'] or 0, 'enq', f['enq'] or 0, 'x', f['x'] or 0)
  if f['lk'] then redis.call('HSET', job, 'lk', f['lk']) end
  if ad then
    redis.call('HSET', job, 'ad', '1', 'g', fmt(grant))
  else
    redis.call('HDEL', job, 'ad')
  end
  redis.call('HDEL', job, 'e')
  redis.call('ZADD', parked, fmt(due), id)
end

local n = (#ARGV - 2) / 8
for i = 0, n - 1 do
  local a = 3 + 8 * i
  local lane, eid, id = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  local ad = ARGV[a + 3] == '1'
  local rate, burst, cap = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local lim, job = KEYS[nl + 2 + 2 * i], KEYS[nl + 3 + 2 * i]
  local stream = KEYS[lane + 1]
  local verdict = 1
  -- Nothing to park an entry in without its job (or when the job names another entry:
  -- a stale copy the worker refuses on its own): admitted as it is. So is a task whose
  -- abort was requested: the worker that holds it finishes it as aborted at once.
  local jf = redis.pcall('HMGET', job, 'e', 'a')
  if type(jf) == 'table' and jf.err then jf = {} end
  if stream and jf[1] == eid and jf[2] ~= '1' then
    local ttl = HOUR
    local holder = 'h:' .. lane .. ':' .. eid
    if cap > 0 then
      -- Every field but `tat` and `cw` is a holder.
      local count = redis.call('HLEN', lim) - redis.call('HEXISTS', lim, 'tat')
        - redis.call('HEXISTS', lim, 'cw')
      -- At most one sweep per key and call: what it finds live stays live meanwhile.
      if count >= cap and not swept[lim] then
        swept[lim] = true
        for _, field in ipairs(redis.call('HKEYS', lim)) do
          local li, he = string.match(field, '^h:(%d+):(.+)$')
          local hs = li and KEYS[tonumber(li) + 1]
          -- A holder in a lane this call does not name is kept (counted as live).
          if hs and not is_pending(hs, group, he, nil) then
            redis.call('HDEL', lim, field)
            count = count - 1
          end
        end
      end
      if count >= cap then
        local cw = tonumber(redis.call('HGET', lim, 'cw')) or 0
        local due = math.max(now, cw) + 10
        redis.call('HSET', lim, 'cw', fmt(due))
        park(stream, job, eid, id, due, ad, tonumber(job_field(job, 'g')) or now)
        verdict = 0
      end
      -- Holders live as long as their tasks run: a day, refreshed by every admission.
      ttl = 24 * HOUR
    end
    if verdict == 1 and rate > 0 and not ad then
      local interval = 1 / rate
      -- One read and one write of `tat` per key and call, however many entries share it.
      local tat = tats[lim]
      if tat == nil then tat = tonumber(redis.call('HGET', lim, 'tat')) or 0 end
      local next_tat = math.max(tat, now) + interval
      tats[lim] = next_tat
      ttl = math.max(ttl, math.ceil(next_tat - now) + HOUR)
      if next_tat - now > burst * interval then
        local due = next_tat - burst * interval
        park(stream, job, eid, id, due, true, due)
        verdict = 0
      else
        redis.call('HSET', job, 'g', fmt(now))
      end
    end
    if verdict == 1 and cap > 0 then redis.call('HSET', lim, holder, 1) end
    if ttl > (ttls[lim] or 0) then ttls[lim] = ttl end
  end
  out[#out + 1] = verdict
end
for lim, tat in pairs(tats) do redis.call('HSET', lim, 'tat', fmt(tat)) end
for lim, ttl in pairs(ttls) do redis.call('PEXPIRE', lim, ttl) end
return out
