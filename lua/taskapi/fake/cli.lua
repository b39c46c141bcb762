-- taskapi.fake.cli: start and stop the nginx-hosted fake provider from a shell
-- (`taskapi fake ...`, or `lua5.4 lua/taskapi/fake/cli.lua ...` from a checkout).
--
--   start [--ttl S] [--key KEY]... [--link-ttl S] [--state FILE]
--       starts one (or finds the one this folder's state file names still running) and
--       prints its URL; it stops by itself after --ttl seconds (default 3600)
--   stop [--state FILE]       stops it (nginx and its watchdog)
--   status [--state FILE]     prints the URL, exit 0; exit 1 when none runs; says on stderr
--                             what it found
--
-- The state file is per user and per folder: $TMPDIR/taskapi-fake-<uid>/<folder>-<hash>.state
-- (a folder only that user can enter), so two users, or two checkouts, never share a server;
-- --state FILE names another. It holds "url dir pid started ttl keys" on one line (keys: a
-- checksum of the --key values, never a key). A server is reused only if its nginx still runs
-- as this user.
-- As a module: require("taskapi.fake.cli").main({"start", "--ttl", "60"}) -> exit code.
local M = {}

local function script_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/lua/taskapi/fake/cli%.lua$")
  if dir then return dir ~= "" and dir or "." end
  if src == "lua/taskapi/fake/cli.lua" then return "." end
  return nil
end

do -- find the other modules when run as a plain script
  local root = script_root()
  if root then
    package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
  end
end

local files = require "taskapi.util.files"
local sh, q = files.sh, files.quote

local DEFAULT_TTL = 3600
M.DEFAULT_TTL = DEFAULT_TTL
local DEFAULT_KEYS = { "test-key", "other-key" }

local function say(...)
  io.stderr:write("taskapi fake: ", ...)
  io.stderr:write("\n")
end

-- A 32-bit checksum (djb2), the same on both runtimes: every step stays below 2^38, exact in
-- LuaJIT's doubles as in Lua 5.4's integers.
local function hash(s)
  local h = 5381
  for i = 1, #s do
    h = (h * 33 + s:byte(i)) % 4294967296
  end
  return string.format("%08x", h)
end

local function uid() return sh("id -u") end

--- The default state file of this user and this folder (made private on first use); or nil, why.
function M.default_state(cwd)
  local me = uid()
  local base = (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "")
  if base == "" then base = "/tmp" end
  local dir = base .. "/taskapi-fake-" .. me
  os.execute("mkdir -p -m 700 " .. q(dir) .. " 2>/dev/null")
  -- refuse a folder someone else made (or a link to one)
  local owner = sh("[ -d " .. q(dir) .. " ] && [ ! -L " .. q(dir) .. " ] && stat -c %u " .. q(dir))
  if owner ~= me then return nil, dir .. " is not a folder of yours: pass --state FILE" end
  cwd = cwd or sh("pwd -P") or "."
  local name = (cwd:match("([^/]+)/*$") or "root"):gsub("[^%w._-]", "_"):sub(1, 40)
  return dir .. "/" .. name .. "-" .. hash(cwd) .. ".state"
end

local function read_state(path)
  local s = files.read(path)
  if not s then return nil end
  local url, dir, pid, started, ttl, keys = s:match("^(%S+)%s+(%S+)%s*(%d*)%s*(%d*)%s*(%d*)%s*(%x*)")
  if not url then return nil end
  return { url = url, dir = dir, pid = tonumber(pid), started = tonumber(started), ttl = tonumber(ttl),
    keys = keys ~= "" and keys or nil }
end

-- The pid of the nginx the state names, when it still runs as this user; or nil, why.
local function alive(st)
  if not st or not st.dir then return nil, "its state file is unreadable" end
  local pid = (files.read(st.dir .. "/nginx.pid") or ""):match("%d+")
  if not pid then return nil, "its folder " .. st.dir .. " has no nginx.pid (stopped, or its --ttl ran out)" end
  local status = files.read("/proc/" .. pid .. "/status")
  local cmd = files.read("/proc/" .. pid .. "/cmdline") or ""
  if not status or not cmd:find("nginx", 1, true) then return nil, "its nginx (pid " .. pid .. ") is gone" end
  local owner = status:match("\nUid:%s*(%d+)")
  if owner ~= uid() then return nil, "its nginx (pid " .. pid .. ") runs as another user (uid " .. tostring(owner) .. ")" end
  return tonumber(pid)
end

local function left(st)
  if not st.started or not st.ttl then return "" end
  local s = st.started + st.ttl - os.time()
  return s > 0 and ", stops by itself in " .. s .. " s" or ", its --ttl has run out"
end

local USAGE = [[
usage: taskapi fake start [--ttl S] [--key KEY]... [--link-ttl S] [--state FILE]
       taskapi fake stop [--state FILE]
       taskapi fake status [--state FILE]

The local fake provider (Tripo and SellerPic) on 127.0.0.1, a free port. `start` prints its
URL (Tripo: URL/tripo/v2/openapi, SellerPic: URL/sellerpic); the keys test-key and other-key
work.
  --ttl S        it stops by itself after S seconds (default 3600)
  --key KEY      accept KEY too (repeatable)
  --link-ttl S   seconds a file link stays valid (default 300)
  --state FILE   the state file (default: one per user and folder, under $TMPDIR)
`start` in a folder whose fake still runs prints that one's URL; `stop` stops it (nginx and
its watchdog); `status` prints the URL (exit 0) or exit 1, and says on stderr what it found.]]
M.USAGE = USAGE

