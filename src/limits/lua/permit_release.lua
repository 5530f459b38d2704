-- Gives a permit's slots back. KEYS: the permit's sorted sets. ARGV: permit id.
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 1
