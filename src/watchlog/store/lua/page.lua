-- Read one page of time indexes (one per day, in order) in (score, member) order.
--
-- KEYS, per day: with step 1, a fleet index whose members are the bodies; with step 2, a
-- user index (members are event ids) followed by the fleet index of the same partition and
-- day, where each body is found by its exact score and id (see writer.score).
-- ARGV: from ms, to ms (both inclusive), limit, cursor member in the first day ('' for
-- none), type code ('' for any), step. Scores are ms plus a fraction: the last ms ends at
-- to + 1. Members are never removed one by one (whole keys expire), so a cursor's rank is
-- exact: no gaps and no repeats across pages, even while new events arrive.
-- Returns {exhausted (0/1), day number of the last body (1-based), body...}.
local lo, hi, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local after, want, step = ARGV[4], ARGV[5], tonumber(ARGV[6])
local out, lastday = {0, 0}, 0

local function body_of(fkey, eid, score)
  local tail = '"' .. eid .. '"]'
  for _, b in ipairs(redis.call('ZRANGE', fkey, score, score, 'BYSCORE')) do
    if string.sub(b, -#tail) == tail then return b end
  end
  return false
end

-- Append the day's bodies in range after `cursor`; return true when the day is used up.
local function scan(day, zkey, fkey, cursor)
  local start
  if cursor ~= '' then
    local r = redis.call('ZRANK', zkey, cursor)
    if r then start = r + 1 end
  end
  if not start then start = redis.call('ZCOUNT', zkey, '-inf', '(' .. lo) end
  local chunk = limit
  if want ~= '' then chunk = limit * 4 end
  while true do
    local got = redis.call('ZRANGE', zkey, start, start + chunk - 1, 'WITHSCORES')
    local done = #got < 2 * chunk
    for i = 1, #got, 2 do
      if tonumber(got[i + 1]) >= hi + 1 then return true end
      local b = got[i]
      if fkey then b = body_of(fkey, got[i], got[i + 1]) end
      if b and (want == '' or string.match(b, '^%[%d+,(%d+),') == want) then
        out[#out + 1] = b
        lastday = day
        if #out - 2 >= limit then return done and i + 1 >= #got end
      end
    end
    if done then return true end
    start = start + chunk
  end
end

local days = #KEYS / step
for d = 1, days do
  local zkey, fkey = KEYS[(d - 1) * step + 1], nil
  if step == 2 then fkey = KEYS[(d - 1) * step + 2] end
  local used_up = scan(d, zkey, fkey, d == 1 and after or '')
  if #out - 2 >= limit then
    if used_up and d == days then out[1] = 1 end
    break
  end
  if d == days then out[1] = 1 end
end
out[2] = lastday
return out
