-- B4: 10,000 tasks awaited at once in one plain-Lua process against the nginx fake (Tripo V3,
-- tasks finishing over ~60 s): client:wait_all with the client's min_interval 0. Peak RSS per
-- task (VmHWM during the wait minus VmRSS before it, over the task count) and CPU per poll
-- (utime+stime of the process during the wait over the task polls it made). Run three times:
-- one GET per task and poll (the V3 definition without its batch read) with Lua's default
-- collector settings, the same with the collector's pause lowered to 120 %
-- (collectgarbage("incremental", 120)), the one setting that decides the peak: the default
-- pause lets the heap grow to twice the live data before a cycle starts; and batched (V3's
-- POST /tasks/list, up to 100 due polls per request), default collector: requests and CPU
-- per task with and without batching.
local L = require "bench.lib"

local TASKS = tonumber(os.getenv("BENCH_B4_TASKS")) or 10000
local SPREAD = tonumber(os.getenv("BENCH_B4_SPREAD")) or 60

local mode = ...
if mode == "child" then
  local _, url, n, spread, pause, batch = ...
  n, spread, pause = tonumber(n), tonumber(spread), tonumber(pause)
  if pause then collectgarbage("incremental", pause) end
  math.randomseed(42)
  local ids = L.create_tasks(url, n, function()
    local queue = math.random() * spread / 3
    return { provider = "tripo", queue = queue, run = 5 + math.random() * (spread - 5 - queue) }
  end)
  local c = L.fake_client(url, batch == "batch")
  collectgarbage()
  collectgarbage()
  local rss0 = L.mem_kib("VmRSS")
  local requests = L.count_requests()
  local cpu0, t0 = L.cpu(), L.now()
  local tasks, errs = c:wait_all(ids, { interval = 2, max_interval = 30 })
  local cpu, wall = L.cpu() - cpu0, L.now() - t0
  local ok, failed = 0, 0
  for _ in pairs(tasks) do ok = ok + 1 end
  for _ in pairs(errs) do failed = failed + 1 end
  local nreq, polls = requests()
  L.emit { tasks = ok, errors = failed, requests = nreq, polls = polls, cpu = cpu, wall = wall, rss0 = rss0,
    hwm = L.mem_kib("VmHWM") }
  return
end

local M = { name = "B4" }

local function measure(env, pause, batch)
  local r = L.child("lua5.4", "b4_tasks", { env.url, TASKS, SPREAD, pause or "-", batch and "batch" or "single" })
  assert(r.tasks == TASKS, "not every task finished: " .. r.tasks .. " done, " .. r.errors .. " errors")
  return (r.hwm - r.rss0) * 1024 / TASKS, r.cpu / r.polls * 1e6, r
end

function M.run(env)
  local rows = {}
  for _, v in ipairs({ { false, false }, { 120, false }, { false, true } }) do
    local pause, batch = v[1], v[2]
    local per_task, per_poll, r = measure(env, pause, batch)
    -- the targets are for the default collector, one GET per poll and batched (issue 14); the
    -- collector pause row is information
    local met, target = nil, "(information)"
    if not pause then
      local mem, cpu = per_task <= 4096, per_poll <= 50
      met = mem and cpu
      target = "<= 4 KiB/task (" .. (mem and "met" or "**no**") .. "), <= 50 us/poll (" .. (cpu and "met" or "**no**") .. ")"
    end
    rows[#rows + 1] = L.row("B4 " .. L.fmt(TASKS) .. " tasks awaited at once (finishing over ~" .. SPREAD ..
      " s), Lua 5.4, " .. (pause and "collector pause " .. pause .. " %" or "default collector") ..
      (batch and ", batched (POST /tasks/list, <= 100 per request)" or ", one GET per task and poll"),
      L.fmt(per_task / 1024, 2) .. " KiB/task, " .. L.fmt(per_poll, 1) .. " us CPU/poll, " ..
      L.fmt(r.cpu / TASKS * 1e6) .. " us CPU/task, " .. L.fmt(r.requests / TASKS, 2) .. " requests/task",
      "none (" .. L.fmt(r.requests) .. " requests for " .. L.fmt(r.polls) .. " polls, " .. L.fmt(r.polls / TASKS, 1) ..
      " polls/task, " .. L.fmt(r.wall, 1) .. " s wall, " .. L.fmt(r.cpu, 1) .. " s CPU)", "",
      target, met)
  end
  return rows
end

return M
