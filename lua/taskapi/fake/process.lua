-- taskapi.fake.process: starts and stops a private nginx (with its Lua module) on 127.0.0.1.
-- It owns the generated config, the prefix folder, the free-port search and the watchdog
-- that stops the server by itself after `ttl` seconds. What the server serves is the caller's:
-- `locations` is nginx config placed inside the server block.
local M = {}

local MODULES = "/usr/lib/nginx/modules"

local files = require "taskapi.util.files"
local sh, exists, read, write = files.sh, files.exists, files.read, files.write

-- The folder the Lua modules load from (this file is <lua dir>/taskapi/fake/process.lua), and
-- the repository root above it when run from a checkout (<root>/lua).
local function here()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/taskapi/fake/process%.lua$")
  if dir == nil then return "." end
  return dir ~= "" and dir or "."
end

function M.lua_dir() return here() end

function M.root()
  local dir = here()
  local root = dir:match("^(.*)/lua$")
  if root then return root ~= "" and root or "." end
  if dir == "lua" then return "." end
  return dir
end

local function abs(path)
  if path:sub(1, 1) == "/" then return path end
  return (sh("pwd") or ".") .. "/" .. path
end

local seeded = false
--- A port to try (20000 to 60999), from a generator seeded once per process.
function M.random_port()
  if not seeded then
    local pid = files.pid()
    local t = read("/proc/uptime") or ""
    local frac = tonumber((t:match("^([%d%.]+)") or "0"):gsub("%.", ""), 10) or 0
    math.randomseed((os.time() + pid * 7919 + frac) % 2147483647)
    seeded = true
  end
  return math.random(20000, 60999)
end

local function conf(o)
  local root, ldir = o.root, o.lua_dir
  return table.concat({
    "load_module " .. MODULES .. "/ndk_http_module.so;",
    "load_module " .. MODULES .. "/ngx_http_lua_module.so;",
    o.is_root and "user root root;" or "",
    "worker_processes " .. (o.workers or 1) .. ";",
    "pid " .. o.dir .. "/nginx.pid;",
    "error_log " .. o.dir .. "/error.log " .. (o.log_level or "warn") .. ";",
    "events { worker_connections 4096; }",
    "worker_rlimit_nofile 8192;",
    "http {",
    "  access_log off;",
    "  client_body_temp_path " .. o.dir .. "/body;",
    "  proxy_temp_path " .. o.dir .. "/proxy;",
    "  fastcgi_temp_path " .. o.dir .. "/fastcgi;",
    "  uwsgi_temp_path " .. o.dir .. "/uwsgi;",
    "  scgi_temp_path " .. o.dir .. "/scgi;",
    "  client_max_body_size 64m;",
    "  client_body_buffer_size 1m;",
    "  keepalive_requests 1000000;",
    "  keepalive_timeout 75s;",
    "  default_type application/octet-stream;",
    '  lua_package_path "' .. ldir .. "/?.lua;" .. ldir .. '/?/init.lua;;";',
    '  lua_package_cpath "' .. (o.cpath or root .. "/build/luajit/?.so") .. ';;";',
    o.http or "",
    "  server {",
    "    listen 127.0.0.1:" .. o.port .. (o.listen_opts or "") .. ";",
    o.server or "",
    o.locations or "",
    "  }",
    "}",
  }, "\n")
end

--- Starts nginx. opts: locations (server-block config), http (http-block config), server
--- (extra server-block directives such as ssl settings), listen_opts (" ssl"), workers (1),
--- ttl (seconds before the watchdog stops it, 600), dir (prefix; a new temporary one if nil),
--- log_level, env (variables for nginx's environment), config (a function(o) returning the whole config text instead of the generated
--- one; o has port, dir, root, lua_dir). Returns a handle {url=, port=, dir=, root=, stop=} or
--- nil, err.
function M.start(opts)
  opts = opts or {}
  if not exists(MODULES .. "/ngx_http_lua_module.so") then
    return nil, "nginx's Lua module is missing: apt-get install nginx libnginx-mod-http-lua lua-resty-core"
  end
  local dir = opts.dir or sh("mktemp -d /tmp/taskapi-nginx.XXXXXX")
  if not dir or dir == "" then return nil, "cannot make a temporary folder" end
  os.execute("mkdir -p '" .. dir .. "'")
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.dir, o.root, o.lua_dir = dir, abs(opts.root or M.root()), abs(opts.lua_dir or M.lua_dir())
  o.is_root = sh("id -u") == "0"
  local last_err
  for _ = 1, 25 do
    o.port = opts.port or M.random_port()
    write(dir .. "/nginx.conf", opts.config and opts.config(o) or conf(o))
    write(dir .. "/error.log", "")
    local envs = ""
    for k, v in pairs(opts.env or {}) do envs = envs .. k .. "='" .. tostring(v):gsub("'", "'\\''") .. "' " end
    local ok = os.execute((envs ~= "" and "env " .. envs or "") .. "nginx -p '" .. dir .. "' -c '" .. dir .. "/nginx.conf' >'" .. dir .. "/start.log' 2>&1")
    if ok == true or ok == 0 then
      local pid = (read(dir .. "/nginx.pid") or ""):match("%d+")
      local ttl = tonumber(opts.ttl) or 600
      -- Watchdog: stops this nginx after ttl seconds unless it was stopped before. Its own
      -- session (setsid), its pid (= its process group) in watchdog.pid: stop() ends it.
      local wd = "sleep " .. ttl .. "; [ -f '" .. dir .. "/nginx.pid' ] && kill -QUIT $(cat '" .. dir .. "/nginx.pid')"
      os.execute("setsid sh -c " .. files.quote(wd) .. " >/dev/null 2>&1 </dev/null & echo $! >'" .. dir .. "/watchdog.pid'")
      local scheme = (o.listen_opts or ""):find("ssl") and "https" or "http"
      local h = { url = scheme .. "://127.0.0.1:" .. o.port, port = o.port, dir = dir, pid = tonumber(pid), root = o.root }
      function h.stop() return M.stop(dir, not opts.dir) end
      function h.log() return read(dir .. "/error.log") or "" end
      return h
    end
    last_err = (read(dir .. "/start.log") or "") .. (read(dir .. "/error.log") or "")
    if opts.port or not last_err:find("in use", 1, true) then break end
  end
  return nil, "nginx did not start: " .. (last_err or "?"):gsub("%s+$", "")
end

--- Stops the nginx whose prefix is dir and waits until it has exited; removes dir if asked.
function M.stop(dir, remove)
  local pid = (read(dir .. "/nginx.pid") or ""):match("%d+")
  if pid then
    os.execute("kill -QUIT " .. pid .. " 2>/dev/null")
    for _ = 1, 200 do
      if not exists("/proc/" .. pid .. "/stat") then break end
      os.execute("sleep 0.025")
    end
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  end
  local wd = (read(dir .. "/watchdog.pid") or ""):match("%d+")
  if wd then -- its process group: the shell and its sleep
    os.execute("kill -TERM -" .. wd .. " 2>/dev/null")
    os.remove(dir .. "/watchdog.pid")
  end
  if remove and dir:match("^/tmp/taskapi%-") then os.execute("rm -rf '" .. dir .. "'") end
  return true
end

return M
