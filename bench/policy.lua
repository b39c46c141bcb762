-- B5: the polling policy (issue 3, item 4). taskapi's wait.next_delay against fixed 2 s
-- polling and the Tripo SDK's policy (max(2, eta/2) with an ETA, else doubling from 2 s up to
-- 30 s), on 1,000 simulated tasks with an injected clock (no network): queue times 0-120 s
-- with a queue position that drops, run times 20-300 s, and the reported ETA (Tripo's
-- running_left_time) = true remaining x lognormal noise, drawn again on every poll. Requests
-- per task, and the median and p95 delay between a task finishing and the caller seeing it.
local L = require "bench.lib"
local wait = require "taskapi.ops.wait"

local TASKS = 1000
local SIGMA = 0.3       -- lognormal noise of the reported ETA
local PER_POSITION = 6  -- seconds of queue per position ahead
local MIN_INTERVAL = 2  -- Tripo's minimum interval, the client's default

-- A seeded generator, the same for every policy (Park-Miller on integers, portable).
local function rng(seed)
  local s = seed
  return function()
    s = (s * 48271) % 2147483647
    return s / 2147483647
  end
end

local function gauss(r)
  local u1, u2 = r(), r()
  return math.sqrt(-2 * math.log(u1 + 1e-12)) * math.cos(2 * math.pi * u2)
end

local function make_tasks()
  local r = rng(12345)
  local list = {}
  for i = 1, TASKS do
    list[i] = { queue = r() * 120, run = 20 + r() * 280 }
  end
  return list
end

-- What the provider reports at time t (the task was created at 0).
local function observe(t, task, with_eta, r)
  if t >= task.queue + task.run then return { state = "succeeded", done = true } end
  if t < task.queue then
    return { state = "queued", queue_position = math.max(1, math.ceil((task.queue - t) / PER_POSITION)) }
  end
  local left = task.queue + task.run - t
  local o = { state = "running", progress = math.floor(100 * (t - task.queue) / task.run) }
  if with_eta then o.eta = math.floor(left * math.exp(SIGMA * gauss(r))) end
  return o
end

local function changed(a, b)
  return not a or a.state ~= b.state or a.progress ~= b.progress or a.queue_position ~= b.queue_position
    or a.eta ~= b.eta
end

-- Each policy: a function(state) returning a fresh next(task) -> delay.
local policies = {
  { "taskapi", function(rnd)
    local p = { interval = wait.DEFAULT_INTERVAL, max_interval = wait.DEFAULT_MAX_INTERVAL, min_interval = MIN_INTERVAL }
    local st, last = { polls = 0, misses = 0 }, nil
    return function(task)
      st.polls = st.polls + 1
      if last and not changed(last, task) then st.misses = st.misses + 1 else st.misses = 0 end
      last = task
      return wait.next_delay(task, st, p, rnd)
    end
  end },
  { "fixed 2 s", function() return function() return 2 end end },
  { "Tripo SDK", function()
    local backoff = 1
    return function(task)
      if task.eta then
        backoff = 1
        return math.max(2, task.eta * 0.5)
      end
      backoff = math.min(30, backoff * 2)
      return backoff
    end
  end },
}

