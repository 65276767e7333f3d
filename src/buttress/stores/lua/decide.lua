-- buttress: one rate-limit decision, atomically, in one round trip.
--
-- The algorithm's Lua twin is prepended to this file: it defines
--   local function decide(state, now, cost, args)
--     -> new_state, allowed (1/0), limit, remaining, reset_after, retry_after
-- This frame knows no algorithm. It reads the time, loads the key's state (a string
-- of numbers), runs decide, and stores the new state with a TTL of reset_after: by
-- then the state is equivalent to none, so an idle key simply vanishes.
--
-- KEYS[1]  the state key
-- ARGV[1]  now in seconds, or "" to use the Redis server's clock (TIME)
-- ARGV[2]  cost
-- ARGV[3]  extra TTL in milliseconds (slack for clients whose clocks disagree)
-- ARGV[4…] the algorithm's configuration numbers (its `args`)
local now = tonumber(ARGV[1])
if now == nil then
  if redis.replicate_commands then
    -- Redis < 5 replicates scripts verbatim unless told otherwise; TIME needs this.
    redis.replicate_commands()
  end
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local cost = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])
local args = {}
for i = 4, #ARGV do
  args[#args + 1] = tonumber(ARGV[i])
end

local state = nil
local raw = redis.call('GET', KEYS[1])
if raw then
  state = {}
  for word in string.gmatch(raw, '%S+') do
    state[#state + 1] = tonumber(word)
  end
end

local new_state, allowed, limit, remaining, reset_after, retry_after =
  decide(state, now, cost, args)

if reset_after > 0 then
  local parts = {}
  for i, value in ipairs(new_state) do
    -- %.17g round-trips a double exactly, so the next decision sees what Python would.
    parts[i] = string.format('%.17g', value)
  end
  redis.call('SET', KEYS[1], table.concat(parts, ' '), 'PX', math.ceil(reset_after * 1000) + slack)
elseif raw then
  redis.call('DEL', KEYS[1])
end

-- One string, not an array: Redis would truncate the durations to integers, and
-- redis-py parses one bulk string far faster than a five-element array. %.17g keeps
-- every double exact ("inf" for never), so Python reads what the twin computed.
return string.format('%d %d %d %.17g %.17g', allowed, limit, remaining, reset_after, retry_after)
