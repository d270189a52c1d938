-- Read one page of time indexes (one per day, in order) in (score, member) order.
--
-- KEYS, per day: a time index (the fleet index, whose members are references, or a user
-- index, whose members are event ids) followed by the bodies hash of the same partition
-- and day. ARGV: from ms, to ms (both inclusive), limit, cursor member in the first day
-- ('' for none), type code ('' for any), the prefix that turns a member into its field in
-- the bodies hash ('' for the fleet index, "<user> " for a user index).
-- Members are never removed one by one (whole keys expire), so a cursor's rank is exact:
-- no gaps and no repeats across pages, even while new events arrive.
-- Returns {exhausted (0/1), day number of the last body (1-based), its member, body...}.
local lo, hi, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local after, want, prefix = ARGV[4], ARGV[5], ARGV[6]
local out, lastday, lastmember = {0, 0, ''}, 0, ''
local HEAD = 3

-- Append the day's bodies in range after `cursor`; return true when the day is used up.
local function scan(day, zkey, bkey, cursor)
  local start
  if cursor ~= '' then
    local r = redis.call('ZRANK', zkey, cursor)
    if r then start = r + 1 end
  end
  if not start then start = redis.call('ZCOUNT', zkey, '-inf', '(' .. lo) end
  local stop = redis.call('ZCOUNT', zkey, '-inf', hi) - 1  -- the last rank in range
  local chunk = limit
  if want ~= '' then chunk = limit * 4 end
  while start <= stop do
    local last = math.min(start + chunk - 1, stop)
    local members = redis.call('ZRANGE', zkey, start, last)
    local fields = members
    if prefix ~= '' then
      fields = {}
      for j = 1, #members do fields[j] = prefix .. members[j] end
    end
    local bodies = redis.call('HMGET', bkey, unpack(fields))
    for j = 1, #fields do
      local b = bodies[j]
      if b and (want == '' or string.match(b, '^%[%d+,(%d+),') == want) then
        out[#out + 1] = b
        lastday, lastmember = day, members[j]
        if #out - HEAD >= limit then return last == stop and j == #fields end
      end
    end
    start = last + 1
  end
  return true
end

local days = #KEYS / 2
for d = 1, days do
  local used_up = scan(d, KEYS[2 * d - 1], KEYS[2 * d], d == 1 and after or '')
  if #out - HEAD >= limit then
    if used_up and d == days then out[1] = 1 end
    break
  end
  if d == days then out[1] = 1 end
end
out[2], out[3] = lastday, lastmember
return out
