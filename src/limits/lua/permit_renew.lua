-- Extends a permit in every key, or, if any of its slots already expired or is gone, removes
-- what is left of it. KEYS: the permit's sorted sets. ARGV: permit id, lease_us.
-- Returns 1 if renewed, 0 if the permit is lost.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[1])
  if not score or tonumber(score) <= now then
    for _, k in ipairs(KEYS) do
      redis.call('ZREM', k, ARGV[1])
    end
    return 0
  end
end
local expiry = string.format('%.0f', now + lease)
local ttl = math.ceil(lease / 1000)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[1])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
