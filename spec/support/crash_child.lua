-- spec/support/crash_child.lua: the process spec/crash_spec.lua kills. The real library (the
-- C module, real HTTP to the nginx fake) with a ledger file:
--
--   <lua> spec/support/crash_child.lua work   LEDGER DIR FAKE_URL N   creates N tasks of Tripo
--        (V3) and N of SellerPic, alternating, one after another; then waits for all of them
--        and downloads every result, concurrently (taskapi.run); prints "created S" and
--        "done S" (seconds since it started) as each phase ends
--   <lua> spec/support/crash_child.lua resume LEDGER DIR FAKE_URL     reconcile, then resume,
--        for both providers; prints one JSON line {found=, left=, errs=}
--
-- Run from the repository root (it finds ./lua and ./build/<runtime> itself).
local tag = jit and "luajit" or "lua5.4"
package.path = "./lua/?.lua;./lua/?/init.lua;./spec/?.lua;" .. package.path
package.cpath = "./build/" .. tag .. "/?.so;" .. package.cpath

local core = require "taskapi.core"
local t0 = core.now()
local taskapi = require "taskapi"
local ledger = require "taskapi.ledger"
local json = require "taskapi.json"

local mode, path, dir, url, n = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5] or "10")
local PATHS = { tripo = "/tripo/v3", sellerpic = "/sellerpic" }
local PARAMS = {
  tripo = { type = "text_to_model", model_version = "v3.1-20260211", prompt = "a chair" },
  sellerpic = { type = "instructEdit", prompt = "white background" },
}
local SIZE = tonumber(os.getenv("CRASH_FILE_SIZE") or "") or 65536
local RUN = tonumber(os.getenv("CRASH_RUN") or "") or 0.3

local L = assert(ledger.open(path))
local clients = {}
for p, sub in pairs(PATHS) do
  clients[p] = assert(taskapi.new { provider = p, api_key = "test-key", base_url = url .. sub, ledger = L,
    min_interval = 0, backoff = 0.01, max_backoff = 0.05, timeout = 5, retries = 2 })
end
local WAIT = { interval = 0.05, max_interval = 0.2, timeout = 60 }

if mode == "work" then
  local ids = { tripo = {}, sellerpic = {} }
  for i = 1, n do
    for _, p in ipairs({ "tripo", "sellerpic" }) do
      local params = {}
      for k, v in pairs(PARAMS[p]) do params[k] = v end
      params.prompt = params.prompt .. " " .. i
      params.fake = { queue = 0, run = RUN, file_size = SIZE }
      local id = clients[p]:create(params)
      if id then ids[p][#ids[p] + 1] = id end
    end
  end
  io.stdout:write(string.format("created %.3f\n", core.now() - t0))
  io.stdout:flush()
  taskapi.run(function()
    local fns = {}
    for _, p in ipairs({ "tripo", "sellerpic" }) do
      fns[#fns + 1] = function()
        local c = clients[p]
        for task in c:each_completed(ids[p], WAIT) do
          if task.ok then taskapi.spawn(function() c:download(task, { dir = dir }) end) end
        end
      end
    end
    taskapi.gather(fns)
  end)
  io.stdout:write(string.format("done %.3f\n", core.now() - t0))
elseif mode == "resume" then
  local out = { found = {}, left = {}, errs = {}, tasks = 0 }
  for _, p in ipairs({ "tripo", "sellerpic" }) do
    local c = clients[p]
    local r = assert(c:reconcile { min_age = 0 })
    out.found[p], out.left[p] = #r.found, #r.left
    local opts = { dir = dir }
    for k, v in pairs(WAIT) do opts[k] = v end
    local tasks, errs = assert(c:resume(opts))
    for _ in pairs(tasks) do out.tasks = out.tasks + 1 end
    for id, e in pairs(errs) do out.errs[#out.errs + 1] = p .. " " .. id .. ": " .. tostring(e) end
  end
  io.stdout:write(assert(json.encode(out)), "\n")
else
  io.stderr:write("usage: crash_child.lua work|resume LEDGER DIR FAKE_URL [N]\n")
  os.exit(2)
end
for _, c in pairs(clients) do c:close() end
L:close()