local OPTS = { ttl = "number", ["link-ttl"] = "number", state = "string", key = "many" }
local FOR = { start = { ttl = true, ["link-ttl"] = true, state = true, key = true }, stop = { state = true },
  status = { state = true } }

local function parse(args)
  local o = { cmd = args[1], key = {} }
  if not FOR[o.cmd or ""] then
    return nil, o.cmd and "unknown command '" .. tostring(o.cmd) .. "' (start, stop or status)" or "missing command (start, stop or status)"
  end
  local i = 2
  while i <= #args do
    local a = args[i]
    local name, value = tostring(a):match("^%-%-([%w-]+)=(.*)$")
    name = name or tostring(a):match("^%-%-([%w-]+)$")
    if not name or not OPTS[name] then return nil, "unknown option " .. tostring(a) end
    if not FOR[o.cmd][name] then return nil, "fake " .. o.cmd .. " takes no --" .. name end
    if value == nil then
      i = i + 1
      value = args[i]
      if value == nil then return nil, "--" .. name .. " needs a value" end
    end
    if OPTS[name] == "number" then
      local n = tonumber(value)
      if not n or n ~= n or n <= 0 or n == math.huge or n % 1 ~= 0 then
        return nil, "--" .. name .. " needs a whole number of seconds, got '" .. value .. "'"
      end
      o[name] = n
    elseif OPTS[name] == "many" then
      if value == "" or value:find("[%c%s]") then return nil, "--key needs a key without white space" end
      o.key[#o.key + 1] = value
    else
      o[name] = value
    end
    i = i + 1
  end
  return o
end

local function key_sum(keys)
  if #keys == 0 then return nil end
  local sorted = {}
  for i, k in ipairs(keys) do sorted[i] = k end
  table.sort(sorted)
  return hash(table.concat(sorted, "\n"))
end

local function start(o)
  local st = read_state(o.state)
  if st and alive(st) then
    if st.keys ~= key_sum(o.key) then
      say("the fake of this folder (", st.url, ") runs with other --key values: `taskapi fake stop` first")
      return 1
    end
    say("already running (state ", o.state, left(st), ")")
    print(st.url)
    return 0
  end
  local keys = {}
  for _, k in ipairs(DEFAULT_KEYS) do keys[k] = true end
  for _, k in ipairs(o.key) do keys[k] = true end
  local server = require "taskapi.fake.server"
  local ttl = o.ttl or DEFAULT_TTL
  local h, serr = server.start({ ttl = ttl, link_ttl = o["link-ttl"], keys = keys })
  if not h then say(tostring(serr)) return 1 end
  local line = table.concat({ h.url, h.dir, tostring(h.pid or ""), tostring(os.time()), tostring(ttl),
    key_sum(o.key) or "" }, " ")
  local f = io.open(o.state, "wb")
  if not f then
    h.stop()
    say("cannot write the state file ", o.state)
    return 1
  end
  f:write(line, "\n")
  f:close()
  say("started, pid ", tostring(h.pid), ", stops by itself in ", tostring(ttl), " s (state ", o.state, ")")
  print(h.url)
  return 0
end

function M.main(args)
  args = args or {}
  if args[1] == "--help" or args[1] == "-h" or args[1] == "help" then
    io.stdout:write(USAGE, "\n")
    return 0
  end
  local o, err = parse(args)
  if not o then
    io.stderr:write("taskapi fake: ", err, "\nsee taskapi fake --help\n")
    return 2
  end
  if not o.state then
    local why
    o.state, why = M.default_state()
    if not o.state then say(why) return 1 end
  end
  if o.cmd == "start" then return start(o) end
  local st = read_state(o.state)
  if not st then
    say("not running (no state file ", o.state, ")")
    return o.cmd == "stop" and 0 or 1
  end
  local pid, why = alive(st)
  if o.cmd == "status" then
    if not pid then
      say("not running: the state file ", o.state, " names ", st.url, ", but ", why)
      return 1
    end
    say("running, pid ", tostring(pid), left(st), " (state ", o.state, ")")
    print(st.url)
    return 0
  end
  -- stop
  if pid or why:find("no nginx.pid", 1, true) or why:find("is gone", 1, true) then
    require("taskapi.fake.process").stop(st.dir, true) -- also ends its watchdog
    os.remove(o.state)
    say(pid and "stopped " .. st.url or "was not running (" .. why .. "); state file removed")
    return 0
  end
  say("not stopped: ", why)
  return 1
end

if arg and arg[0] and arg[0]:match("cli%.lua$") and not package.loaded["taskapi.fake.cli"] then
  os.exit(M.main(arg))
end

return M
