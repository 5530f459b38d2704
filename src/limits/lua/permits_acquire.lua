-- One slot in every key or none. KEYS: one sorted set per tier (member = permit id,
-- score = expiry in microseconds since the epoch).
-- ARGV: permit id, lease_us, then one limit per key.
-- Returns 1 if taken, 0 if some tier is full (then nothing was added anywhere).
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  -- Expired leases (a crashed holder's) stop counting here.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return 0
  end
end
local expiry = string.format('%.0f', now + lease)
local ttl = math.ceil(lease / 1000)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[1])
  -- Keep the set until its longest lease ends, then let Redis drop it.
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
