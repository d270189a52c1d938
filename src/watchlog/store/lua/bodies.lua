-- Look up bodies in a partition's fleet indexes by (score, event id).
--
-- KEYS: the fleet index keys (one per day) of ONE partition.
-- ARGV: triples (key index, score, event_id). A score is nearly unique (see writer.score);
-- of the bodies at it, the one ending in the event id is the event's.
-- Returns one body per triple, or false when it is gone (retention).
local out = {}
for i = 1, #ARGV, 3 do
  local tail = '"' .. ARGV[i + 2] .. '"]'
  local found = false
  local ts = ARGV[i + 1]
  for _, b in ipairs(redis.call('ZRANGE', KEYS[tonumber(ARGV[i])], ts, ts, 'BYSCORE')) do
    if string.sub(b, -#tail) == tail then found = b; break end
  end
  out[#out + 1] = found
end
return out
