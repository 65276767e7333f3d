-- buttress: several rate limits on one key, decided together, atomically, all or
-- nothing, in one round trip.
--
-- The store prepends its prelude (prelude.lua: now_of, doubles, numbers,
-- store_numbers), then
-- one block per limit, each defining that limit's Lua twin and registering it:
--   do
--     local function decide(state, now, cost, args) ... end
--     deciders[i] = decide
--   end
-- so `deciders` (declared before those blocks) holds one decide per key. This frame
-- knows no algorithm. Every limit decides on its current state; only when all allow
-- are the new states stored (each with a TTL of its reset_after, as decide.lua
-- does). When one refuses, nothing is written, and the limits that would have
-- allowed report their standing as a cost-0 ask would.
--
-- KEYS[i]  the state key of limit i (all share the caller's {hash tag}: one slot)
-- ARGV[1]  packed doubles (see doubles in prelude.lua): the extra TTL in milliseconds
--          (slack for clients whose clocks disagree), then per limit, in KEYS order,
--          the count of its configuration numbers and those numbers
-- ARGV[2]  cost
-- ARGV[3]  now in seconds; absent (or "") to use the Redis server's clock (TIME)
-- A decision as Python's struct reads it (buttress.stores.redis._store): allowed (one
-- byte, 0/1), limit and remaining (8-byte integers), reset_after and retry_after
-- (doubles), little-endian, no padding: 33 bytes.
local DECISION = '<Bi8i8dd'
local now = now_of(ARGV[3])
local cost = tonumber(ARGV[2])
local packed = doubles(ARGV[1])
local slack = packed[1]

local n = #KEYS
local args, raws, states = {}, {}, {}
local pos = 2
for i = 1, n do
  local count = packed[pos]
  local a = {}
  for j = 1, count do
    a[j] = packed[pos + j]
  end
  args[i] = a
  pos = pos + count + 1
  local raw = redis.call('GET', KEYS[i])
  raws[i] = raw
  if raw then
    states[i] = numbers(raw)
  else
    states[i] = false
  end
end

local function state_of(i)
  if states[i] then
    return states[i]
  end
  return nil
end

-- outcomes[i] = {new_state, allowed, limit, remaining, reset_after, retry_after}
local outcomes = {}
local all = true
for i = 1, n do
  local outcome = {deciders[i](state_of(i), now, cost, args[i])}
  outcomes[i] = outcome
  if outcome[2] ~= 1 then
    all = false
  end
end

if all then
  for i = 1, n do
    local outcome = outcomes[i]
    local reset_after = outcome[5]
    if reset_after > 0 then
      store_numbers(KEYS[i], outcome[1], math.ceil(reset_after * 1000) + slack)
    elseif raws[i] then
      redis.call('DEL', KEYS[i])
    end
  end
else
  for i = 1, n do
    if outcomes[i][2] == 1 then
      outcomes[i] = {deciders[i](state_of(i), now, 0, args[i])}
    end
  end
end

-- One packed decision per limit, in order, as decide.lua answers for one.
local parts = {}
for i = 1, n do
  local o = outcomes[i]
  parts[i] = struct.pack(DECISION, o[2], o[3], o[4], o[5], o[6])
end
return table.concat(parts)
