-- Admit one request against every limit and budget that applies, atomically: all pass and are
-- counted, or none is counted.
-- KEYS[i]: the counter of check i. ARGV: now in ms and in seconds, then per check 5 values: kind,
-- limit, amount, extra, lease. Counts go to Redis as the strings they came as (a Lua number could be
-- written in exponent form).
--   kind "r": a moving one-minute window kept as one-second buckets in a hash, beside its running
--             total "t" and "o", the oldest second that may still hold a bucket. Each admission
--             evicts the seconds that left the window since the last one (at most 60, about one
--             per second), so the cost does not grow with the traffic. amount is what the request
--             adds (1 request, or its reserved tokens); extra unused.
--   kind "b": a budget hash {spent, reserved} in nano-USD for one period; amount is the
--             reservation, extra is "h<expire at>" (hard) or "s<expire at>" (soft): the Unix time
--             the counter may go, 0 meaning never.
--   lease: what the caller asks to count beyond the request, for it to admit the next requests of
--          this second alone (`budgets.leases`); 0 for none. A lease is counted only if every check
--          asks for one and each enforced one stays within three quarters of its limit with it, so
--          the last quarter of every limit is admitted request by request.
-- Returns {refused check index or 0, retry-after ms (rate windows), then per check: its use and reset
-- ms (the use after this request and its lease when admitted, as it stands when refused), then 1 if
-- the lease was counted, else 0}.
local now_ms = tonumber(ARGV[1])
local now_s = tonumber(ARGV[2])
local oldest_kept = now_s - 59
local n = #KEYS
local reset, evicted = {}, {}

-- The window's total once the seconds before oldest_kept are out, the evicted seconds (removed on
-- admission), what this second's bucket holds and whether "o" must move.
local function window_total(key)
  local state = redis.call("HMGET", key, "t", "o", ARGV[2])
  local bucket = tonumber(state[3] or "0")
  local old = {}
  if not state[1] then
    -- A new window, or one an earlier version kept as buckets alone: total what it holds.
    local buckets, total = redis.call("HGETALL", key), 0
    for j = 1, #buckets, 2 do
      local second = tonumber(buckets[j])
      if second and second < oldest_kept then
        old[#old + 1] = second
      elseif second then
        total = total + tonumber(buckets[j + 1])
      end
    end
    return total, old, bucket, true
  end
  local total, oldest = tonumber(state[1]), tonumber(state[2] or now_s)
  local moved = oldest < oldest_kept
  if moved then
    -- The key expires 61 s after its last admission, so no more than about 61 seconds are walked.
    for second = oldest, oldest_kept - 1 do
      local count = redis.call("HGET", key, second)
      if count then
        total = total - tonumber(count)
        old[#old + 1] = second
      end
    end
  end
  return math.max(total, 0), old, bucket, moved
end

-- When enough of the window's oldest buckets will have left it for `amount` to fit.
local function retry_at(key, total, limit, amount)
  local buckets = redis.call("HGETALL", key)
  local seconds = {}
  for j = 1, #buckets, 2 do
    local second = tonumber(buckets[j])
    if second and second >= oldest_kept then seconds[#seconds + 1] = {second, tonumber(buckets[j + 1])} end
  end
  table.sort(seconds, function(a, b) return a[1] < b[1] end)
  local freed, at = 0, now_s + 60
  for _, bucket in ipairs(seconds) do
    freed = freed + bucket[2]
    at = bucket[1] + 60
    if total - freed + amount <= limit then break end
  end
  return at
end

-- First every check is read; nothing is written unless all of them pass.
local refused, retry_ms, current = 0, 0, {}
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local kind, limit, amount = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if kind == "r" then
    local total, old, bucket, moved = window_total(KEYS[i])
    evicted[i] = {total, old, bucket, moved}
    current[i] = total
    reset[i] = 60000
    if refused == 0 and total + amount > limit then
      refused = i
      retry_ms = math.max(retry_at(KEYS[i], total, limit, amount) * 1000 - now_ms, 1)
    end
  else
    local budget = redis.call("HMGET", KEYS[i], "spent", "reserved")
    local spent, reserved = tonumber(budget[1] or "0"), tonumber(budget[2] or "0")
    evicted[i] = not (budget[1] or budget[2])  -- a new counter: its expiry is set with its first reservation
    current[i] = spent + reserved
    reset[i] = 0
    -- A budget's retry-after is the end of its period, known to the caller.
    if refused == 0 and string.sub(ARGV[base + 4], 1, 1) == "h" and spent + reserved + amount > limit then
      refused = i
    end
  end
end

if refused > 0 then
  -- Refused: every window's use as it stands, so the refusal carries the rate-limit headers too.
  local result = {refused, retry_ms}
  for i = 1, n do
    result[#result + 1] = current[i]
    result[#result + 1] = reset[i]
  end
  result[#result + 1] = 0
  return result
end

-- Admitted. The lease too, if every check asked for one and it fits: within 3/4 of every enforced limit
-- (a soft budget refuses nothing, so any lease fits it).
local leased = true
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local lease = tonumber(ARGV[base + 5])
  local enforced = ARGV[base + 1] == "r" or string.sub(ARGV[base + 4], 1, 1) == "h"
  if lease <= 0 or (enforced and (current[i] + tonumber(ARGV[base + 3]) + lease) * 4 > tonumber(ARGV[base + 2]) * 3) then
    leased = false
    break
  end
end

local result = {0, 0}
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local kind = ARGV[base + 1]
  local amount = tonumber(ARGV[base + 3])
  if leased then amount = amount + tonumber(ARGV[base + 5]) end
  if kind == "r" then
    -- One write for this second's bucket, the total and (about once a second) "o". Counts are written
    -- with %d: a Lua number handed to Redis as it is could be written in exponent form.
    local total, old, bucket, moved = unpack(evicted[i])
    if #old > 0 then redis.call("HDEL", KEYS[i], unpack(old)) end
    local total_after = string.format("%d", total + amount)
    if amount == 0 and moved then
      redis.call("HSET", KEYS[i], "t", total_after, "o", math.max(oldest_kept, 0))
    elseif amount == 0 then
      redis.call("HSET", KEYS[i], "t", total_after)
    elseif moved then
      redis.call("HSET", KEYS[i], ARGV[2], string.format("%d", bucket + amount), "t", total_after, "o", math.max(oldest_kept, 0))
    else
      redis.call("HSET", KEYS[i], ARGV[2], string.format("%d", bucket + amount), "t", total_after)
    end
    -- The key goes 61 s after the first admission of its newest second, when every bucket has left the window.
    if bucket == 0 or amount == 0 then redis.call("PEXPIRE", KEYS[i], 61000) end
  else
    redis.call("HINCRBY", KEYS[i], "reserved", string.format("%d", amount))
    local expire_at = string.sub(ARGV[base + 4], 2)
    if evicted[i] and expire_at ~= "0" then redis.call("EXPIREAT", KEYS[i], expire_at) end
  end
  result[#result + 1] = current[i] + amount
  result[#result + 1] = reset[i]
end
result[#result + 1] = leased and 1 or 0
return result
