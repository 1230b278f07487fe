-- fetch: read new entries for this consumer, highest lane first, up to `count` in all.
-- Creates a lane's consumer group (from the start of the stream) when it is missing,
-- which also recovers a Redis that lost its data.
-- KEYS          the lanes' streams, highest priority first
-- ARGV          group, consumer, count
-- Returns       flat list: lane index (1-based in KEYS), entry id, {field, value, ...}, ...
local group, consumer = ARGV[1], ARGV[2]
local left = tonumber(ARGV[3])
local out = {}
local function read(stream)
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left,
    'STREAMS', stream, '>')
end
for i, stream in ipairs(KEYS) do
  if left <= 0 then break end
  local r = read(stream)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then
      redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
      r = read(stream)
    end
    if type(r) == 'table' and r.err then return redis.error_reply(r.err) end
  end
  if r then
    for _, entry in ipairs(r[1][2]) do
      out[#out + 1] = i
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      left = left - 1
    end
  end
end
return out
