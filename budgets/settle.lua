-- Settle finished requests: a budget's reservation becomes the real cost, a token window's
-- reservation becomes the real token count. Crossed alert thresholds are claimed once per period.
-- KEYS[i]: a counter. ARGV per key, 5 values: kind, a, b, c, d.
--   kind "b": a = minus the reserved nano-USD to release, b = real cost in nano-USD, c = limit,
--             d = "<expire at>:<threshold>,<threshold>,..." (percent; expire at as in admit.lua); thresholds reached return
--             {i, threshold, spent} the first time they are reached in the period.
--   kind "t": a = bucket second, b = tokens to add (negative: give back), c and d unused. The
--             window's running total "t" (see admit.lua) moves with the bucket; a bucket that has
--             left the window is not there to settle.
local alerts = {}
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local kind = ARGV[base + 1]
  if kind == "b" then
    local limit = tonumber(ARGV[base + 4])
    local expire_at, thresholds = string.match(ARGV[base + 5], "^(%d+):(.*)$")
    -- Counts go to Redis as the strings they came as (a Lua number could be written in exponent form).
    local reserved = redis.call("HINCRBY", KEYS[i], "reserved", ARGV[base + 2])
    if reserved < 0 then redis.call("HSET", KEYS[i], "reserved", 0) end
    local spent = redis.call("HINCRBY", KEYS[i], "spent", ARGV[base + 3])
    if expire_at ~= "0" then redis.call("EXPIREAT", KEYS[i], expire_at) end
    if limit > 0 then
      for threshold in string.gmatch(thresholds, "%d+") do
        if spent * 100 >= tonumber(threshold) * limit then
          if redis.call("HSETNX", KEYS[i], "alert:" .. threshold, 1) == 1 then
            alerts[#alerts + 1] = {i, tonumber(threshold), spent}
          end
        end
      end
    end
  else
    local bucket = redis.call("HGET", KEYS[i], ARGV[base + 2])
    if bucket then
      -- A bucket never goes below zero: give back at most what it holds.
      local change = math.max(tonumber(ARGV[base + 3]), -tonumber(bucket))
      if change ~= 0 then
        redis.call("HINCRBY", KEYS[i], ARGV[base + 2], change)
        if redis.call("HEXISTS", KEYS[i], "t") == 1 then redis.call("HINCRBY", KEYS[i], "t", change) end
      end
    end
  end
end
return alerts
