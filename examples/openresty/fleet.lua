-- examples/openresty/fleet.lua: each nginx worker of a node (examples/openresty/fleet.conf) is
-- one worker of a fleet. init_worker starts one ngx.timer per provider; each opens the ledger
-- on Redis (inside the timer: resty.redis on cosockets), makes a client and runs
-- client:serve until nginx stops the worker (ngx.worker.exiting()). A Redis that is not there
-- yet is waited for (0.1 s doubling to 5 s). Configuration from the environment (nginx `env`
-- directives): TASKAPI_LEDGER (redis://...), TASKAPI_API_KEY, TASKAPI_OUT (the results
-- folder, shared by the fleet), TASKAPI_BASE_URL_TRIPO / _SELLERPIC, TASKAPI_MIN_INTERVAL,
-- TASKAPI_LEASE.
local taskapi = require "taskapi"
local ledger = require "taskapi.ledger"
local cjson = require "cjson.safe"

local M = {}

M.PROVIDERS = { "tripo", "sellerpic" }
local counts = {} -- provider -> this worker's counts (client:serve fills them as it goes)

local function number(name)
  local v = os.getenv(name)
  return v and tonumber(v) or nil
end

-- One provider's worker, in its own timer.
function M.serve(p)
  local url, wait = os.getenv("TASKAPI_LEDGER"), 0.1
  local L, err
  while not ngx.worker.exiting() do
    L, err = ledger.open(url)
    if L then break end
    ngx.log(ngx.WARN, "fleet: ", tostring(err), " (again in ", wait, " s)")
    ngx.sleep(wait)
    wait = math.min(wait * 2, 5)
  end
  if not L then return end
  local c
  c, err = taskapi.new { provider = p, api_key = os.getenv("TASKAPI_API_KEY"), ledger = L,
    base_url = os.getenv("TASKAPI_BASE_URL_" .. p:upper()), min_interval = number("TASKAPI_MIN_INTERVAL") }
  if not c then return ngx.log(ngx.ERR, "fleet: ", tostring(err)) end
  local min = c.min_interval
  local _, serr = c:serve(L, {
    dir = os.getenv("TASKAPI_OUT") or "/tmp", lease = number("TASKAPI_LEASE"), interval = min > 0 and min or nil,
    stats = counts[p], stop = function() return ngx.worker.exiting() end,
    log = function(msg) ngx.log(ngx.WARN, msg) end,
  })
  if serr then ngx.log(ngx.ERR, "fleet: ", tostring(serr)) end
  c:close()
  L:close()
end

--- init_worker: one timer per provider.
function M.start()
  if not os.getenv("TASKAPI_LEDGER") then
    return ngx.log(ngx.ERR, "fleet: set TASKAPI_LEDGER to a redis:// URL (and `env TASKAPI_LEDGER;` in nginx.conf)")
  end
  for _, p in ipairs(M.PROVIDERS) do
    counts[p] = {}
    local ok, err = ngx.timer.at(0, function(premature) if not premature then M.serve(p) end end)
    if not ok then ngx.log(ngx.ERR, "fleet: cannot start the ", p, " timer: ", err) end
  end
end

--- GET /fleet/stats: the counts of the worker that answers, and its pid.
function M.stats()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode({ pid = ngx.worker.pid(), counts = counts }))
end

return M
