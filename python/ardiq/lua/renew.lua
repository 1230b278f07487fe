-- renew: extend the leases of entries this consumer holds (running or prefetched), by
-- resetting their idle time. An entry is renewed only while this consumer still owns it.
-- KEYS          the lanes' streams
-- ARGV          group, consumer, then pairs: lane index (1-based in KEYS), entry id
-- Returns       flat pairs (lane index, entry id) of the entries this consumer no longer
--               holds (reclaimed or finished): entry ids repeat across streams, so the
--               lane is part of the answer
local group, consumer = ARGV[1], ARGV[2]
local lost = {}
for a = 3, #ARGV, 2 do
  local stream, eid = KEYS[tonumber(ARGV[a])], ARGV[a + 1]
  if is_pending(stream, group, eid, consumer) then
    -- JUSTID: reset the idle time without counting a delivery.
    redis.call('XCLAIM', stream, group, consumer, 0, eid, 'JUSTID')
  else
    lost[#lost + 1] = tonumber(ARGV[a])
    lost[#lost + 1] = eid
  end
end
return lost
