-- progress: store a running task's progress record (PROTOCOL.md, "Progress"), only
-- while the job's `e` is the reporting entry: a stale attempt (reclaimed elsewhere,
-- retried) or a finished one writes nothing, so a late write never outlives the result.
-- KEYS[1]   job hash
-- KEYS[2]   progress key
-- ARGV[1]   entry id of the reporting attempt
-- ARGV[2]   value, JSON text: a number from 0 to 100 or an object (checked by the caller)
-- ARGV[3]   message, JSON text: a string or null
-- ARGV[4]   tries of the reporting attempt (this one included)
-- Returns   1 when written, 0 when not (the attempt is stale or finished)
if job_field(KEYS[1], 'e') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], '{"v":' .. ARGV[2] .. ',"m":' .. ARGV[3] .. ',"t":'
  .. string.format('%d', tonumber(ARGV[4]) or 0) .. ',"at":' .. string.format('%d', now_ms())
  .. '}')
return 1
