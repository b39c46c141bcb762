-- spec/support/redis.lua: a private redis-server for a spec. It listens on 127.0.0.1 only, on
-- a free port it finds, in a fresh temporary folder, with `appendonly yes` (so a restart, or
-- a restart after kill -9, keeps what it acknowledged), and a watchdog of its own session
-- that stops it and removes the folder after `ttl` seconds even if the spec dies.
--
--   local rs = require "support.redis"
--   local srv = assert(rs.start { ttl = 300 })   -- in setup()
--   srv.url("jobs")      -> "redis://127.0.0.1:PORT/0?prefix=jobs" (a fresh prefix when nil)
--   srv.halt()           -- SIGTERM: a clean shutdown (the AOF flushed); data kept
--   srv.kill()           -- SIGKILL; data kept (what the AOF had written)
--   srv.restart()        -- halt when running, start again: same port, same folder
--   srv.freeze() / srv.thaw()   -- SIGSTOP / SIGCONT: a server that stops answering
--   srv.stop()           -- in teardown(): the server, the watchdog and the folder
--   srv.port, srv.dir, srv.pid
local files = require "taskapi.util.files"
local process = require "taskapi.fake.process"

local sh, read, write, q = files.sh, files.read, files.write, files.quote

local M = {}

-- Is the process there? A zombie counts as gone once its last thread has exited (redis-server
-- has threads: the main one can be a zombie while another still holds the listening socket).
local function alive(pid)
  if not pid or not files.exists("/proc/" .. pid .. "/stat") then return false end
  if not (read("/proc/" .. pid .. "/stat") or ""):match("^%d+ %b() Z") then return true end
  return sh("ls /proc/" .. pid .. "/task 2>/dev/null | wc -l") ~= "1" and sh("ls /proc/" .. pid .. "/task 2>/dev/null") ~= ""
end

local function wait_gone(pid)
  for _ = 1, 400 do
    if not alive(pid) then return true end
    os.execute("sleep 0.025")
  end
  return false
end

local prefixes = 0

--- Starts redis-server. opts: ttl (seconds before the watchdog stops it; 600), appendfsync
--- ("everysec"; "always", "no"), port (else a free one). Returns the handle or nil, why.
function M.start(opts)
  opts = opts or {}
  if sh("command -v redis-server") == "" then return nil, "redis-server is missing: apt-get install -y redis-server" end
  local dir = sh("mktemp -d /tmp/taskapi-redis.XXXXXX")
  if not dir or dir == "" then return nil, "cannot make a temporary folder" end
  local h = { dir = dir }
  local function conf(port)
    write(dir .. "/redis.conf", table.concat({
      "bind 127.0.0.1", "port " .. port, "protected-mode yes", "daemonize no",
      "dir " .. dir, "pidfile " .. dir .. "/redis.pid", "logfile " .. dir .. "/redis.log",
      "appendonly yes", "appendfsync " .. (opts.appendfsync or "everysec"), 'save ""',
      "maxclients 1000", "",
    }, "\n"))
  end
  -- starts the configured server; true once it accepts connections, or false, why
  local function launch()
    write(dir .. "/redis.log", "")
    os.remove(dir .. "/redis.pid")
    os.execute("setsid redis-server " .. q(dir .. "/redis.conf") .. " >/dev/null 2>&1 </dev/null &")
    for _ = 1, 800 do -- up to 20 s (an AOF to load)
      local log = read(dir .. "/redis.log") or ""
      if log:find("Ready to accept connections", 1, true) then
        h.pid = tonumber((read(dir .. "/redis.pid") or ""):match("%d+"))
        return true
      end
      if log:find("# Failed", 1, true) or log:find("Address already in use", 1, true) or
          log:find("FATAL", 1, true) then
        return false, log
      end
      os.execute("sleep 0.025")
    end
    return false, "redis-server did not start in 20 s: " .. (read(dir .. "/redis.log") or "")
  end
  local ok, why
  for _ = 1, 25 do
    h.port = opts.port or process.random_port()
    conf(h.port)
    ok, why = launch()
    if ok or opts.port or not tostring(why):find("in use", 1, true) then break end
  end
  if not ok then
    os.execute("rm -rf " .. q(dir))
    return nil, "redis-server did not start: " .. tostring(why)
  end
  -- the watchdog: its own session; it stops whatever server the pid file names, then removes
  -- the folder
  local ttl = tonumber(opts.ttl) or 600
  local wd = "sleep " .. ttl .. "; p=$(cat " .. q(dir .. "/redis.pid") .. " 2>/dev/null); " ..
    "[ -n \"$p\" ] && kill -CONT $p 2>/dev/null; [ -n \"$p\" ] && kill -KILL $p 2>/dev/null; sleep 1; rm -rf " .. q(dir)
  h.watchdog = tonumber(sh("setsid sh -c " .. q(wd) .. " >/dev/null 2>&1 </dev/null & echo $!"))

  function h.url(prefix)
    if not prefix then
      prefixes = prefixes + 1
      prefix = "t" .. prefixes .. "x" .. math.random(1, 1e9)
    end
    return "redis://127.0.0.1:" .. h.port .. "/0?prefix=" .. prefix
  end
  local function signal(sig)
    if h.pid and alive(h.pid) then os.execute("kill -" .. sig .. " " .. h.pid .. " 2>/dev/null") end
  end
  function h.freeze() signal("STOP") end
  function h.thaw() signal("CONT") end
  function h.halt()
    signal("CONT")
    signal("TERM")
    wait_gone(h.pid)
  end
  function h.kill()
    signal("KILL")
    wait_gone(h.pid)
  end
  function h.restart()
    h.halt()
    local sok, swhy = launch()
    assert(sok, swhy)
  end
  function h.stop()
    h.kill()
    if h.watchdog then os.execute("kill -TERM -" .. h.watchdog .. " 2>/dev/null") end
    h.watchdog = nil
    if dir:match("^/tmp/taskapi%-redis%.") then os.execute("rm -rf " .. q(dir)) end
  end
  function h.log() return read(dir .. "/redis.log") or "" end
  return h
end

return M
