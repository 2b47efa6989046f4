-- A sliding-window log, decided in Redis in one step.
-- KEYS[1]: the client's log, a sorted set of admitted requests by time.
-- ARGV[1]: the limit; ARGV[2]: the window in ms; ARGV[3]: a unique request id.
-- Returns {allowed (1|0), remaining, ms until a place frees up, now in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  -- Only admitted requests are logged, so the log never holds more than
  -- `limit` entries, and a refused retry does not push the window on.
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window - now, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now, now}
