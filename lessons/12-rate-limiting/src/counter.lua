-- A sliding-window counter, decided in Redis in one step: this fixed
-- window's count, plus the last window's weighted by how much of it the
-- sliding window still covers. Two numbers per client, whatever the limit.
-- KEYS[1]: a hash {w = the window's number, cur = admitted in it, prev = admitted in the one before}.
-- ARGV[1]: the limit; ARGV[2]: the window in ms.
-- Returns {allowed (1|0), remaining, ms until a request would be admitted, now in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local number = math.floor(now / window)
local into = now - number * window
local state = redis.call('HMGET', KEYS[1], 'w', 'cur', 'prev')
local w, cur, prev = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
if w == number - 1 then
  prev, cur = cur, 0 -- the window moved on by one
elseif w ~= number then
  prev, cur = 0, 0 -- a new client, or a quiet one
end
local estimate = prev * (window - into) / window + cur
if estimate < limit then
  cur = cur + 1
  redis.call('HSET', KEYS[1], 'w', number, 'cur', cur, 'prev', prev)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return {1, math.max(0, math.floor(limit - estimate - 1)), window - into, now}
end
-- Refused: when does the estimate fall under the limit?
local wait
if cur < limit and prev > 0 then
  -- later in this window, as the last window's weight shrinks
  wait = math.floor((window - into) - (limit - cur) * window / prev) + 1
else
  -- in the next window, where this window's count is the weighted one
  wait = (window - into) + math.floor(window * (1 - limit / cur)) + 1
end
return {0, 0, math.max(1, wait), now}
