-- buttress: helpers every buttress script starts with (buttress.stores.redis.script
-- puts this file in front of each). They know no algorithm.

-- The time of the call in seconds: `arg` when it is a number, else (nil or "") the
-- Redis server's own clock, so every process sharing the server agrees.
local function now_of(arg)
  local now = tonumber(arg)
  if now == nil then
    if redis.replicate_commands and not redis.REDIS_VERSION_NUM then
      -- Redis < 5 replicates scripts verbatim unless told otherwise; TIME needs this.
      -- (Redis 7, the first to tell its version here, only replicates effects.)
      redis.replicate_commands()
    end
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return now
end

-- The doubles packed (little-endian, 8 bytes each) in the string `packed`, as a
-- list: one C call for them all, where a string argument per number would cost a
-- conversion each, on both sides.
local function doubles(packed)
  local values = {struct.unpack('<' .. string.rep('d', #packed / 8), packed)}
  values[#values] = nil -- struct.unpack also returns the position after the last
  return values
end

-- The numbers of a space-separated string, in order.
local function numbers(text)
  local out = {}
  for word in string.gmatch(text, '%S+') do
    out[#out + 1] = tonumber(word)
  end
  return out
end

-- Keep the list of numbers `values` at `key` for `ttl` milliseconds, exactly:
-- %.17g round-trips a double, so the next reader sees what was computed.
local function store_numbers(key, values, ttl)
  local parts = {}
  for i, value in ipairs(values) do
    parts[i] = string.format('%.17g', value)
  end
  redis.call('SET', key, table.concat(parts, ' '), 'PX', ttl)
end
