-- buttress: several rate limits on one key, decided together, atomically, all or
-- nothing, in one round trip.
--
-- The store prepends its prelude (prelude.lua: now_of, numbers, store_numbers), then
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
-- ARGV[1]  now in seconds, or "" to use the Redis server's clock (TIME)
-- ARGV[2]  cost
-- ARGV[3]  extra TTL in milliseconds (slack for clients whose clocks disagree)
-- ARGV[4…] per limit, in KEYS order: the count of its configuration numbers, then them
local now = now_of(ARGV[1])
local cost = tonumber(ARGV[2])
local slack = tonumber(ARGV[3])

local n = #KEYS
local args, raws, states = {}, {}, {}
local pos = 4
for i = 1, n do
  local count = tonumber(ARGV[pos])
  local a = {}
  for j = 1, count do
    a[j] = tonumber(ARGV[pos + j])
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

-- One string of 5 numbers per limit, as decide.lua answers for one.
local parts = {}
for i = 1, n do
  local o = outcomes[i]
  parts[i] = string.format('%d %d %d %.17g %.17g', o[2], o[3], o[4], o[5], o[6])
end
return table.concat(parts, ' ')
