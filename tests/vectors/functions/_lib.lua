-- helpers (test vector)
local function twice(x)
  return x * 2
end
