-- queue_size: tasks waiting to run: queued entries not yet delivered, plus delayed ones.
-- KEYS          delayed set, then the lanes' streams
-- ARGV          group
-- Returns       the count
local total = redis.call('ZCARD', KEYS[1])
for i = 2, #KEYS do
  local len = redis.call('XLEN', KEYS[i])
  if len > 0 then
    local p = redis.pcall('XPENDING', KEYS[i], ARGV[1])
    if type(p) == 'table' and p.err == nil then len = len - p[1] end
    total = total + len
  end
end
return total
