#!lua name=watchlog
-- The store's Redis functions, one library (Redis 7 FUNCTION LOAD), loaded on every master
-- by an admin connection (`watchlog up`, compose's cluster-init): the applications' Redis
-- user may call them (FCALL) but can neither load code nor run any of its own (no EVAL).
-- Functions are kept in the AOF and replicated, so restarts and failovers keep them.
-- Each function gets KEYS and ARGV as a script would. The readers are flagged no-writes:
-- they still run on a master that refuses writes (min-replicas-to-write).

-- Each function's KEYS and ARGV are a head and repeated parts (per day, per group, per
-- log…), named by the lists below and addressed by name. store/layout.py names the same
-- lists for the Python side; tests/store/test_store_layout.py checks that they agree.
local function positions(names)
  local t = {n = #names}
  for i = 1, #names do t[names[i]] = i end
  return t
end

-- An activity type's aggregates, in the order they are packed in its field (store/layout.py
-- AGGREGATES): count, duration (s), distance (m), calories (0.1 kcal), heart-rate sum,
-- heart-rate count, heart-rate max. Summed below by position, in this order.
local AGGREGATES = {'n', 'd', 'm', 'c', 'h', 'k', 'x'}
-- The expire-at (epoch s) last given to the keys an aggregates hash stands for
-- (store/layout.py EXPIRES_FIELD): a user-day's hash for its index, a partition-day's for
-- its fleet index, active users and bodies. Absent: the keys are new (or predate it).
local EXPIRES = 'e'
local CHUNK = 4000 -- arguments per variadic command (Lua's unpack has a stack limit)

local function variadic(cmd, key, list)
  for i = 1, #list, CHUNK do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

-- == wl_ingest ==
-- Store a batch of logs of ONE partition, atomically and idempotently.
local INGEST_KEYS = {
  head = positions{'feed', 'attempt'},
  day = positions{'fleet_index', 'aggregates', 'active_users', 'bodies'},
  group = positions{'user_index'},
}
local INGEST_ARGS = {
  head = positions{'minid', 'retry', 'days', 'groups'},
  day = positions{'expire_at'},
  group = positions{'day', 'user', 'count'},
  log = positions{'event_id', 'body'},
}
--
-- The logs come grouped by (user, UTC day); `attempt` is this attempt's answer key
-- (keys.attempt); every key carries the partition's hash tag (one slot). `minid` bounds
-- the feed's trim, `retry` is 1 when an earlier attempt of this same call may have run,
-- a day's `expire_at` is when its keys expire, a group names its day (1-based), its user
-- and how many of the following logs are its own. A log is its event id and its compact
-- body; the time, type and figures are read from the body's head (schema.BODY_FIELDS).
--
-- The user-day index is also the idempotency set: a log is stored only when its id is not
-- in it yet (ZADD NX for one log, ZMSCORE then one ZADD for more); only then are the body,
-- the fleet index, the aggregates, the active users and the feed updated, so a retried
-- batch counts nothing twice. The body is stored once, in the partition-day's bodies hash
-- under "<user> <event_id>" (keys.ref); the fleet index and the feed hold that reference.
-- One command per key per call: the bodies (HSET), the indexes (ZADD), the active users
-- (SADD), the partition-day's aggregates hash (HMGET, then one HSET of the new values:
-- exact integer sums, the heart-rate max), which holds the partition's figures per activity
-- type (field '<type code>') and each user's (field '<user> <type code>'): one hash for
-- both, so a new user-day opens one key (its index), not two.
-- The partition-day's keys get EXPIREAT only when their expiry must move: the aggregates
-- hash keeps the expire-at they were given (EXPIRES), read and written by the same
-- HMGET/HSET. A user-day index gets EXPIREAT at every call that adds to it.
-- Returns one 1 (created) or 0 (duplicate) per log, in call order, and keeps that answer
-- in `attempt` for KEEP seconds: a retry of the same attempt (the reply or a replica's WAIT
-- was lost) returns the first answer instead of finding its own writes and calling them
-- duplicates.
local function parse(eid, body)
  local ts, t, dur, meters, hr, dk = string.match(
    body, '^%[(%-?%d+),(%d+),%-?%d+,(%-?[%d.]+),(%-?%d+),([^,]+),(%-?%d+),')
  if not ts then return nil end
  return {eid, ts, t, tonumber(dur), tonumber(meters), tonumber(hr), tonumber(dk), body}
