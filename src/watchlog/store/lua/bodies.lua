-- Look up bodies in a partition's fleet indexes by (event time, event id).
--
-- KEYS: the fleet index keys (one per day) of ONE partition.
-- ARGV: triples (key index, ts, event_id). Bodies at the same millisecond are few; the one
-- ending in the event id is the event's. Returns one body, or false when gone (retention).
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
