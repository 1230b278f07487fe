-- fetch: read new entries for this consumer, highest lane first, up to `count` in all.
-- Creates a lane's consumer group (from the start of the stream) when it is missing,
-- which also recovers a Redis that lost its data.
-- With per-lane quotas (lane weights, v2): each lane is first read up to its quota (and
-- what is left of `count`), then lanes that filled their quota are read again, in KEYS
-- order, for the slots the others left unused (an empty lane's share goes to the rest).
-- KEYS          the lanes' streams to read, highest priority first (a worker leaves out
--               paused lanes)
-- ARGV          group, consumer, count[, quota per KEYS entry (optional, v2)]
-- Returns       flat list: lane index (1-based in KEYS), entry id, {field, value, ...}, ...
local group, consumer = ARGV[1], ARGV[2]
local left = tonumber(ARGV[3])
local out = {}
local function read(stream, n)
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n,
    'STREAMS', stream, '>')
end
-- Reads up to `n` entries of lane `i` into `out`; returns how many came.
local function take(i, n)
  local stream = KEYS[i]
  local r = read(stream, n)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then
      redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
      r = read(stream, n)
    end
    if type(r) == 'table' and r.err then return redis.error_reply(r.err) end
  end
  local got = 0
  if r then
    for _, entry in ipairs(r[1][2]) do
      out[#out + 1] = i
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      got = got + 1
    end
  end
  left = left - got
  return got
end
if #ARGV > 3 then
  local full = {}
  for i = 1, #KEYS do
    local quota = math.min(tonumber(ARGV[3 + i]) or 0, left)
    if quota > 0 then
      local got = take(i, quota)
      if type(got) == 'table' then return got end
      full[i] = got >= quota
    else
      full[i] = true
    end
  end
  for i = 1, #KEYS do
    if left <= 0 then break end
    if full[i] then
      local got = take(i, left)
      if type(got) == 'table' then return got end
    end
  end
  return out
end
for i = 1, #KEYS do
  if left <= 0 then break end
  local got = take(i, left)
  if type(got) == 'table' then return got end
end
return out