end

local function add_log(accs, field, l)
  local a = accs[field]
  if not a then a = {0, 0, 0, 0, 0, 0, 0}; accs[field] = a end
  a[1], a[2], a[3], a[4] = a[1] + 1, a[2] + l[4], a[3] + l[5], a[4] + l[7]
  local hr = l[6]
  if hr then
    a[5], a[6] = a[5] + hr, a[6] + 1
    if hr > a[7] then a[7] = hr end
  end
end

-- An activity type's figures are one field of the aggregates hash ('<type code>' for the
-- partition, '<user> <type code>' for a user), holding
-- the AGGREGATES in order, space-separated integers (heart-rate ones 0 until a log has one).
local PACKED = '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)$'

-- Add `accs` (field -> sums) into an aggregates hash with one HMGET and one HSET (more
-- only past CHUNK fields); return true when the hash's keys must get `expire` (EXPIREAT).
local function write_aggregates(key, accs, expire)
  local fields = {}
  for f in pairs(accs) do fields[#fields + 1] = f end
  local nfields = #fields
  fields[nfields + 1] = EXPIRES
  local cur = {}
  for i = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for k = 1, #part do cur[i + k - 1] = part[k] end
  end
  local set = {}
  for i = 1, nfields do
    local f = fields[i]
    local a, c = accs[f], cur[i]
    if c then
      local n, d, m, k, h, hk, x = string.match(c, PACKED)
      a[1], a[2], a[3], a[4] = a[1] + n, a[2] + d, a[3] + m, a[4] + k
      a[5], a[6] = a[5] + h, a[6] + hk
      x = tonumber(x)
      if x > a[7] then a[7] = x end
    end
    set[#set + 1] = f
    set[#set + 1] = string.format('%d %d %d %d %d %d %d', a[1], a[2], a[3], a[4], a[5], a[6],
                                  a[7])
  end
  local moved = tonumber(cur[nfields + 1]) ~= tonumber(expire)
  if moved then
    set[#set + 1] = EXPIRES
    set[#set + 1] = expire
  end
  variadic('HSET', key, set)
  return moved
end

local function ingest(KEYS, ARGV)
  local KH, KD, KG = INGEST_KEYS.head, INGEST_KEYS.day, INGEST_KEYS.group
  local AH, AD, AG, AL = INGEST_ARGS.head, INGEST_ARGS.day, INGEST_ARGS.group, INGEST_ARGS.log
  local KEEP = 60 -- seconds, keys.ATTEMPT_TTL_S
  local attempt = KEYS[KH.attempt]
  if ARGV[AH.retry] == '1' then
    local first = redis.call('GET', attempt)
    if first then
      local again = {}
      for i = 1, #first do again[i] = string.byte(first, i) - 48 end
      -- Still a write: the caller's WAIT then covers the first attempt's writes too.
      redis.call('EXPIRE', attempt, KEEP)
      return again
    end
  end
  local minid = ARGV[AH.minid]
  local ndays, ngroups = tonumber(ARGV[AH.days]), tonumber(ARGV[AH.groups])
  local gkeys, gargs = KH.n + ndays * KD.n, AH.n + ndays * AD.n
  local function day_key(d, name) return KEYS[KH.n + (d - 1) * KD.n + KD[name]] end
  local function expire_of(d) return ARGV[AH.n + (d - 1) * AD.n + AD.expire_at] end

  -- Every body is read before anything is written: a malformed one fails the whole call.
  local groups, at = {}, gargs + ngroups * AG.n
  for g = 1, ngroups do
    local o = gargs + (g - 1) * AG.n
    local logs = {}
    for j = 1, tonumber(ARGV[o + AG.count]) do
      local l = parse(ARGV[at + AL.event_id], ARGV[at + AL.body])
      if not l then
        return redis.error_reply('wl_ingest: argument ' .. (at + AL.body) .. ' is not a body')
      end
      logs[j], at = l, at + AL.n
    end
    groups[g] = {tonumber(ARGV[o + AG.day]), ARGV[o + AG.user], logs}
  end

  local out, marks, days, feed = {}, {}, {}, {}
  for g = 1, ngroups do
    local d, user, logs = groups[g][1], groups[g][2], groups[g][3]
    local gk = gkeys + (g - 1) * KG.n
    local index = KEYS[gk + KG.user_index]
    local fresh = {}
    if #logs == 1 then
      fresh[1] = redis.call('ZADD', index, 'NX', logs[1][2], logs[1][1]) == 1
    else
      local ids, seen, add = {}, {}, {}
      for j = 1, #logs do ids[j] = logs[j][1] end
      local scores = {}
      for i = 1, #ids, CHUNK do
        local part = redis.call('ZMSCORE', index, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
        for k = 1, #part do scores[i + k - 1] = part[k] end
      end
      for j = 1, #logs do
        local id = ids[j]
        if not scores[j] and not seen[id] then
          seen[id], fresh[j] = true, true
          add[#add + 1] = logs[j][2]
          add[#add + 1] = id
        end
      end
      if #add > 0 then variadic('ZADD', index, add) end
    end
    local D, fresh_logs = days[d], false
    for j = 1, #logs do
      if fresh[j] then
        local l = logs[j]
        if not D then D = {{}, {}, {}, {}}; days[d] = D end
        local ref = user .. ' ' .. l[1]
        local b, ix = D[1], D[2]
        b[#b + 1] = ref
        b[#b + 1] = l[8]
        ix[#ix + 1] = l[2]
        ix[#ix + 1] = ref
        feed[#feed + 1] = l[2] .. ' ' .. ref
        add_log(D[3], l[3], l)
        add_log(D[3], user .. ' ' .. l[3], l)
        fresh_logs = true
        out[#out + 1], marks[#marks + 1] = 1, '1'
      else
        out[#out + 1], marks[#marks + 1] = 0, '0'
      end
    end
    if fresh_logs then
      -- the user-day's index expires with its partition-day (a late log moves both)
      redis.call('EXPIREAT', index, expire_of(d))
      D[4][#D[4] + 1] = user
    end
  end

  for d, D in pairs(days) do
    variadic('HSET', day_key(d, 'bodies'), D[1])
    variadic('ZADD', day_key(d, 'fleet_index'), D[2])
    variadic('SADD', day_key(d, 'active_users'), D[4])
    if write_aggregates(day_key(d, 'aggregates'), D[3], expire_of(d)) then
      for _, name in ipairs{'fleet_index', 'aggregates', 'active_users', 'bodies'} do
        redis.call('EXPIREAT', day_key(d, name), expire_of(d))
      end
    end
  end
  local feed_key = KEYS[KH.feed]
  for i = 1, #feed do
    if i == 1 then -- the trim bound moves with the clock: once per call is enough
      redis.call('XADD', feed_key, 'MINID', '~', minid, '*', 'r', feed[i])
    else
      redis.call('XADD', feed_key, '*', 'r', feed[i])
    end
  end
  -- Always a write, duplicates or not: a retried call's WAIT (after a WAIT that timed out)
  -- then waits for the current replication offset, which covers the first write.
  redis.call('SET', attempt, table.concat(marks), 'EX', KEEP) -- strings: no number formatting
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
local PAGE_KEYS = {day = positions{'index', 'bodies'}}
local PAGE_ARGS = {head = positions{'from_ms', 'to_ms', 'limit', 'after', 'type', 'prefix'}}
local function page(KEYS, ARGV)
  local A, KD = PAGE_ARGS.head, PAGE_KEYS.day
  local lo, hi, limit = ARGV[A.from_ms], tonumber(ARGV[A.to_ms]), tonumber(ARGV[A.limit])
  local after, want, prefix = ARGV[A.after], ARGV[A.type], ARGV[A.prefix]
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

  local days = #KEYS / KD.n
  for d = 1, days do
    local o = (d - 1) * KD.n
    local used_up = scan(d, KEYS[o + KD.index], KEYS[o + KD.bodies], d == 1 and after or '')
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
local BODIES_KEYS = {day = positions{'bodies'}}
local BODIES_ARGS = {item = positions{'key', 'ref'}}
local function bodies(KEYS, ARGV)
  local A, out = BODIES_ARGS.item, {}
  for i = 0, #ARGV - 1, A.n do
    local key = KEYS[(tonumber(ARGV[i + A.key]) - 1) * BODIES_KEYS.day.n + BODIES_KEYS.day.bodies]
    out[#out + 1] = redis.call('HGET', key, ARGV[i + A.ref])
  end
  return out
end
redis.register_function{function_name = 'wl_bodies', callback = bodies, flags = {'no-writes'}}
