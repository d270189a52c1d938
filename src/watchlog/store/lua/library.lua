#!lua name=watchlog
-- The store's Redis functions, one library (Redis 7 FUNCTION LOAD), loaded on every master
-- by an admin connection (`watchlog up`, compose's cluster-init): the applications' Redis
-- user may call them (FCALL) but can neither load code nor run any of its own (no EVAL).
-- Functions are kept in the AOF and replicated, so restarts and failovers keep them.
-- Each function gets KEYS and ARGV as a script would. The readers are flagged no-writes:
-- they still run on a master that refuses writes (min-replicas-to-write).

-- == wl_ingest ==
-- Store a batch of events of ONE partition, atomically and idempotently.
--
-- KEYS[1] is the partition's feed stream, KEYS[2] this attempt's answer (keys.attempt);
-- the other keys are the distinct per-day keys the batch touches (all carry the
-- partition's hash tag, so they share one slot).
-- ARGV: minid (feed trim bound), n events, m expiring keys, retry (1 when an earlier
--   attempt of this same call may have run), then m pairs (key index, expire-at seconds),
--   then n groups of 15: ut, ua, ft, pa, pu, b (key indexes), event_id, event time (ms,
--   the indexes' score), type code, duration, meters, heart rate ('' when absent),
--   decikcal, user, body.
-- The user-day index is also the idempotency set: an event is stored only when ZADD NX
-- adds its id; only then are the body, the fleet index, the aggregates, the active users
-- and the feed updated, so a retried batch counts nothing twice. The body is stored once,
-- in the partition-day's bodies hash under "<user> <event_id>" (keys.ref); the fleet
-- index and the feed hold that reference.
-- Aggregates are summed in Lua tables and written once per field per call.
-- Returns one 1 (created) or 0 (duplicate) per event, and keeps that answer in KEYS[2]
-- for ATTEMPT_TTL_S: a retry of the same attempt (the reply or a replica's WAIT was lost)
-- returns the first answer instead of finding its own writes and calling them duplicates.
local function ingest(KEYS, ARGV)
  local minid, n, m = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  local base = 5 + 2 * m
  local KEEP = 60 -- seconds, keys.ATTEMPT_TTL_S
  if ARGV[4] == '1' then
    local first = redis.call('GET', KEYS[2])
    if first then
      local again = {}
      for i = 1, #first do again[i] = string.byte(first, i) - 48 end
      -- Still a write: the caller's WAIT then covers the first attempt's writes too.
      redis.call('EXPIRE', KEYS[2], KEEP)
      return again
    end
  end
  local out, sums, maxes, users = {}, {}, {}, {}

  local function add(key, field, v)
    local t = sums[key]
    if not t then t = {}; sums[key] = t end
    t[field] = (t[field] or 0) + v
  end

  local function aggregate(key, t, dur, meters, hr, dk)
    add(key, t .. ':n', 1)
    add(key, t .. ':d', dur)
    add(key, t .. ':m', meters)
    add(key, t .. ':c', dk)
    if hr then
      add(key, t .. ':h', hr)
      add(key, t .. ':k', 1)
      local mk = maxes[key]
      if not mk then mk = {}; maxes[key] = mk end
      local f = t .. ':x'
      if not mk[f] or hr > mk[f] then mk[f] = hr end
    end
  end

  for i = 0, n - 1 do
    local o = base + i * 15
    local eid, ts = ARGV[o + 6], ARGV[o + 7]
    if redis.call('ZADD', KEYS[tonumber(ARGV[o])], 'NX', ts, eid) == 1 then
      local user = ARGV[o + 13]
      local ref = user .. ' ' .. eid
      redis.call('HSET', KEYS[tonumber(ARGV[o + 5])], ref, ARGV[o + 14])
      redis.call('ZADD', KEYS[tonumber(ARGV[o + 2])], ts, ref)
      local t, dur, meters = ARGV[o + 8], tonumber(ARGV[o + 9]), tonumber(ARGV[o + 10])
      local hr, dk = tonumber(ARGV[o + 11]), tonumber(ARGV[o + 12])
      aggregate(KEYS[tonumber(ARGV[o + 1])], t, dur, meters, hr, dk)
      aggregate(KEYS[tonumber(ARGV[o + 3])], t, dur, meters, hr, dk)
      local pu = KEYS[tonumber(ARGV[o + 4])]
      local u = users[pu]
      if not u then u = {}; users[pu] = u end
      u[#u + 1] = user
      redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'r', ts .. ' ' .. ref)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end

  for key, fields in pairs(sums) do
    for f, v in pairs(fields) do
      redis.call('HINCRBY', key, f, v)
    end
  end
  for key, fields in pairs(maxes) do
    for f, v in pairs(fields) do
      local cur = tonumber(redis.call('HGET', key, f))
      if not cur or v > cur then redis.call('HSET', key, f, v) end
    end
  end
  for key, list in pairs(users) do
    redis.call('SADD', key, unpack(list))
  end
  -- Always runs, duplicates or not: it is a write, so a retried call's WAIT (after a WAIT that
  -- timed out) waits for the current replication offset, which covers the first write.
  for j = 0, m - 1 do
    redis.call('EXPIREAT', KEYS[tonumber(ARGV[5 + 2 * j])], ARGV[6 + 2 * j])
  end
  redis.call('SET', KEYS[2], table.concat(out), 'EX', KEEP)
  return out
end
redis.register_function{function_name = 'wl_ingest', callback = ingest}

-- == wl_page ==
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
local function page(KEYS, ARGV)
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
end
redis.register_function{function_name = 'wl_page', callback = page, flags = {'no-writes'}}

-- == wl_bodies ==
-- Look up bodies in a partition's bodies hashes by reference ("<user> <event_id>").
--
-- KEYS: the bodies hash keys (one per day) of ONE partition.
-- ARGV: pairs (key index, reference).
-- Returns one body per pair, or false when it is gone (retention).
local function bodies(KEYS, ARGV)
  local out = {}
  for i = 1, #ARGV, 2 do
    out[#out + 1] = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
  end
  return out
end
redis.register_function{function_name = 'wl_bodies', callback = bodies, flags = {'no-writes'}}
