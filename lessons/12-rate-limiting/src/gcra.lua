-- GCRA (the generic cell rate algorithm), decided in Redis in one step.
-- KEYS[1]: the client's "theoretical arrival time", one number.
-- ARGV[1]: the limit; ARGV[2]: the window in ms.
-- Returns {allowed (1|0), remaining, ms until the next request is allowed, now in ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
-- A burst of up to `limit` requests fits; after that, one per interval.
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.floor(now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
return {1, math.floor((now - allow_at) / interval), math.ceil(interval), math.floor(now)}
