-- buttress: one rate-limit decision, atomically, in one round trip.
--
-- The store's prelude (prelude.lua: now_of, numbers, store_numbers) and the
-- algorithm's Lua twin are prepended to this file; the twin defines
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
local now = now_of(ARGV[1])
local cost = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])
local args = {}
for i = 4, #ARGV do
  args[#args + 1] = tonumber(ARGV[i])
end

local state = nil
local raw = redis.call('GET', KEYS[1])
if raw then
  state = numbers(raw)
end

local new_state, allowed, limit, remaining, reset_after, retry_after =
  decide(state, now, cost, args)

if reset_after > 0 then
  store_numbers(KEYS[1], new_state, math.ceil(reset_after * 1000) + slack)
elseif raw then
  redis.call('DEL', KEYS[1])
end

-- One string, not an array: Redis would truncate the durations to integers, and
-- redis-py parses one bulk string far faster than a five-element array. %.17g keeps
-- every double exact ("inf" for never), so Python reads what the twin computed.
return string.format('%d %d %d %.17g %.17g', allowed, limit, remaining, reset_after, retry_after)
