-- GET paths listed one per line in a file, in turn (per-user queries, reports).
-- args: bearer token, paths file.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
local common = require("common")
setup, done = common.setup, common.done

local headers, paths
local n = 0

function init(args)
  headers = {["Authorization"] = "Bearer " .. args[1]}
  paths = {}
  for line in io.lines(args[2]) do paths[#paths + 1] = line end
  n = tid * 101
end

function request()
  n = n + 1
  return wrk.format("GET", paths[n % #paths + 1], headers)
end
