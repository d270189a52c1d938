-- POST activity logs, every one with a new event_id (so writes are never duplicates).
-- args: path, bearer token, logs per request (1: a JSON object; n: a JSON array),
--       run id (event ids stay unique across runs), base epoch second, users.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
setup, done = common.setup, common.done

local TYPES = {"running", "walking", "cycling", "swimming", "hiking", "yoga"}
local FMT = '{"user_id":%d,"activity_type":"%s","timestamp":"%s","duration":%d,' ..
  '"distance":%.1f,"heart_rate":%d,"calories_burned":%d,' ..
  '"location":{"latitude":37.5,"longitude":-122.3},"device_id":"watch_%d",' ..
  '"activity_status":"completed","event_id":"%s-%d-%d"}'
local path, headers, batch, run, base, users
local n = 0

function init(args)
  path, batch, run = args[1], tonumber(args[3]), args[4]
  base, users = tonumber(args[5]), tonumber(args[6])
  headers = {["Authorization"] = "Bearer " .. args[2],
             ["Content-Type"] = "application/json"}
  math.randomseed(base + tid)
end

local function event(i)
  local u = math.random(users)
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ", base - (n * 7 + i) % 80000)
  return string.format(FMT, u, TYPES[(n + i) % #TYPES + 1], stamp, 600 + i % 3000,
    (i % 200) / 10, 60 + i % 120, 50 + i % 700, u % 50, run, tid, n * batch + i)
end

function request()
  n = n + 1
  local body
  if batch == 1 then
    body = event(0)
  else
    local items = {}
    for i = 1, batch do items[i] = event(i) end
    body = "[" .. table.concat(items, ",") .. "]"
  end
  return wrk.format("POST", path, headers, body)
end
