-- Fixed window: the Lua twin of buttress.ratelimit.FixedWindow.decide.
-- state: {window index, count} or nil; args: {limit, period}.
local function decide(state, now, cost, args)
  local limit, period = args[1], args[2]
  local index = math.floor(now / period)
  if (index + 1) * period <= now then
    -- the division rounded down across a window's end: that window is over
    index = index + 1
  end
  local count = 0
  if state ~= nil and state[1] >= index then
    index = state[1]
    count = state[2]
  end
  local window_left = (index + 1) * period - now
  local allowed, retry_after = 0, 0
  if count + cost <= limit then
    count = count + cost
    allowed = 1
  elseif cost > limit then
    retry_after = math.huge
  else
    retry_after = window_left
  end
  local reset_after = 0
  if count > 0 then
    reset_after = window_left
  end
  return {index, count}, allowed, limit, limit - count, reset_after, retry_after
end
