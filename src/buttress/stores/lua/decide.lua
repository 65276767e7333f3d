-- buttress: one rate-limit decision, atomically, in one round trip.
--
-- The store's prelude (prelude.lua: now_of, doubles, numbers, store_numbers) and the
-- algorithm's Lua twin are prepended to this file; the twin defines
--   local function decide(state, now, cost, args)
--     -> new_state, allowed (1/0), limit, remaining, reset_after, retry_after
-- This frame knows no algorithm. It reads the time, loads the key's state (a string
-- of numbers), runs decide, and stores the new state with a TTL of reset_after: by
-- then the state is equivalent to none, so an idle key simply vanishes.
--
-- KEYS[1]  the state key
-- ARGV[1]  packed doubles (see doubles in prelude.lua): the extra TTL in milliseconds
--          (slack for clients whose clocks disagree), then the algorithm's
--          configuration numbers (its `args`)
-- ARGV[2]  cost
-- ARGV[3]  now in seconds; absent (or "") to use the Redis server's clock (TIME)
-- A decision as Python's struct reads it (buttress.stores.redis._store): allowed (one
-- byte, 0/1), limit and remaining (8-byte integers), reset_after and retry_after
-- (doubles), little-endian, no padding: 33 bytes.
local DECISION = '<Bi8i8dd'
local now = now_of(ARGV[3])
local cost = tonumber(ARGV[2])
local args = doubles(ARGV[1])
local slack = table.remove(args, 1)

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

-- The decision as 33 bytes (DECISION above): Python unpacks it in one C
-- call, the doubles exact ("inf" for never); an array would lose them to Redis's
-- integer conversion, and text costs a formatting here and a parse per number there.
return struct.pack(DECISION, allowed, limit, remaining, reset_after, retry_after)