local function simulate(policy, with_eta)
  local tasks = make_tasks()
  local noise = rng(777)
  local rnd = rng(4242)
  local requests, delays = 0, {}
  for _, task in ipairs(tasks) do
    local next_delay = policy(rnd)
    local t = 0
    while true do
      requests = requests + 1
      local seen = observe(t, task, with_eta, noise)
      if seen.done then
        delays[#delays + 1] = t - (task.queue + task.run)
        break
      end
      t = t + next_delay(seen)
    end
  end
  return { requests = requests / #tasks, median = L.median(delays), p95 = L.pct(delays, 95) }
end

-- Batching (issue 11): the same 1,000 tasks awaited at once with client:wait_all on a virtual
-- clock, through an in-process Tripo V3 that answers from `observe`: batched (POST
-- /tasks/list, up to 100 due polls per request) and one GET per task and poll (the definition
-- without its batch read). Requests per task, and the client's CPU per task: the process's
-- CPU (os.clock) less the time spent answering inside the simulated API. Neither has HTTP nor
-- JSON decoding of answers (the simulated API hands over decoded tables; B4 has both). The
-- client's CPU is the median of M.ROUNDS alternating rounds.
local function sim_api(tasks, with_eta)
  local core = require "taskapi.core"
  local api = { t = 0, requests = 0, server_cpu = 0, seen = {} }
  local noise = rng(777)
  function api.now() return api.t end
  function api.sleep(_, s) api.t = api.t + s end
  local function payload(id)
    local task = tasks[id]
    local o = observe(api.t, task, with_eta, noise)
    if o.done then
      if not api.seen[id] then api.seen[id] = api.t end
      return { task_id = id, status = "success", progress = 100 }
    end
    return { task_id = id, status = o.state, progress = o.progress or 0, queuing_num = o.queue_position,
      running_left_time = o.eta }
  end
  function api.request(_, req)
    local c0 = os.clock()
    api.requests = api.requests + 1
    local data
    if req.method == "POST" then
      local list = {}
      for _, id in ipairs(core.json_decode(req.body).task_ids) do list[id] = payload(id) end
      data = { tasks = list, missed = {} }
    else
      data = payload(req.url:match("/tasks/([^/]+)$"))
    end
    api.server_cpu = api.server_cpu + os.clock() - c0
    return { status = 200, headers = {}, json = { code = 0, data = data } }
  end
  return api
end

local function simulate_all(batched, with_eta)
  local list = make_tasks()
  local tasks, ids = {}, {}
  for i, task in ipairs(list) do
    ids[i] = string.format("task-%04d", i)
    tasks[ids[i]] = task
  end
  local api = sim_api(tasks, with_eta)
  local def = require "taskapi.providers.tripo"
  if not batched then
    local d = {}
    for k, v in pairs(def) do d[k] = v end
    d.batch = nil
    def = d
  end
  local c = assert(require("taskapi").new { provider = def, api_key = L.KEY, base_url = "http://api.sim/v3",
    transport = api, min_interval = MIN_INTERVAL })
  math.randomseed(4242)
  collectgarbage()
  local c0 = os.clock()
  local done, errs = c:wait_all(ids, { timeout = 3600 })
  local cpu = os.clock() - c0 - api.server_cpu
  assert(next(errs) == nil, "a simulated wait failed")
  local n, delays = 0, {}
  for id in pairs(done) do
    n = n + 1
    local task = tasks[id]
    delays[#delays + 1] = api.seen[id] - (task.queue + task.run)
  end
  assert(n == TASKS)
  return { requests = api.requests / TASKS, cpu = cpu / TASKS * 1e6, median = L.median(delays), p95 = L.pct(delays, 95) }
end

local M = { name = "B5" }

M.ROUNDS = 5 -- alternating rounds of each simulation: the CPU is their median (the rest is exact)

function M.batching()
  local out = {}
  for _, with_eta in ipairs({ true, false }) do
    local med = L.alternate(M.ROUNDS, {
      { "batched", function() return simulate_all(true, with_eta) end },
      { "single", function() return simulate_all(false, with_eta) end },
    })
    out[#out + 1] = { with_eta = with_eta, batched = med.batched, single = med.single }
  end
  return out
end

function M.results()
  local out = {}
  for _, with_eta in ipairs({ true, false }) do
    local r = {}
    for _, p in ipairs(policies) do r[p[1]] = simulate(p[2], with_eta) end
    out[#out + 1] = { with_eta = with_eta, r = r }
  end
  return out
end

function M.run()
  local rows = {}
  for _, s in ipairs(M.results()) do
    local r = s.r
    local t = r.taskapi
    local function show(x)
      return L.fmt(x.requests, 1) .. " req/task, delay median " .. L.fmt(x.median, 2) .. " s, p95 " .. L.fmt(x.p95, 2) .. " s"
    end
    local fewer = t.requests < r["fixed 2 s"].requests and t.requests < r["Tripo SDK"].requests
    rows[#rows + 1] = L.row("B5 polling policy, 1,000 simulated tasks, " .. (s.with_eta and "ETA reported" or "no ETA"),
      show(t), "fixed 2 s: " .. show(r["fixed 2 s"]) .. "; Tripo SDK: " .. show(r["Tripo SDK"]),
      L.fmt(t.requests / r["Tripo SDK"].requests, 2) .. " x SDK requests",
      s.with_eta and "fewer requests than both, median delay <= 1 s" or "(information)",
      s.with_eta and (fewer and t.median <= 1) or nil)
  end
  for _, s in ipairs(M.batching()) do
    local b, o = s.batched, s.single
    local function show(x)
      return L.fmt(x.requests, 2) .. " req/task, " .. L.fmt(x.cpu, 0) .. " us client CPU/task, delay median " ..
        L.fmt(x.median, 2) .. " s, p95 " .. L.fmt(x.p95, 2) .. " s"
    end
    rows[#rows + 1] = L.row("B5 batching: the same 1,000 tasks awaited at once with wait_all (virtual clock, " ..
      (s.with_eta and "ETA reported" or "no ETA") .. "), batched reads of up to 100",
      show(b), "one GET per task and poll: " .. show(o),
      L.fmt(b.requests / o.requests, 3) .. " x requests, " .. L.fmt(b.cpu / o.cpu, 2) .. " x CPU", "(information)")
  end
  return rows
end

local mode = ...
if mode == "child" or mode == "print" then
  for _, row in ipairs(M.run()) do print(row.case, row.taskapi, row.peers, row.met) end
end

return M
