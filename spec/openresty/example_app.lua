-- spec/openresty/example_app.lua: starts the OpenResty example of examples/openresty/ (its
-- nginx.conf, with only the port and the log/pid/temp paths changed) against a running fake
-- (support.fake_env), for the OpenResty specs. env: extra environment variables of nginx.
local nginx = require "taskapi.fake.process"
local fe = require "support.fake_env"

local M = {}

-- opts.as_nobody: keep nginx's own worker user (nobody, when started as root) and load the
-- example's Lua files from opts.app_dir (to show what a checkout that user cannot read does).
-- opts.conf: another config of the example ("fleet.conf"; nginx.conf by default).
function M.start(fake, out, env, opts)
  opts = opts or {}
  local example = assert(io.open(nginx.root() .. "/examples/openresty/" .. (opts.conf or "nginx.conf"), "rb")):read("*a")
  local vars = {
    TASKAPI_API_KEY = fe.KEY, TASKAPI_BASE_URL_TRIPO = fake.base.tripo,
    TASKAPI_BASE_URL_SELLERPIC = fake.base.sellerpic, TASKAPI_MIN_INTERVAL = 0,
    TASKAPI_INTERVAL = 0.2, TASKAPI_OUT = out,
  }
  for k, v in pairs(env or {}) do vars[k] = v end
  return assert(nginx.start {
    ttl = 300,
    env = vars,
    config = function(o)
      -- as root, nginx would run the worker as nobody, who may not read a checkout in a
      -- private folder (the README says so for users): the specs' worker runs as root
      local user = (o.is_root and not opts.as_nobody) and "user root root;\n" or ""
      if opts.app_dir then
        example = example:gsub("%$prefix/examples/openresty/", (opts.app_dir:gsub("%%", "%%%%")) .. "/")
      end
      return user .. (example
        :gsub("listen 127%.0%.0%.1:%d+;", "listen 127.0.0.1:" .. o.port .. ";")
        :gsub("pid [^;]+;", "pid " .. o.dir .. "/nginx.pid;")
        :gsub("error_log [^;]+;", "error_log " .. o.dir .. "/error.log warn;")
        :gsub("client_body_temp_path [^;]+;", "client_body_temp_path " .. o.dir .. "/body;")
        :gsub("%$prefix", o.root))
    end,
  })
end

return M
