-- Read one page of a time index in (score, member) order, after a cursor member.
--
-- KEYS[1]: a sorted set scored by event time. Either its members are the bodies (a fleet
-- index), or they are event ids (a user index) and KEYS[2] is the fleet index of the same
-- partition and day, where each body is found by its time and id.
-- ARGV: from ms, to ms (both inclusive), limit, cursor member ('' for none), type code
-- ('' for any). Scores are ms plus a fraction (writer.score): the last ms ends at to + 1.
-- Members are never removed one by one (whole keys expire), so the cursor's rank is exact:
-- no gaps and no repeats across pages, even while new events arrive.
-- Returns {exhausted (0/1), body...}.
local lo, hi, limit, after, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local zkey, hkey = KEYS[1], KEYS[2]

local function body_of(eid, score)
  local tail = '"' .. eid .. '"]'
  for _, b in ipairs(redis.call('ZRANGE', hkey, score, score, 'BYSCORE')) do
    if string.sub(b, -#tail) == tail then return b end
  end
  return false
end

local start
if after ~= '' then
  local r = redis.call('ZRANK', zkey, after)
  if r then start = r + 1 end
end
if not start then
  start = redis.call('ZCOUNT', zkey, '-inf', '(' .. lo)
end
local out, exhausted = {0}, 0
local chunk = limit
if want ~= '' then chunk = limit * 4 end
while #out - 1 < limit do
  local got = redis.call('ZRANGE', zkey, start, start + chunk - 1, 'WITHSCORES')
  local bodies, done = {}, #got < 2 * chunk
  for i = 1, #got, 2 do
    if tonumber(got[i + 1]) >= hi + 1 then done = true; break end
    if hkey then bodies[#bodies + 1] = body_of(got[i], got[i + 1])
    else bodies[#bodies + 1] = got[i] end
  end
  for i = 1, #bodies do
    local b = bodies[i]
    if b and (want == '' or string.match(b, '^%[%d+,(%d+),') == want) then
      out[#out + 1] = b
      if #out - 1 >= limit then
        if i < #bodies then done = false end
        break
      end
    end
  end
  start = start + chunk
  if done then exhausted = 1; break end
end
out[1] = exhausted
return out
