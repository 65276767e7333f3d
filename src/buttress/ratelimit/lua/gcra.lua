-- GCRA: the Lua twin of buttress.ratelimit.GCRA.decide.
-- state: {tat} or nil; args: {emission interval, tolerance, limit (burst)}.
local EPS = 1e-9

local function decide(state, now, cost, args)
  local interval, tolerance, burst = args[1], args[2], args[3]
  local tat
  if state == nil then
    tat = now
  else
    tat = state[1]
    if tat < now then
      tat = now
    end
  end
  local available = (tolerance - (tat - now)) / interval
  local allowed, retry_after = 0, 0
  if cost <= available + EPS then
    tat = tat + cost * interval
    available = available - cost
    if available < 0 then
      available = 0
    end
    allowed = 1
  elseif cost > burst then
    retry_after = math.huge
  else
    retry_after = (cost - available) * interval
  end
  return {tat}, allowed, burst, math.floor(available + EPS), tat - now, retry_after
end
