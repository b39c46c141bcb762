-- spec/openresty/example_app.lua: starts the OpenResty example of examples/openresty/ (its
-- nginx.conf, with only the port and the log/pid/temp paths changed) against a running fake
-- (support.fake_env), for the OpenResty specs. env: extra environment variables of nginx.
local nginx = require "taskapi.fake.nginx"
local fe = require "support.fake_env"

local M = {}

function M.start(fake, out, env)
  local example = assert(io.open(nginx.root() .. "/examples/openresty/nginx.conf", "rb")):read("*a")
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
      local user = o.is_root and "user root root;\n" or ""
      return user .. (example
        :gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:" .. o.port .. ";")
        :gsub("pid [^;]+;", "pid " .. o.dir .. "/nginx.pid;")
        :gsub("error_log [^;]+;", "error_log " .. o.dir .. "/error.log warn;")
        :gsub("client_body_temp_path [^;]+;", "client_body_temp_path " .. o.dir .. "/body;")
        :gsub("%$prefix", o.root))
    end,
  })
end

return M
