-- Look up bodies in a partition's bodies hashes by reference ("<user> <event_id>").
--
-- KEYS: the bodies hash keys (one per day) of ONE partition.
-- ARGV: pairs (key index, reference).
-- Returns one body per pair, or false when it is gone (retention).
local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
end
return out
