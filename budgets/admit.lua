-- Admit one request against every limit and budget that applies, atomically: all pass and are
-- counted, or none is counted.
-- KEYS[i]: the counter of check i. ARGV: now in ms and in seconds, then per check 4 values: kind,
-- limit, amount, extra. Counts go to Redis as the strings they came as (a Lua number could be
-- written in exponent form).
--   kind "r": a moving one-minute window kept as one-second buckets in a hash; amount is what
--             the request adds (1 request, or its reserved tokens); extra unused.
--   kind "b": a budget hash {spent, reserved} in nano-USD for one period; amount is the
--             reservation, extra is "h<ttl>" (hard) or "s<ttl>" (soft), ttl 0 meaning none.
-- Returns {refused check index or 0, retry-after ms (rate windows), then per check: used after, reset ms}.
local now_ms = tonumber(ARGV[1])
local now_s = tonumber(ARGV[2])
local oldest_kept = now_s - 59
local n = #KEYS
local used, reset, stale = {}, {}, {}

for i = 1, n do
  local base = 2 + (i - 1) * 4
  local kind, limit, amount = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if kind == "r" then
    local buckets = redis.call("HGETALL", KEYS[i])
    local total, seconds, old = 0, {}, {}
    for j = 1, #buckets, 2 do
      local second = tonumber(buckets[j])
      if second < oldest_kept then
        old[#old + 1] = buckets[j]
      else
        local count = tonumber(buckets[j + 1])
        total = total + count
        seconds[#seconds + 1] = {second, count}
      end
    end
    stale[i] = old
    if total + amount > limit then
      -- Retry once enough of the window's oldest buckets have left it.
      table.sort(seconds, function(a, b) return a[1] < b[1] end)
      local freed, at = 0, now_s + 60
      for _, bucket in ipairs(seconds) do
        freed = freed + bucket[2]
        at = bucket[1] + 60
        if total - freed + amount <= limit then break end
      end
      return {i, math.max(at * 1000 - now_ms, 1)}
    end
    used[i] = total + amount
    reset[i] = 60000
  else
    local spent = tonumber(redis.call("HGET", KEYS[i], "spent") or "0")
    local reserved = tonumber(redis.call("HGET", KEYS[i], "reserved") or "0")
    local extra = ARGV[base + 4]
    if string.sub(extra, 1, 1) == "h" and spent + reserved + amount > limit then
      return {i, 0}  -- a budget's retry-after is the end of its period, known to the caller
    end
    used[i] = spent + reserved + amount
    reset[i] = 0
  end
end

local result = {0, 0}
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local kind, amount = ARGV[base + 1], tonumber(ARGV[base + 3])
  if kind == "r" then
    if #stale[i] > 0 then redis.call("HDEL", KEYS[i], unpack(stale[i])) end
    if amount > 0 then redis.call("HINCRBY", KEYS[i], ARGV[2], ARGV[base + 3]) end
    redis.call("PEXPIRE", KEYS[i], 61000)
  else
    redis.call("HINCRBY", KEYS[i], "reserved", ARGV[base + 3])
    local ttl = tonumber(string.sub(ARGV[base + 4], 2))
    if ttl > 0 then redis.call("EXPIRE", KEYS[i], ttl) end
  end
  result[#result + 1] = used[i]
  result[#result + 1] = reset[i]
end
return result
