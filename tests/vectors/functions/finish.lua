-- finish (test vector): allowed under OOM
local n = tonumber(ARGV[1])
return twice(n) -- no newline at the end