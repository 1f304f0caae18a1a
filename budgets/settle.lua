-- Settle finished requests: a budget's reservation becomes the real cost, a token window's
-- reservation becomes the real token count. Crossed alert thresholds are claimed once per period.
-- KEYS[i]: a counter. ARGV per key, 5 values: kind, a, b, c, d.
--   kind "b": a = minus the reserved nano-USD to release, b = real cost in nano-USD, c = limit,
--             d = "<ttl>:<threshold>,<threshold>,..." (percent); thresholds reached return
--             {i, threshold, spent} the first time they are reached in the period.
--   kind "t": a = bucket second, b = tokens to add (negative: give back), c and d unused.
local alerts = {}
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local kind = ARGV[base + 1]
  if kind == "b" then
    local limit = tonumber(ARGV[base + 4])
    local ttl, thresholds = string.match(ARGV[base + 5], "^(%d+):(.*)$")
    -- Counts go to Redis as the strings they came as (a Lua number could be written in exponent form).
    local reserved = redis.call("HINCRBY", KEYS[i], "reserved", ARGV[base + 2])
    if reserved < 0 then redis.call("HSET", KEYS[i], "reserved", 0) end
    local spent = redis.call("HINCRBY", KEYS[i], "spent", ARGV[base + 3])
    if ttl ~= "0" then redis.call("EXPIRE", KEYS[i], ttl) end
    if limit > 0 then
      for threshold in string.gmatch(thresholds, "%d+") do
        if spent * 100 >= tonumber(threshold) * limit then
          if redis.call("HSETNX", KEYS[i], "alert:" .. threshold, 1) == 1 then
            alerts[#alerts + 1] = {i, tonumber(threshold), spent}
          end
        end
      end
    end
  elseif redis.call("HEXISTS", KEYS[i], ARGV[base + 2]) == 1 then
    local left = redis.call("HINCRBY", KEYS[i], ARGV[base + 2], ARGV[base + 3])
    if left < 0 then redis.call("HSET", KEYS[i], ARGV[base + 2], 0) end
  end
end
return alerts
