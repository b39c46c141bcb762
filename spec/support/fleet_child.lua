-- spec/support/fleet_child.lua: one worker process of spec/fleet_spec.lua's fleet. The real
-- library (the C module, hiredis, real HTTP to the nginx fake): client:serve for Tripo (V3)
-- and SellerPic at once (taskapi.run), sharing one ledger on Redis:
--
--   <lua> spec/support/fleet_child.lua LEDGER_URL DIR FAKE_URL LEASE MIN_INTERVAL IDLE_EXIT
--
-- Prints one JSON line {tripo = counts, sellerpic = counts} (client:serve's) once the fleet
-- has been idle for IDLE_EXIT seconds. Run from the repository root.
local tag = jit and "luajit" or "lua5.4"
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./build/" .. tag .. "/?.so;" .. package.cpath

local taskapi = require "taskapi"
local ledger = require "taskapi.ledger"
local json = require "taskapi.json"

local url, dir, base, lease, min, idle = arg[1], arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5]), tonumber(arg[6])
local PATHS = { tripo = "/tripo/v3", sellerpic = "/sellerpic" }
local L
for _ = 1, 100 do -- a Redis being restarted: tried again
  L = ledger.open(url)
  if L then break end
  taskapi.sleep(0.1)
end
assert(L, "no Redis at " .. url)
local out = {}
taskapi.run(function()
  local hs = {}
  for p, sub in pairs(PATHS) do
    local c = assert(taskapi.new { provider = p, api_key = "test-key", base_url = base .. sub, ledger = L,
      min_interval = min, backoff = 0.01, max_backoff = 0.05, timeout = 5, retries = 2 })
    hs[p] = taskapi.spawn(function()
      out[p] = assert(c:serve(L, { dir = dir, lease = lease, idle_exit = idle, interval = 2 * min, max_interval = 4 * min, sweep = 1, concurrency = 8,
        log = function(msg) io.stderr:write(msg, "\n") end }))
    end)
  end
  for _, h in pairs(hs) do h:join() end
end)
io.stdout:write(assert(json.encode(out)), "\n")
L:close()
