-- taskapi.fake.cli: start and stop the nginx-hosted fake provider from a shell.
--
--   lua5.4 lua/taskapi/fake/cli.lua start [--ttl S] [--state PATH] [--link-ttl S]
--       starts it (or finds the one the state file names still running) and prints its URL
--   lua5.4 lua/taskapi/fake/cli.lua stop [--state PATH]
--   lua5.4 lua/taskapi/fake/cli.lua status [--state PATH]    prints the URL, exit 1 if none
--
-- The state file (default $TMPDIR/taskapi-fake.state) holds "url dir pid" on one line.
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

local function default_state()
  return (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "") .. "/taskapi-fake.state"
end

local function read_state(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local url, dir, pid = s:match("^(%S+)%s+(%S+)%s*(%d*)")
  if not url then return nil end
  return { url = url, dir = dir, pid = tonumber(pid) }
end

local function alive(st)
  if not st or not st.dir then return false end
  local f = io.open(st.dir .. "/nginx.pid", "rb")
  if not f then return false end
  local pid = (f:read("*a") or ""):match("%d+")
  f:close()
  if not pid then return false end
  local p = io.open("/proc/" .. pid .. "/stat", "rb")
  if p then p:close() return true end
  return false
end

local function parse(args)
  local o = { cmd = args[1] }
  local i = 2
  while i <= #args do
    local a = args[i]
    if a == "--ttl" then o.ttl = tonumber(args[i + 1]); i = i + 2
    elseif a == "--state" then o.state = args[i + 1]; i = i + 2
    elseif a == "--link-ttl" then o.link_ttl = tonumber(args[i + 1]); i = i + 2
    else return nil, "unknown option " .. tostring(a) end
  end
  o.state = o.state or default_state()
  return o
end

local USAGE = "usage: cli.lua start|stop|status [--ttl S] [--state PATH] [--link-ttl S]"

function M.main(args)
  local o, err = parse(args or {})
  if not o then io.stderr:write(err, "\n", USAGE, "\n") return 2 end
  if o.cmd == "start" then
    local st = read_state(o.state)
    if alive(st) then print(st.url) return 0 end
    local server = require "taskapi.fake.server"
    local h, serr = server.start({ ttl = o.ttl or 3600, link_ttl = o.link_ttl })
    if not h then io.stderr:write("taskapi fake: ", tostring(serr), "\n") return 1 end
    local f = io.open(o.state, "wb")
    if not f then
      h.stop()
      io.stderr:write("taskapi fake: cannot write the state file ", o.state, "\n")
      return 1
    end
    f:write(h.url, " ", h.dir, " ", tostring(h.pid or ""), "\n")
    f:close()
    print(h.url)
    return 0
  elseif o.cmd == "stop" then
    local st = read_state(o.state)
    if not st then io.stderr:write("taskapi fake: not running (no state file ", o.state, ")\n") return 0 end
    require("taskapi.fake.nginx").stop(st.dir, true)
    os.remove(o.state)
    return 0
  elseif o.cmd == "status" then
    local st = read_state(o.state)
    if alive(st) then print(st.url) return 0 end
    return 1
  end
  io.stderr:write(USAGE, "\n")
  return 2
end

if arg and arg[0] and arg[0]:match("cli%.lua$") and not package.loaded["taskapi.fake.cli"] then
  os.exit(M.main(arg))
end

return M
