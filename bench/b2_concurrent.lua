-- B2: concurrent `status` calls, 64 in flight, inside taskapi.run (64 coroutines looping
-- client:status on one multi handle), against wrk -t1 -c64 and curl --parallel
-- --parallel-max 64 over a URL list (--config). An information row runs the same loop
-- against the fake's task model: 1,000 distinct tasks whose answers take 5 to 24 ms, so that
-- they come back one by one as a real API's do; it reports the client's CPU per call.
local L = require "bench.lib"

local CALLS = tonumber(os.getenv("BENCH_B2_CALLS")) or 50000
local MODEL_CALLS, MODEL_TASKS = 20000, 1000
local FLIGHT = 64
local ROUNDS = 3

local mode = ...
if mode == "child" then
  local _, url, n, tasks = ...
  n, tasks = tonumber(n), tonumber(tasks)
  local taskapi = require "taskapi"
  local c, ids = L.static_client(url), { L.ID }
  if tasks then -- the model: queued tasks that stay queued for the whole run
    ids = L.create_tasks(url, tasks, function(i)
      return { provider = "tripo", queue = 3600, faults = { delay = 0.005 + (i % 20) * 0.001 } }
    end)
    c = L.fake_client(url)
  end
  local started = 0
  local t0, cpu0
  taskapi.run(function()
    local function worker()
      while started < n do
        started = started + 1
        assert(c:status(ids[started % #ids + 1]))
      end
    end
    for i = 1, FLIGHT do assert(c:status(ids[i % #ids + 1])) end -- connections are not timed
    t0, cpu0 = L.now(), L.cpu()
    local hs = {}
    for i = 1, FLIGHT do hs[i] = taskapi.spawn(worker) end
    for i = 1, FLIGHT do assert(hs[i]:join() ~= false) end
  end)
  L.emit { rate = n / (L.now() - t0), cpu_us = (L.cpu() - cpu0) / n * 1e6 }
  return
end

local M = { name = "B2" }

function M.run(env)
  local url = env.url
  local target = url .. L.STATUS_PATH
  local list = os.tmpname()
  local f = assert(io.open(list, "w"))
  for _ = 1, CALLS do f:write('url = "', target, '"\noutput = "/dev/null"\n') end
  f:close()
  local med = L.alternate(ROUNDS, {
    { "wrk", function() return { rate = L.wrk(target, FLIGHT, 3) } end },
    { "taskapi", function() return L.child("lua5.4", "b2_concurrent", { url, CALLS }) end },
    { "curl", function()
      local wall = L.timed("curl -s --no-progress-meter --parallel --parallel-max " .. FLIGHT .. " --config " .. list .. " >/dev/null 2>&1")
      return { rate = CALLS / wall }
    end },
  })
  os.remove(list)
  local model = L.child("lua5.4", "b2_concurrent", { url, MODEL_CALLS, MODEL_TASKS })
  local t, w, c = med.taskapi.rate, med.wrk.rate, med.curl.rate
  local f2 = function(x) return L.fmt(x) .. "/s" end
  return {
    -- issue 14's target: twice curl's own --parallel (the ratio to wrk for information)
    L.row("B2 concurrent `client:status`, " .. FLIGHT .. " in flight, " .. L.fmt(CALLS) .. " calls", f2(t),
      "wrk -t1 -c64 " .. f2(w) .. "; curl --parallel " .. f2(c),
      L.fmt(t / c, 2) .. " x curl --parallel (" .. L.fmt(t / w, 2) .. " x wrk)", ">= 2 x curl --parallel", t / c >= 2),
    L.row("B2 the same against the fake's task model (" .. L.fmt(MODEL_TASKS) .. " distinct tasks, " ..
      L.fmt(MODEL_CALLS) .. " calls, answers in 5 to 24 ms)", f2(model.rate) .. ", " ..
      L.fmt(model.cpu_us, 1) .. " us CPU/call", "none", "", "(information)"),
  }
end

return M
