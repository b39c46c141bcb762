-- B7: status calls inside one nginx worker (OpenResty), against the fake's constant Tripo V3
-- status (/static/tasks/<id>, served by the fake's own nginx on loopback). taskapi's full
-- client:status (request, cosocket HTTP, JSON decoded by taskapi.core, normalized) against a
-- minimal peer in the same worker: HTTP/1.1 over ngx.socket.tcp with keep-alive, lines read
-- with receive("*l"), cjson.decode, and the same normalization. Sequentially (one light
-- thread) and with 64 light threads. Rates are wall clock; CPU per call is the worker's own
-- CPU time (clock_gettime(CLOCK_PROCESS_CPUTIME_ID)) over the calls.
-- Also (information): what the libcurl driver (the timer that steps downloads and uploads)
-- costs the worker: its CPU while idle with no download (the driver does not run) and with
-- one download trickling at 200 KB/s; API calls never start it.
local L = require "bench.lib"

local SEQ_CALLS = tonumber(os.getenv("BENCH_B7_CALLS")) or 10000
local CONC_CALLS = tonumber(os.getenv("BENCH_B7_CONC_CALLS")) or 30000
local ROUNDS = 3

-- The measuring nginx's handler (runs inside the worker): /b7?who=taskapi|peer&n=&c=&base=
local HANDLER = [=[
local ffi = require "ffi"
pcall(ffi.cdef, "typedef struct { long tv_sec; long tv_nsec; } b7_timespec; int clock_gettime(int, b7_timespec *);")
local ts = ffi.new("b7_timespec")
local function cpu()
  ffi.C.clock_gettime(2, ts) -- CLOCK_PROCESS_CPUTIME_ID
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local cjson = require "cjson"
local provider = require "taskapi.api.provider"
local tripo = require "taskapi.providers.tripo"
local ID, KEY = "7f3a9c1e-0000-4000-a000-000000000000", "test-key"

local clients = {}
local function taskapi_call(base)
  local c = clients[base]
  if not c then
    c = assert(require("taskapi").new { provider = "tripo", api_key = KEY, base_url = base .. "/static", min_interval = 0 })
    clients[base] = c
  end
  local t, err = c:status(ID)
  if not t then error(tostring(err)) end
  return t
end

local function peer_call(base)
  local host, port = base:match("^http://([^:/]+):(%d+)")
  port = tonumber(port)
  local sock = ngx.socket.tcp()
  sock:settimeouts(10000, 30000, 30000)
  assert(sock:connect(host, port, { pool_size = 128 }))
  assert(sock:send("GET /static/tasks/" .. ID .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port ..
    "\r\nAuthorization: Bearer " .. KEY .. "\r\nAccept: application/json\r\nUser-Agent: peer\r\n\r\n"))
  local line = assert(sock:receive("*l"))
  local status = tonumber(line:match("^HTTP/1%.%d (%d+)"))
  local headers = {}
  while true do
    local l = assert(sock:receive("*l"))
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  local body = assert(sock:receive(tonumber(headers["content-length"])))
  sock:setkeepalive(60000, 128)
  assert(status == 200)
  local doc = cjson.decode(body)
  return provider.task(tripo, doc.data, ID, headers["x-tripo-trace-id"], cjson.null)
end

local M = {}

-- n calls of call(base) in c light threads; returns calls/s and CPU us per call
local function measure(call, base, n, c)
  local per = math.floor(n / c)
  local function worker() for _ = 1, per do call(base) end end
  ngx.update_time()
  local t0, c0 = ngx.now(), cpu()
  if c == 1 then
    worker()
  else
    local ths = {}
    for i = 1, c do ths[i] = ngx.thread.spawn(worker) end
    for i = 1, c do
      local ok, err = ngx.thread.wait(ths[i])
      if not ok then error(err) end
    end
  end
  ngx.update_time()
  local wall, used = ngx.now() - t0, cpu() - c0
  return per * c / wall, used / (per * c) * 1e6
end

local function median(xs)
  table.sort(xs)
  local k = #xs
  return k % 2 == 1 and xs[(k + 1) / 2] or (xs[k / 2] + xs[k / 2 + 1]) / 2
end

-- who = "both": `rounds` alternations of n / rounds calls of each (taskapi first in odd
-- rounds, the peer first in even ones), medians of the rounds; who = "taskapi": taskapi alone.
local function run(a)
  local n, c, rounds = tonumber(a.n), tonumber(a.c), tonumber(a.rounds) or 20
  local sides = a.who == "both" and { { "taskapi", taskapi_call }, { "peer", peer_call } } or { { "taskapi", taskapi_call } }
  local got = {}
  for _, side in ipairs(sides) do
    for _ = 1, 200 do side[2](a.base) end
    got[side[1]] = { rate = {}, cpu = {} }
  end
  for round = 1, rounds do
    for k = 1, #sides do
      -- taskapi first in odd rounds, the peer first in even ones
      local side = sides[round % 2 == 1 and k or #sides + 1 - k]
      local r, us = measure(side[2], a.base, math.floor(n / rounds), c)
      table.insert(got[side[1]].rate, r)
      table.insert(got[side[1]].cpu, us)
    end
  end
  local out = {}
  for name, g in pairs(got) do
    out[#out + 1] = string.format("%s_rate=%.1f %s_cpu_us=%.2f", name, median(g.rate), name, median(g.cpu))
  end
  return table.concat(out, " ")
end

function M.handle()
  local ok, line = pcall(run, ngx.req.get_uri_args())
  if not ok then
    ngx.status = 500
    ngx.say(tostring(line))
    return
  end
  ngx.say("RESULT ", line, " driving=", tostring(require("taskapi.run.ngx").driving()))
end

-- the worker's CPU over s seconds while it only sleeps (and the libcurl driver does whatever
-- it does): ms per s
function M.idle()
  local secs = tonumber(ngx.var.arg_s) or 2
  local c0 = cpu()
  ngx.sleep(secs)
  ngx.say(string.format("RESULT cpu_ms_per_s=%.3f driving=%s", (cpu() - c0) / secs * 1000,
    tostring(require("taskapi.run.ngx").driving())))
end

-- a download on the libcurl driver, trickling for the rest of the run
function M.trickle()
  local a = ngx.req.get_uri_args()
  local url, path = a.url, a.path
  local ok, err = ngx.timer.at(0, function()
    local engine = require "taskapi.run.ngx"
    local res, terr = engine.transfer { url = url, path = path, part = path .. ".part", timeout = 3600 }
    ngx.log(ngx.WARN, "b7 trickle download ended: ", tostring(res and res.status), " ", tostring(terr))
  end)
  ngx.say(ok and "started" or tostring(err))
end

return M
]=]

local M = { name = "B7" }

local function get(url)
  return L.sh("curl -s -m 600 " .. string.format("%q", url))
end

function M.run(env)
  local nginx = require "taskapi.fake.process"
  local dir = L.sh1("mktemp -d /tmp/taskapi-b7.XXXXXX")
  local f = assert(io.open(dir .. "/b7_handler.lua", "w"))
  f:write(HANDLER)
  f:close()
  -- the trickling file host: a plain nginx (another process), limit_rate 200k
  os.execute("mkdir -p " .. dir .. "/files && head -c 209715200 /dev/zero > " .. dir .. "/files/big.bin")
  local files = assert(nginx.start { ttl = 900, locations =
    "    location /trickle/ { alias " .. dir .. "/files/; limit_rate 200k; }" })
  local worker = assert(nginx.start { ttl = 900,
    http = '  init_by_lua_block { require "taskapi"; package.loaded.b7_handler = dofile("' .. dir ..
      '/b7_handler.lua") }',
    locations = "    location = /b7 { content_by_lua_block { require('b7_handler').handle() } }\n" ..
      "    location = /idle { content_by_lua_block { require('b7_handler').idle() } }\n" ..
      "    location = /trickle { content_by_lua_block { require('b7_handler').trickle() } }" })
  local function one(who, n, c)
    return function()
      local out = get(worker.url .. "/b7?who=" .. who .. "&n=" .. n .. "&c=" .. c .. "&base=" .. env.url)
      return L.result(out, who)
    end
  end
  local ok, res = pcall(function()
    local seq = L.alternate(ROUNDS, { { "r", one("both", SEQ_CALLS, 1) } }).r
    local conc = L.alternate(ROUNDS, { { "r", one("both", CONC_CALLS, 64) } }).r
    -- the libcurl driver: idle (no download: it does not run), then with one download
    -- trickling at 200 KB/s (limit_rate of another nginx)
    local idle = L.alternate(ROUNDS, { { "r", function() return L.result(get(worker.url .. "/idle?s=2"), "idle") end } }).r
    local idle_driving = L.result(get(worker.url .. "/idle?s=0"), "i").driving
    local started = get(worker.url .. "/trickle?url=" .. files.url .. "/trickle/big.bin&path=" .. dir .. "/down.bin")
    assert(started:find("started"), started)
    os.execute("sleep 1")
    local dl = L.alternate(ROUNDS, { { "r", function() return L.result(get(worker.url .. "/idle?s=2"), "idle") end } }).r
    return { seq = seq, conc = conc, idle = idle, dl = dl, idle_driving = idle_driving }
  end)
  worker.stop()
  files.stop()
  os.execute("rm -rf " .. dir)
  if not ok then error(res, 0) end
  local rows = {}
  local function row(label, r, target)
    local ratio = r.taskapi_rate / r.peer_rate
    rows[#rows + 1] = L.row(label, L.fmt(r.taskapi_rate) .. "/s, " .. L.fmt(r.taskapi_cpu_us, 1) .. " us CPU/call",
      "cosocket + cjson peer " .. L.fmt(r.peer_rate) .. "/s, " .. L.fmt(r.peer_cpu_us, 1) .. " us CPU/call",
      L.fmt(ratio, 2) .. " x the peer's rate (CPU/call " .. L.fmt(r.taskapi_cpu_us / r.peer_cpu_us, 2) .. " x)", target,
      ratio >= 0.9)
  end
  row("B7 OpenResty sequential `client:status` in one worker (" .. L.fmt(SEQ_CALLS) .. " calls)", res.seq,
    ">= 0.90 x the peer's rate")
  row("B7 OpenResty 64 light threads in one worker (" .. L.fmt(CONC_CALLS) .. " calls)", res.conc, ">= 0.90 x the peer's rate")
  rows[#rows + 1] = L.row("B7 the libcurl driver (downloads and uploads only): worker CPU while it waits",
    "one 200 KB/s download in flight: " .. L.fmt(res.dl.cpu_ms_per_s, 1) .. " ms CPU/s (" ..
      L.fmt(res.dl.cpu_ms_per_s / 10, 2) .. " % of a core)",
    "no download (after the API calls above): " .. L.fmt(res.idle.cpu_ms_per_s, 2) .. " ms CPU/s, driver running: " ..
      tostring(res.idle_driving), "", "(information)")
  return rows
end

return M
