-- GCRA step for one key, mirroring gcra.rs (Gcra::acquire / Gcra::peek); the caller turns the
-- answer into a RateDecision with the same Rust code as the memory limiter.
-- KEYS[1]: the key holding tat (microseconds since the epoch, an integer string).
-- ARGV: interval_us, burst, cost, mode ("acquire" or "peek").
-- Returns {allowed (0/1), tat after the step, now}; all integers below 2^53, exact as doubles.
-- Time comes from Redis so every node's request is judged on one clock.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local span = interval * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local acquire = ARGV[4] == 'acquire'
if not acquire then cost = 1 end

local stored = tonumber(redis.call('GET', KEYS[1]) or '')
local tat = stored or now
if tat < now then tat = now end
-- Only reached when the clock went backwards: a drained bucket is the strictest legal state.
local clamped = false
if tat > now + span then
  tat = now + span
  clamped = true
end

local allowed = 0
local write = clamped
local new_tat = tat + cost * interval
if new_tat <= now + span then
  allowed = 1
  if acquire then
    tat = new_tat
    write = write or cost > 0
  end
end
if acquire and write and tat > now then
  -- The key disappears once the bucket is full again, which equals no key.
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end
return {allowed, tat, now}
