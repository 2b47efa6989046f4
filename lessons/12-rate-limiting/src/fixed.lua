-- A fixed window, decided in Redis in one step.
-- KEYS[1]: the client's counter, a hash {w = the window's number, n = admitted in it}.
-- ARGV[1]: the limit; ARGV[2]: the window in ms.
-- Returns {allowed (1|0), remaining, ms until this window ends, now in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local number = math.floor(now / window)
local ends = (number + 1) * window - now
local state = redis.call('HMGET', KEYS[1], 'w', 'n')
local n = tonumber(state[2]) or 0
if tonumber(state[1]) ~= number then n = 0 end -- a new window starts empty
if n >= limit then
  return {0, 0, ends, now}
end
redis.call('HSET', KEYS[1], 'w', number, 'n', n + 1)
redis.call('PEXPIRE', KEYS[1], ends)
return {1, limit - n - 1, ends, now}
