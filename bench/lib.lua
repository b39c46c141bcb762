-- bench/lib.lua: what every benchmark case shares: clock, medians, memory and CPU from /proc,
-- shell commands, child processes (each case file is also its own child script: `<lua>
-- bench/<case>.lua child <mode> ...` prints one `RESULT k=v ...` line), alternating rounds of
-- taskapi and its peers, the fake provider, and the rows of the results table.
local core = require "taskapi.core"

local L = {}

L.now = core.now
L.ID = "7f3a9c1e-0000-4000-a000-000000000000" -- the id in the fake's constant status body
L.KEY = "test-key"
-- The path every peer reads: the V3 status document client:status reads (L.static_client's
-- base_url .. "/tasks/<id>"), so taskapi and its peers decode and normalize the same body.
L.STATUS_PATH = "/static/tasks/" .. L.ID

--- Calls per second of call(): `warm` calls first (200), then n timed ones.
function L.rate(call, n, warm)
  for _ = 1, warm or 200 do call() end
  local t0 = L.now()
  for _ = 1, n do call() end
  return n / (L.now() - t0)
end

function L.median(xs) return L.pct(xs, 50) end

function L.pct(xs, p)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  if #s == 0 then return nil end
  local r = (p / 100) * (#s - 1) + 1
  local lo = math.floor(r)
  local hi = math.min(lo + 1, #s)
  return s[lo] + (s[hi] - s[lo]) * (r - lo)
end

-- /proc/self/status fields in KiB (VmRSS, VmHWM)
function L.mem_kib(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

-- process CPU time in seconds (utime + stime of /proc/self/stat; clock ticks of 1/100 s)
function L.cpu()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("*a")
  f:close()
  local rest = s:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- after "pid (comm)": state is field 3, utime 14, stime 15 (1-based from pid)
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

function L.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

function L.sh1(cmd) return (L.sh(cmd):gsub("%s+$", "")) end

-- A child's one line of results, `RESULT k=v k=v`, as a table (numbers where they parse).
function L.result(out, cmd)
  local line = out:match("RESULT ([^\n]*)")
  if not line then error("no RESULT from: " .. cmd .. "\n" .. out, 0) end
  local r = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
  return r
end

function L.emit(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(t[k]) end
  io.stdout:write("RESULT ", table.concat(parts, " "), "\n")
  io.stdout:flush()
end

-- Runs bench/<case>.lua as a child under runtime ("lua5.4" | "luajit"), prefix (e.g.
-- valgrind) in front; returns its RESULT table.
function L.child(runtime, case, args, prefix)
  local cmd = (prefix and prefix .. " " or "") .. runtime .. " bench/" .. case .. ".lua child " .. table.concat(args, " ")
  return L.result(L.sh(cmd .. " 2>&1"), cmd)
end

-- Runs a shell command under /usr/bin/time: wall seconds (our clock) and peak RSS in KiB.
function L.timed(cmd)
  local tf = os.tmpname()
  local t0 = L.now()
  local ok = os.execute("/usr/bin/time -f %M -o " .. tf .. " " .. cmd)
  local wall = L.now() - t0
  local f = io.open(tf)
  local rss = f and tonumber((f:read("*a"):match("(%d+)%s*$"))) or nil
  if f then f:close() end
  os.remove(tf)
  if not (ok == true or ok == 0) then error("failed: " .. cmd, 0) end
  return wall, rss
end

-- Runs each named measure alternately, `rounds` times; measures[i] = {name, fn} where fn()
-- returns a table of numbers. Returns name -> metric -> median (and name -> metric -> list).
function L.alternate(rounds, measures)
  local all = {}
  for _, m in ipairs(measures) do all[m[1]] = {} end
  for _ = 1, rounds do
    for _, m in ipairs(measures) do
      local r = m[2]()
      for k, v in pairs(r) do
        if type(v) == "number" then
          all[m[1]][k] = all[m[1]][k] or {}
          table.insert(all[m[1]][k], v)
        end
      end
    end
  end
  local med = {}
  for name, metrics in pairs(all) do
    med[name] = {}
    for k, xs in pairs(metrics) do med[name][k] = L.median(xs) end
  end
  return med, all
end

-- wrk's requests/s on url with c connections for secs seconds (one thread)
function L.wrk(url, c, secs)
  local out = L.sh(string.format("wrk -t1 -c%d -d%ds %s 2>&1", c, secs, url))
  local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  if not rps then error("wrk: " .. out, 0) end
  return rps
end

-- The nginx fake provider (one worker) for the whole run.
function L.start_fake(ttl)
  return assert(require("taskapi.fake.server").start { ttl = ttl or 900 })
end

-- A Tripo V3 client of the fake's constant status (`/static/tasks/<id>`): min_interval 0.
function L.static_client(url)
  return assert(require("taskapi").new {
    provider = "tripo", api_key = L.KEY, base_url = url .. "/static", min_interval = 0,
  })
end

--- The Tripo V3 definition without its batch read (a copy): one GET per task and poll.
function L.tripo_without_batch()
  local d = {}
  for k, v in pairs(require("taskapi.providers.tripo")) do d[k] = v end
  d.batch = nil
  return d
end

-- A Tripo V3 client of the fake's model (min_interval 0: the fake's tasks are short).
-- batch = false: without the batch read (one GET per task and poll).
function L.fake_client(url, batch)
  return assert(require("taskapi").new {
    provider = batch == false and L.tripo_without_batch() or "tripo", api_key = L.KEY,
    base_url = url .. "/tripo/v3", min_interval = 0,
  })
end

-- Scripts n tasks on the fake (POST /_fake/tasks); spec(i) gives each task's spec table.
-- Returns the array of ids.
function L.create_tasks(url, n, spec)
  local json = require "taskapi.json"
  local m = require("taskapi.core").multi()
  local ids = {}
  for i = 1, n do
    local res = assert(m:request { method = "POST", url = url .. "/_fake/tasks", json = true,
      headers = { "Content-Type: application/json" }, body = assert(json.encode(spec(i))) })
    ids[i] = assert(res.json and res.json.id, res.body)
  end
  m:close()
  return ids
end

-- Counts every transfer the library makes from now on (API calls, retries, downloads);
-- returns a function giving the count so far, and the task polls among them (a status GET
-- is one, a batch read of n tasks n: counted from wait's calls of client:_status_many, one
-- request each, without decoding anything).
function L.count_requests()
  local backend = require "taskapi.run.backend"
  local Client = require("taskapi.client").Client
  local n, orig = 0, backend.request
  local batches, batched, many = 0, 0, Client._status_many
  backend.request = function(...)
    n = n + 1
    return orig(...)
  end
  Client._status_many = function(self, sids, ...)
    batches, batched = batches + 1, batched + #sids
    return many(self, sids, ...)
  end
  return function() return n, n - batches + batched end
end

-- The peers' normalization: the same normalized task as client:status builds.
function L.normalize(data, trace, null)
  local provider = require "taskapi.api.provider"
  return provider.task(require "taskapi.providers.tripo", data, L.ID, trace, null)
end

-- Numbers for the table.
function L.fmt(n, digits)
  if n == nil then return "-" end
  if digits then return string.format("%." .. digits .. "f", n) end
  local s = string.format("%.0f", n)
  local int, frac = s, ""
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return int .. frac
end

-- One row of the results table: case, taskapi, peers, ratio, target, met (true/false/nil).
function L.row(case, taskapi, peers, ratio, target, met)
  return { case = case, taskapi = taskapi, peers = peers, ratio = ratio or "", target = target or "",
    met = met == nil and "" or (met and "yes" or "**no**") }
end

return L
