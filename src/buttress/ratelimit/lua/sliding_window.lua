-- Sliding window counter: the Lua twin of buttress.ratelimit.SlidingWindow.decide.
-- state: {window index, previous count, current count} or nil; args: {limit, period}.
local EPS = 1e-9

local function decide(state, now, cost, args)
  local limit, period = args[1], args[2]
  local index = math.floor(now / period)
  if (index + 1) * period <= now then
    -- the division rounded down across a window's end: that window is over
    index = index + 1
  end
  local previous, current = 0, 0
  if state ~= nil then
    if state[1] >= index then
      index = state[1]
      previous = state[2]
      current = state[3]
    elseif state[1] == index - 1 then
      previous = state[3]
    end
  end
  local elapsed = now - index * period
  if elapsed < 0 then
    elapsed = 0
  end
  local weight = 1 - elapsed / period
  local used = previous * weight + current
  local allowed, retry_after = 0, 0
  if used + cost <= limit + EPS then
    current = current + cost
    used = used + cost
    allowed = 1
  elseif cost > limit then
    retry_after = math.huge
  elseif current + cost <= limit then
    retry_after = (weight - (limit - current - cost) / previous) * period
  else
    local share = (limit - cost) / current
    if share > 1 then
      share = 1
    end
    retry_after = weight * period + (1 - share) * period
  end
  local left = limit - used
  if left < 0 then
    left = 0
  end
  local reset_after = 0
  if current > 0 then
    reset_after = weight * period + period
  elseif previous > 0 then
    reset_after = weight * period
  end
  return {index, previous, current}, allowed, limit, math.floor(left + EPS),
    reset_after, retry_after
end
