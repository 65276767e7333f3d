-- buttress: synchronise one shared circuit breaker, atomically, in one round trip.
--
-- A process reports what it saw since its last sync (outcome counts, the transition
-- it made, whether it wants to run trial calls); this script merges that into the
-- shared state, applies the same trip rules as the local engine over the shared
-- window, makes at most one transition per step, and returns the state every
-- process should be in. The rules are documented in docs/policies/circuit-breaker.md
-- ("Sharing a breaker across processes"). It runs after buttress's script prelude
-- (buttress/stores/lua/prelude.lua: now_of, numbers).
--
-- KEYS[1]  the state hash     (state, epoch, until, open_for, reason, holder, lease,
--                              calls, failures, slow, consec, head)
-- KEYS[2]  the window: a list of "calls failures slow" chunks (count window) or a
--          hash of bucket slot -> "calls failures slow" (time window)
-- ARGV[1]  now in seconds, or "" to use the Redis server's clock (TIME)
-- ARGV[2]  the reporting owner's id
-- ARGV[3]  the report's numbers, space-separated (one argument packs faster than ten):
--          the epoch it belongs to (0: none, first contact or re-join), calls,
--          failures, slow since the last sync, 1 if one of them was not a failure,
--          failures since the last success, 1 if the proposal is forced (isolate /
--          reset), 1 if the owner wants the trial lease, the trial lease (s), the
--          key TTL (ms)
-- ARGV[4]  proposal: from state   ARGV[5] to state ("" for none)   ARGV[6] reason
-- ARGV[7]  the breaker's rules, space-separated: window size (0: time window),
--          bucket width (s, 0: count window), buckets, min_calls, failure_ratio,
--          slow_call_ratio, consecutive_failures (0: off), open_duration,
--          open_duration_factor, max_open_duration
local skey, wkey = KEYS[1], KEYS[2]
local now = now_of(ARGV[1])
local me = ARGV[2]

local r = numbers(ARGV[3])
local base, d_calls, d_failures, d_slow = r[1], r[2], r[3], r[4]
local had_success, trailing, forced, want = r[5] == 1, r[6], r[7] == 1, r[8] == 1
local lease, ttl = r[9], r[10]
local p_from, p_to, p_reason = ARGV[4], ARGV[5], ARGV[6]
local c = numbers(ARGV[7])
local size, width, buckets, min_calls = c[1], c[2], c[3], c[4]
local failure_ratio, slow_ratio, max_consec = c[5], c[6], c[7]
local open_duration, factor, max_open = c[8], c[9], c[10]

local function head_of(t)
  if width > 0 then
    return math.floor(t / width)
  end
  return 0
end

local state, epoch, until_, open_for, reason, holder, lease_until
local calls, failures, slow, consec, head
local h = redis.call('HMGET', skey, 'state', 'epoch', 'until', 'open_for', 'reason', 'holder',
  'lease', 'calls', 'failures', 'slow', 'consec', 'head')
if h[1] then
  state, epoch, until_, open_for, reason, holder = h[1], tonumber(h[2]), tonumber(h[3]),
    tonumber(h[4]), h[5], h[6]
  lease_until, calls, failures, slow = tonumber(h[7]), tonumber(h[8]), tonumber(h[9]),
    tonumber(h[10])
  consec, head = tonumber(h[11]), tonumber(h[12])
else
  -- A fresh breaker. Its epoch is the time in microseconds, not 1: a breaker whose
  -- state expired and was created again must not reuse an epoch processes still hold.
  state, epoch, until_, open_for, reason, holder = 'closed', math.floor(now * 1000000), 0,
    open_duration, '', ''
  lease_until, calls, failures, slow, consec, head = 0, 0, 0, 0, 0, head_of(now)
  redis.call('DEL', wkey)
end

local function parse(raw)
  local c, f, s = string.match(raw, '(%S+) (%S+) (%S+)')
  return tonumber(c), tonumber(f), tonumber(s)
end

local function enter(new, why)
  local old = state
  state, reason, holder, lease_until = new, why, '', 0
  epoch = epoch + 1
  if new == 'open' then
    if old == 'half_open' then
      open_for = math.min(open_for * factor, max_open)
    else
      open_for = open_duration
    end
    until_ = now + open_for
  elseif new == 'closed' then
    calls, failures, slow, consec, head = 0, 0, 0, 0, head_of(now)
    redis.call('DEL', wkey)
  elseif new == 'isolated' then
    until_ = -1
  end
end

-- 1. Time: an open breaker whose open duration is over is half-open. Not a new
-- epoch: the half-open period continues the open one, and every process makes the
-- same move on its own clock.
if state == 'open' and now >= until_ then
  state, reason, holder, lease_until = 'half_open', 'open_duration_elapsed', '', 0
end

