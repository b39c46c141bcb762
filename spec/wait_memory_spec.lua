-- What a waiting task keeps alive (issue 14, B4: 10,000 waits at once): the Lua heap retained
-- per task while wait_all awaits many, measured after a full collect (collectgarbage "count",
-- a deterministic measure, not a timing), and what the leaner wait state must still give: a
-- timeout's error carries the last task seen. An in-process Tripo V3 of this spec's own on a
-- virtual clock that sleeping advances, one GET per task and poll (the definition without its
-- batch read, as B4's first row), no sockets; then what a poll over real HTTP (the C
-- module, against the nginx fake) leaves behind it.
local taskapi = require "taskapi"
local fe = require "support.fake_env"

local function fake_api()
  local api = { t = 0, tasks = {}, requests = 0 }
  function api.now() return api.t end
  function api.sleep(_, s)
    api.t = api.t + s
    if api.on_sleep then api.on_sleep(api.t) end
  end
  -- a V3 task payload of the shape the fake's and the real API's have
  local function payload(id)
    local k = api.tasks[id]
    local t = api.t
    local d = { task_id = id, type = "text_to_model", created_at = "2026-12-04T21:40:52Z", credits_consumed = 0,
      input = {}, output = {} }
    if t < k.queue then
      d.status, d.progress, d.queuing_num = "queued", 0, math.ceil(k.queue - t)
    elseif t < k.queue + k.run then
      d.status, d.progress = "running", math.floor(100 * (t - k.queue) / k.run)
      d.running_left_time = math.ceil(k.queue + k.run - t)
    else
      d.status, d.progress = "success", 100
      d.output.model_url = "http://files.test/" .. id .. "/model.glb"
    end
    return d
  end
  function api.request(_, req)
    api.requests = api.requests + 1
    local id = req.method == "GET" and req.url:match("/v3/tasks/([^/]+)$")
    if id and api.tasks[id] then
      return { status = 200, json = { code = 0, data = payload(id) }, headers = {},
        trace_id = string.format("trace-%08d", api.requests) }
    end
    return { status = 404, json = { code = 2001, message = "task not found" }, headers = {} }
  end
  function api.add(n, spec)
    local ids = {}
    for i = 1, n do
      local id = string.format("7f3a9c1e-%04x-4000-a000-%012d", i, i)
      ids[i] = id
      api.tasks[id] = spec(i)
    end
    return ids
  end
  function api.client()
    local def = {}
    for k, v in pairs(require("taskapi.providers.tripo")) do def[k] = v end
    def.batch = nil -- one GET per task and poll
    return assert(taskapi.new { provider = def, api_key = "test-key", base_url = "http://api.test/v3",
      transport = api, min_interval = 0 })
  end
  return api
end

local function full_collect()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count") * 1024
end

describe("what a waiting task keeps alive", function()
  it("wait_all of 1,000 tasks retains at most 1,450 bytes per waiting task (Lua 5.4; 1,600 on LuaJIT)", function()
    local api = fake_api()
    local n = 1000
    local ids = api.add(n, function(i) return { queue = 20 + i % 7, run = 100 } end)
    local c = api.client()
    local per_task, waiting
    local base = full_collect()
    api.on_sleep = function(t)
      -- the first round of polls is over (each task seen once, queued): every wait is waiting
      if t >= 2 and not per_task then
        api.on_sleep = nil
        per_task = (full_collect() - base) / n
      end
    end
    local tasks, errs = c:wait_all(ids, { interval = 2, max_interval = 30, timeout = 150 })
    for _ in pairs(tasks) do waiting = (waiting or 0) + 1 end
    assert.equal(n, waiting)
    assert.is_nil(next(errs))
    assert.is_number(per_task)
    -- before the wait state kept a record of the last task instead of the task itself: 1,660
    -- bytes (Lua 5.4), 1,841 (LuaJIT); with it 1,316 and 1,462
    local bound = jit and 1600 or 1450
    assert(per_task <= bound, string.format("%.0f bytes retained per waiting task (at most %d)", per_task, bound))
  end)

  it("gives a timeout's error the last task seen, as the poll normalized it", function()
    local api = fake_api()
    local ids = api.add(3, function(i) return { queue = i == 1 and 1000 or 0, run = 1000 } end)
    local c = api.client()
    local seen = {}
    local tasks, errs = c:wait_all(ids, { interval = 2, max_interval = 5, timeout = 12,
      on_progress = function(task) seen[task.id] = task end })
    assert.is_nil(next(tasks))
    for _, id in ipairs(ids) do
      local err = errs[id]
      assert.equal("timeout", err.kind)
      assert.equal(id, err.task_id)
      local last = seen[id]
      assert.is_table(err.task)
      assert.are.same(last, err.task)          -- every field, the outputs and raw payload included
      assert.equal(last.raw, err.task.raw)     -- the payload itself, not a copy
      assert.equal(last.trace_id, err.task.trace_id)
      assert.truthy(err.message:find("(last state " .. last.state .. ")", 1, true), err.message)
    end
    assert.equal("queued", errs[ids[1]].task.state)
    assert.equal("running", errs[ids[2]].task.state)
  end)

  it("leaves a client's own transport's answers as they were", function()
    local api = fake_api()
    local ids = api.add(1, function() return { queue = 0, run = 100 } end)
    local c = api.client()
    local answers = {}
    local orig = api.request
    api.request = function(self, req)
      local res = orig(self, req)
      answers[#answers + 1] = res
      return res
    end
    local task = assert(c:status(ids[1]))
    assert.equal(1, #answers)
    assert.is_table(answers[1].json)
    assert.equal(answers[1].json.data, task.raw)
  end)
end)

describe("what a poll over real HTTP leaves behind it", function()
  local env
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  -- Nothing of the library's Lua layer (the wait, the scheduler's records, the retry loop)
  -- holds an answer's decoded JSON once the task it became is dropped: one full cycle later
  -- the weak reference to it is cleared. (What the C module's finalizable transfer kept is
  -- not seen by a weak reference, which Lua clears even for a resurrected object: the heap
  -- measurement of spec/core_plain_spec.lua checks that a closed transfer keeps no answer.)
  for _, inside in ipairs { true, false } do
    it("frees a status answer's JSON in the first full collection after the task is dropped (" ..
      (inside and "inside taskapi.run" or "blocking") .. ")", function()
      local backend = require "taskapi.run.backend"
      local c = env:client("tripo", { retries = 0 })
      local id = env:add { provider = "tripo", queue = 0, run = 100 }
      local seen = setmetatable({}, { __mode = "v" })
      local orig = backend.request
      backend.request = function(...)
        local res, err = orig(...)
        if res then seen.envelope, seen.res = res.json, res end
        return res, err
      end
      local ok, task, err = pcall(function()
        if inside then return taskapi.run(function() return c:status(id) end) end
        return c:status(id)
      end)
      backend.request = orig
      assert(ok, task)
      assert.is_nil(err)
      assert.is_table(task)
      assert.is_table(seen.envelope)
      task = nil -- luacheck: ignore 311
      collectgarbage("collect")
      assert.is_nil(seen.envelope)
    end)
  end
end)
