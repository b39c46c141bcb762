-- B1: sequential `status` calls on one kept-alive connection against the fake's constant
-- Tripo status. taskapi's full client:status (request, decode, normalize) and the C module's
-- raw multi:request, against wrk -t1 -c1 (the ceiling), luasocket + lua-cjson (Lua 5.4) and
-- Debian's lua-curl + lua-cjson (LuaJIT), each doing the same request, decode and normalize.
local L = require "bench.lib"

local CALLS = tonumber(os.getenv("BENCH_B1_CALLS")) or 20000
local ROUNDS = 3

local modes = {}

function modes.taskapi(url, n, warm)
  local c = L.static_client(url)
  return L.rate(function() assert(c:status(L.ID)) end, n, warm)
end

function modes.core(url, n, warm)
  local m = require("taskapi.core").multi()
  local req = { url = url .. L.STATUS_PATH, json = true,
    headers = { "Authorization: Bearer " .. L.KEY, "Accept: application/json" } }
  return L.rate(function() assert(m:request(req).json) end, n, warm)
end

-- luasocket: HTTP/1.1 keep-alive by hand (status line, headers, Content-Length body).
function modes.luasocket(url, n, warm)
  local socket = require "socket"
  local cjson = require "cjson"
  local host, port = url:match("^http://([^:/]+):(%d+)")
  local s = assert(socket.tcp())
  assert(s:connect(host, tonumber(port)))
  s:setoption("tcp-nodelay", true)
  local req = "GET " .. L.STATUS_PATH .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port ..
    "\r\nAuthorization: Bearer " .. L.KEY .. "\r\nAccept: application/json\r\nUser-Agent: bench\r\n\r\n"
  local function call()
    assert(s:send(req))
    local status = tonumber(assert(s:receive("*l")):match("^HTTP/1%.%d (%d+)"))
    local headers = {}
    while true do
      local line = assert(s:receive("*l"))
      if line == "" then break end
      local k, v = line:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
    local body = assert(s:receive(tonumber(headers["content-length"])))
    assert(status == 200)
    local doc = cjson.decode(body)
    return L.normalize(doc.data, headers["x-tripo-trace-id"], cjson.null)
  end
  return L.rate(call, n, warm)
end

-- Debian's lua-curl (module "curl", LuaJIT): one easy handle reused, so the connection stays.
function modes.luacurl(url, n, warm)
  local curl = require "curl"
  local cjson = require "cjson"
  local parts, headers, status = {}, {}, nil
  local e = curl.easy_init()
  e:setopt(curl.OPT_URL, url .. L.STATUS_PATH)
  e:setopt(curl.OPT_HTTPHEADER, { "Authorization: Bearer " .. L.KEY, "Accept: application/json" })
  e:setopt(curl.OPT_WRITEFUNCTION, function(s, len) parts[#parts + 1] = s return len end)
  e:setopt(curl.OPT_HEADERFUNCTION, function(line, len)
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v
    else status = tonumber(line:match("^HTTP/%S+ (%d+)")) or status end
    return len
  end)
  local function call()
    parts, headers = {}, {}
    assert(e:perform())
    assert(status == 200)
    local doc = cjson.decode(table.concat(parts))
    return L.normalize(doc.data, headers["x-tripo-trace-id"], cjson.null)
  end
  return L.rate(call, n, warm)
end

local mode = ...
if mode == "child" then
  local _, which, url, n = ...
  L.emit { rate = modes[which](url, tonumber(n)) }
  return
end

local M = { name = "B1", modes = modes }

function M.run(env)
  local url = env.url
  local function kid(runtime, which)
    return function() return L.child(runtime, "b1_sequential", { which, url, CALLS }) end
  end
  local med = L.alternate(ROUNDS, {
    { "wrk", function() return { rate = L.wrk(url .. L.STATUS_PATH, 1, 3) } end },
    { "taskapi", kid("lua5.4", "taskapi") },
    { "core", kid("lua5.4", "core") },
    { "luasocket", kid("lua5.4", "luasocket") },
    { "luacurl", kid("luajit", "luacurl") },
  })
  local w = med.wrk.rate
  local t, c = med.taskapi.rate, med.core.rate
  local f = function(x) return L.fmt(x) .. "/s" end
  return {
    L.row("B1 sequential `client:status`, 1 connection, " .. L.fmt(CALLS) .. " calls", f(t),
      "wrk -t1 -c1 " .. f(w) .. "; luasocket+cjson (5.4) " .. f(med.luasocket.rate) ..
      "; lua-curl+cjson (LuaJIT) " .. f(med.luacurl.rate),
      L.fmt(t / w, 2) .. " x wrk", ">= 0.80 x wrk", t / w >= 0.8),
    L.row("B1 raw `multi:request` (C module, JSON decoded in C)", f(c), "wrk -t1 -c1 " .. f(w),
      L.fmt(c / w, 2) .. " x wrk", "(information)"),
  }
end

return M
