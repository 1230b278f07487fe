-- queue_size: tasks waiting to run: queued entries not yet delivered, plus delayed ones,
-- plus (v2, flow control) those parked by a limit.
-- KEYS          delayed set, then the L lanes' streams, then (when ARGV[2] is given) the
--               parked set
-- ARGV          group, L (optional: without it there is no parked set in KEYS)
-- Returns       the count
local total = redis.call('ZCARD', KEYS[1])
local nl = tonumber(ARGV[2]) or (#KEYS - 1)
for i = 2, nl + 1 do
  local len = redis.call('XLEN', KEYS[i])
  if len > 0 then
    local p = redis.pcall('XPENDING', KEYS[i], ARGV[1])
    if type(p) == 'table' and p.err == nil then len = len - p[1] end
    total = total + len
  end
end
if ARGV[2] and KEYS[nl + 2] then total = total + redis.call('ZCARD', KEYS[nl + 2]) end
return total