-- 2. The process's own transition.
local applied = 0
local mergeable = base == epoch or base == 0
if p_to ~= '' then
  local ok
  if forced then
    ok = true
  elseif base == 0 then
    -- Re-joining: a trip made alone is news the others should hear; anything else
    -- yields to the shared state.
    ok = p_to == 'open' and state == 'closed'
  else
    ok = base == epoch and state == p_from and (state ~= 'half_open' or holder == me)
  end
  if ok and (p_to == 'open' or p_to == 'closed' or p_to == 'isolated') then
    enter(p_to, p_reason)
    applied = 1
    -- Outcomes counted after a move to closed belong to the new window.
    mergeable = p_to == 'closed'
  end
end

-- 3. The window: merge the outcomes, then the trip rules over the shared counts.
if state == 'closed' then
  local slot = 0
  if width > 0 then
    local index = math.floor(now / width)
    if index > head then
      for a = head + 1, head + math.min(index - head, buckets) do
        local s = tostring(a % buckets)
        local raw = redis.call('HGET', wkey, s)
        if raw then
          local c, f, sl = parse(raw)
          calls, failures, slow = calls - c, failures - f, slow - sl
          redis.call('HDEL', wkey, s)
        end
      end
      head = index
    end
    slot = head % buckets
  end
  if mergeable and d_calls > 0 then
    calls, failures, slow = calls + d_calls, failures + d_failures, slow + d_slow
    if width > 0 then
      local s = tostring(slot)
      local raw = redis.call('HGET', wkey, s)
      local c, f, sl = 0, 0, 0
      if raw then
        c, f, sl = parse(raw)
      end
      redis.call('HSET', wkey, s,
        string.format('%d %d %d', c + d_calls, f + d_failures, sl + d_slow))
    else
      redis.call('RPUSH', wkey, string.format('%d %d %d', d_calls, d_failures, d_slow))
      -- Keep the last `size` outcomes in arrival order; the oldest chunk may be cut,
      -- its failures and slow calls pro rata.
      while calls > size do
        local c, f, sl = parse(redis.call('LINDEX', wkey, 0))
        local excess = calls - size
        if c <= excess then
          redis.call('LPOP', wkey)
          calls, failures, slow = calls - c, failures - f, slow - sl
        else
          local keep = c - excess
          local kf = math.floor(f * keep / c + 0.5)
          local ks = math.floor(sl * keep / c + 0.5)
          redis.call('LSET', wkey, 0, string.format('%d %d %d', keep, kf, ks))
          calls, failures, slow = size, failures - (f - kf), slow - (sl - ks)
        end
      end
    end
    if had_success then
      consec = trailing
    else
      consec = consec + d_failures
    end
  end
  local why = nil
  if max_consec > 0 and consec >= max_consec then
    why = 'consecutive_failures'
  elseif calls > 0 and calls >= min_calls then
    if failures / calls >= failure_ratio then
      why = 'failure_ratio'
    elseif slow / calls >= slow_ratio then
      why = 'slow_call_ratio'
    end
  end
  if why then
    enter('open', why)
  end
end

-- 4. The trial lease: one owner at a time runs the half-open trials.
local mine = 0
if state == 'half_open' then
  if want and (holder == '' or holder == me or lease_until <= now) then
    holder, lease_until = me, now + lease
  end
  if holder == me and lease_until > now then
    mine = 1
  end
end

-- 5. Write back only what changed: most syncs of a quiet breaker change nothing, and
-- then the script only reads. The keys' TTL is renewed with every change, and
-- otherwise once half of it has passed.
local fields = {'state', 'epoch', 'until', 'open_for', 'reason', 'holder', 'lease', 'calls',
  'failures', 'slow', 'consec', 'head'}
local values = {state, string.format('%.17g', epoch), string.format('%.17g', until_),
  string.format('%.17g', open_for), reason, holder, string.format('%.17g', lease_until),
  string.format('%d', calls), string.format('%d', failures), string.format('%d', slow),
  string.format('%d', consec), string.format('%.17g', head)}
local changes = {}
for i = 1, #fields do
  if values[i] ~= h[i] then
    changes[#changes + 1] = fields[i]
    changes[#changes + 1] = values[i]
  end
end
if #changes > 0 or redis.call('PTTL', skey) < ttl / 2 then
  if #changes > 0 then
    redis.call('HSET', skey, unpack(changes))
  end
  redis.call('PEXPIRE', skey, ttl)
  redis.call('PEXPIRE', wkey, ttl)
end

-- Redis truncates Lua numbers to integers on the way out: durations go out as whole
-- nanoseconds, -1 for never.
local remaining = 0
if state == 'open' then
  remaining = math.floor(math.max(0, until_ - now) * 1000000000 + 0.5)
elseif state == 'isolated' then
  remaining = -1
end
return {state, epoch, remaining, math.floor(open_for * 1000000000 + 0.5), mine, applied,
  reason, calls, failures, slow, consec}
