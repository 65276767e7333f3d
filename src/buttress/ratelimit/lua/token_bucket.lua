-- Token bucket: the Lua twin of buttress.ratelimit.TokenBucket.decide.
-- Same operations in the same order as the Python, so both round alike.
-- state: {tokens, updated_at} or nil; args: {capacity, refill per second, limit}.
local EPS = 1e-9

local function decide(state, now, cost, args)
  local capacity, refill, limit = args[1], args[2], args[3]
  local tokens
  if state == nil then
    tokens = capacity
  else
    tokens = state[1]
    local last = state[2]
    if now < last then
      now = last
    else
      tokens = tokens + (now - last) * refill
      if tokens > capacity then
        tokens = capacity
      end
    end
  end
  local allowed, retry_after = 0, 0
  if cost <= tokens + EPS then
    tokens = tokens - cost
    if tokens < 0 then
      tokens = 0
    end
    allowed = 1
  elseif cost > capacity then
    retry_after = math.huge
  else
    retry_after = (cost - tokens) / refill
  end
  return {tokens, now}, allowed, limit, math.floor(tokens + EPS),
    (capacity - tokens) / refill, retry_after
end
