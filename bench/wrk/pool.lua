-- POST bodies prepared by the harness (e.g. gzip- or zstd-compressed batches), in turn.
-- args: path, bearer token, pool file, Content-Encoding ("identity" for none).
-- The pool file is "<n> <size> <size> ...\n" then the n bodies back to back; the harness
-- makes it large enough that no body is sent twice in a run (no duplicate writes).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
setup, done = common.setup, common.done

local path, headers, bodies
local n = 0

function init(args)
  path = args[1]
  headers = {["Authorization"] = "Bearer " .. args[2], ["Content-Type"] = "application/json"}
  if args[4] ~= "identity" then headers["Content-Encoding"] = args[4] end
  local f = assert(io.open(args[3], "rb"))
  local sizes = {}
  for s in f:read("*l"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(s) end
  bodies = {}
  for i = 2, #sizes do bodies[i - 1] = f:read(sizes[i]) end
  f:close()
  n = tid * 7919  -- threads start far apart in the pool
end

function request()
  n = n + 1
  return wrk.format("POST", path, headers, bodies[n % #bodies + 1])
end
