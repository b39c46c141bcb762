-- Many tasks per poll (issue 11): wait_all and each_completed read the due polls of a provider
-- with a batch endpoint in requests of up to 100 tasks, one GET per task where it has none.
-- First the batching logic on an in-process transport of this spec's own with a virtual clock
-- (every rule of waiting, per task), then over real HTTP against the nginx fake.
local taskapi = require "taskapi"
local core = require "taskapi.core"
local fe = require "support.fake_env"


--------------------------------------------------------------------------------------------
-- An in-process Tripo V3: tasks {queue=, run=, final=} on a virtual clock that sleeping
-- advances; every request is logged {time=, method=, path=, ids=}. `batch` picks how the
-- batch endpoint answers: nil (normally), a function(api, ids) -> res (a fault), or "none"
-- (404: no such endpoint).
local function fake_api()
  local api = { t = 0, log = {}, tasks = {}, latency = 0.02 }
  function api.now() return api.t end
  function api.sleep(_, s) api.t = api.t + s end
  local function payload(id)
    local k = api.tasks[id]
    local t = api.t
    if t < k.queue then
      return { task_id = id, status = "queued", progress = 0, queuing_num = math.ceil(k.queue - t) }
    elseif t < k.queue + k.run then
      local left = k.queue + k.run - t
      return { task_id = id, status = "running", progress = math.floor(100 * (t - k.queue) / k.run),
        running_left_time = math.ceil(left) }
    end
    return { task_id = id, status = k.final or "success", progress = 100 }
  end
  local function ok(data) return { status = 200, json = { code = 0, data = data }, headers = {} } end
  function api.request(_, req)
    local path = req.url:match("^https?://[^/]+(.*)$")
    local e = { time = api.t, method = req.method, path = path }
    api.log[#api.log + 1] = e
    api.t = api.t + api.latency
    if req.method == "POST" and path == "/v3/tasks/list" then
      local body = assert(core.json_decode(req.body))
      e.ids = body.task_ids
      assert(#e.ids >= 1 and #e.ids <= 100, #e.ids .. " ids in one batch")
      if api.batch == "none" then
        return { status = 404, json = { code = 1004, message = "no such endpoint" }, headers = {} }
      elseif api.batch then
        local res = api.batch(api, e.ids)
        if res then return res end
      end
      local tasks, missed = {}, {}
      for _, id in ipairs(e.ids) do
        if api.tasks[id] and not (api.leave_out and api.leave_out[id]) then tasks[id] = payload(id)
        elseif not api.tasks[id] then missed[#missed + 1] = id end
      end
      return ok { tasks = tasks, missed = missed }
    end
    local id = req.method == "GET" and path:match("^/v3/tasks/([^/]+)$")
    if id then
      e.ids = { id }
      if not api.tasks[id] then return { status = 404, json = { code = 2001, message = "task not found" }, headers = {} } end
      return ok(payload(id))
    end
    return { status = 404, json = { code = 1004, message = "no such endpoint" }, headers = {} }
  end
  function api.add(n, spec)
    local ids = {}
    for i = 1, n do
      local id = string.format("t%05d", #ids + 1 + (api.n or 0))
      ids[i] = id
      api.tasks[id] = spec(i)
    end
    api.n = (api.n or 0) + n
    return ids
  end
  function api.client(overrides)
    local opts = { provider = "tripo", api_key = fe.KEY, base_url = "http://api.test/v3", transport = api,
      min_interval = 2, backoff = 0.01, max_backoff = 0.05 }
    for k, v in pairs(overrides or {}) do opts[k] = v end
    return assert(taskapi.new(opts))
  end
  -- requests of a kind: "batch" (POST .../tasks/list) or "get"
  function api.requests(kind, from)
    local out = {}
    for i = (from or 0) + 1, #api.log do
      local e = api.log[i]
      if (kind == "batch") == (e.method == "POST") then out[#out + 1] = e end
    end
    return out
  end
  return api
end

-- Requests grouped into rounds: requests less than `gap` seconds apart are one round.
local function rounds(log, gap)
  local out, last = {}, nil
  for _, e in ipairs(log) do
    if not last or e.time - last > gap then out[#out + 1] = {} end
    table.insert(out[#out], e)
    last = e.time
  end
  return out
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Every task's poll times (from the ids of each logged request); asserts no two closer than
-- min (and returns the smallest gap seen).
local function check_min_interval(log, min)
  local times, smallest = {}, math.huge
  for _, e in ipairs(log) do
    for _, id in ipairs(e.ids or {}) do
      local prev = times[id]
      if prev then
        local gap = e.time - prev
        if gap < smallest then smallest = gap end
        assert(gap >= min, "task " .. id .. " polled again after " .. gap .. " s (< " .. min .. ")")
      end
      times[id] = e.time
    end
  end
  return smallest
end

-- The Tripo V3 definition without its batch endpoint (a copy).
local function without_batch()
  local d = {}
  for k, v in pairs(require("taskapi.providers.tripo")) do d[k] = v end
  d.batch = nil
  return d
end

describe("batched waits (in-process transport, virtual clock)", function()
  it("polls 250 due tasks in ceil(250/100) requests per round, each task finalized with its state", function()
    local api = fake_api()
    local want = {}
    local ids = api.add(250, function(i)
      return { queue = 0, run = 3 + (i % 5) * 4, final = (i % 25 == 0) and "failed" or "success" }
    end)
    for i, id in ipairs(ids) do want[id] = (i % 25 == 0) and "failed" or "succeeded" end
    local c = api.client()
    local tasks, errs = c:wait_all(ids, { interval = 2, timeout = 120 })
    assert.is_nil(next(errs))
    assert.equal(250, count(tasks))
    for id, t in pairs(tasks) do
      assert.equal(want[id], t.state)
      assert.is_true(t.done)
      assert.equal(id, t.id)
    end
    assert.equal(0, #api.requests("get"))
    local batches = api.requests("batch")
    local rs = rounds(batches, 0.2)
    -- the first round has every task due: 3 requests of 100, 100 and 50
    assert.equal(3, #rs[1])
    local due_seen = 0
    for _, r in ipairs(rs) do
      local due = 0
      for _, e in ipairs(r) do due = due + #e.ids end
      assert.equal(math.ceil(due / 100), #r)
      due_seen = due_seen + due
    end
    -- 5 finishing times: a handful of polls per task, far from one request per poll
    assert.is_true(#batches * 10 < due_seen, #batches .. " requests for " .. due_seen .. " polls")
    check_min_interval(batches, 2)
  end)

  it("polls each task when its own wait would, batched or not (interval, ETA, deadline)", function()
    -- the same 120 tasks (and one that outlives the timeout) waited twice, with no request
    -- latency: with batching and through a definition without it; every poll of every task
    -- at the same time in both runs
    local function run(batched)
      local api = fake_api()
      api.latency = 0
      local ids = api.add(120, function(i) return { queue = (i % 3) * 1.3, run = 1 + (i % 7) * 0.7 } end)
      local slow = api.add(1, function() return { queue = 500, run = 10 } end)[1]
      ids[#ids + 1] = slow
      local c = api.client({ min_interval = 1.5, provider = batched and "tripo" or without_batch() })
      local tasks, errs = c:wait_all(ids, { interval = 0.1, max_interval = 5, timeout = 30 })
      assert.equal(120, count(tasks))
      assert.equal(1, count(errs))
      assert.equal("timeout", errs[slow].kind)
      assert.equal(slow, errs[slow].task_id)
      assert.is_true(api.t <= 30 + 1e-9, "ended at " .. api.t) -- the deadline holds
      local times = {}
      for _, e in ipairs(api.log) do
        for _, id in ipairs(e.ids) do
          times[id] = times[id] or {}
          table.insert(times[id], e.time)
        end
      end
      return times, api
    end
    local plain, papi = run(false)
    local batched, bapi = run(true)
    assert.equal(0, #papi.requests("batch"))
    -- a poll due alone goes out as a GET (the lighter request); the rest in batches
    for _, e in ipairs(bapi.requests("batch")) do assert.is_true(#e.ids >= 2) end
    assert.is_true(#bapi.log * 5 < #papi.log, #bapi.log .. " batch requests against " .. #papi.log .. " GETs")
    assert.is_true(check_min_interval(bapi.log, 1.5) >= 1.5)
    for id, ts in pairs(plain) do
      assert.equal(#ts, #batched[id], id .. ": " .. #ts .. " polls alone, " .. #batched[id] .. " batched")
      for i = 1, #ts do
        assert.is_true(math.abs(ts[i] - batched[id][i]) < 1e-6, id .. " poll " .. i .. ": " .. ts[i] .. " vs " .. batched[id][i])
      end
    end
  end)

  it("ends the ids the answer missed as not_found, err.task_id set, and polls them no more", function()
    local api = fake_api()
    local ids = api.add(5, function() return { queue = 0, run = 4 } end)
    local ghosts = { "ghost-1", "ghost-2" }
    local all = { ids[1], ghosts[1], ids[2], ids[3], ghosts[2], ids[4], ids[5] }
    local c = api.client()
    local tasks, errs = c:wait_all(all, { interval = 1 })
    assert.equal(5, count(tasks))
    for _, g in ipairs(ghosts) do
      assert.equal("not_found", errs[g].kind)
      assert.equal(g, errs[g].task_id)
      assert.is_false(errs[g].retryable)
      fe.check_err(errs[g], "not_found")
    end
    local polls_of_ghost = 0
    for _, e in ipairs(api.log) do
      for _, id in ipairs(e.ids) do if id == ghosts[1] then polls_of_ghost = polls_of_ghost + 1 end end
    end
    assert.equal(1, polls_of_ghost)
  end)

  it("treats a task the answer left out as a failed poll of that task, polled again", function()
    local api = fake_api()
    local ids = api.add(3, function() return { queue = 0, run = 1 } end)
    api.leave_out = { [ids[2]] = true }
    local n = 0
    api.batch = function()
      n = n + 1
      if n == 3 then api.leave_out = nil end
    end
    local tasks, errs = api.client():wait_all(ids, { interval = 0.5 })
    assert.is_nil(next(errs))
    assert.equal(3, count(tasks))
  end)

  it("applies a whole batch's 503 with Retry-After to every task in it", function()
    local api = fake_api()
    local ids = api.add(150, function() return { queue = 0, run = 0.5 } end)
    local failed_at
    api.batch = function(a)
      if not failed_at then
        failed_at = a.t
        return { status = 503, json = { code = 1001, message = "busy" }, headers = {}, retry_after = 7 }
      end
    end
    local c = api.client({ min_interval = 0 })
    local tasks, errs = c:wait_all(ids, { interval = 0.2, max_interval = 1 })
    assert.is_nil(next(errs))
    assert.equal(150, count(tasks))
    -- the 100 tasks of the failed request: next polled 7 s later; the other 50 at once done
    local first = api.requests("batch")
    assert.equal(100, #first[1].ids)
    local again = {}
    for i = 2, #first do
      for _, id in ipairs(first[i].ids) do again[id] = again[id] or first[i].time end
    end
    for _, id in ipairs(first[1].ids) do
      assert.is_true(again[id] - failed_at >= 7, id .. " polled " .. (again[id] - failed_at) .. " s after a Retry-After of 7")
    end
    assert.equal(50, #first[2].ids)
    assert.is_true(first[2].time - failed_at < 1)
  end)

  it("ends every task of a batch answered 401 with its own auth error", function()
    local api = fake_api()
    local ids = api.add(4, function() return { queue = 0, run = 5 } end)
    api.batch = function() return { status = 401, json = { code = 2, message = "invalid api key" }, headers = {} } end
    local seen = {}
    for task, err in api.client():each_completed(ids, { interval = 1 }) do
      fe.check_err(err, "auth")
      assert.equal(task.id, err.task_id)
      seen[#seen + 1] = err
    end
    assert.equal(4, #seen)
    assert.is_true(seen[1] ~= seen[2])
    assert.equal(1, #api.log)
  end)

  it("falls back to one GET per task when the batch endpoint answers 404, and remembers it", function()
    local api = fake_api()
    api.batch = "none"
    local ids = api.add(30, function(i) return { queue = 0, run = 2 + i % 3 } end)
    local c = api.client()
    local tasks, errs = c:wait_all(ids, { interval = 1 })
    assert.is_nil(next(errs))
    assert.equal(30, count(tasks))
    assert.equal(1, #api.requests("batch"))
    assert.is_true(#api.requests("get") >= 30)
    check_min_interval(api.requests("get"), 2)
    -- the same client: GETs only from the start
    local mark = #api.log
    local more = api.add(3, function() return { queue = 0, run = 1 } end)
    assert(c:wait_all(more))
    assert.equal(0, #api.requests("batch", mark))
    -- status_many too
    local t2, e2 = c:status_many(more)
    assert.equal(3, count(t2))
    assert.is_nil(next(e2))
  end)

  it("calls on_progress per task and yields each_completed in order of completion", function()
    local api = fake_api()
    local runs = { 9, 3, 6, 1.5, 12 }
    local ids = api.add(#runs, function(i) return { queue = 0, run = runs[i] } end)
    local changes = {}
    local order = {}
    for task, err in api.client({ min_interval = 0.5 }):each_completed(ids, {
      interval = 0.5, on_progress = function(t) changes[t.id] = (changes[t.id] or 0) + 1 end,
    }) do
      assert.is_nil(err)
      order[#order + 1] = task.id
    end
    assert.same({ ids[4], ids[2], ids[3], ids[1], ids[5] }, order)
    for _, id in ipairs(ids) do assert.is_true(changes[id] >= 2, id) end
  end)

  it("status_many reads 250 ids in chunks of 100, missed ones as not_found", function()
    local api = fake_api()
    local ids = api.add(249, function() return { queue = 0, run = 10 } end)
    ids[#ids + 1] = "nobody"
    ids[#ids + 1] = ids[1] -- a repeated id is read once
    local tasks, errs = api.client():status_many(ids)
    assert.equal(249, count(tasks))
    assert.equal("running", tasks[ids[7]].state)
    assert.equal("not_found", errs.nobody.kind)
    local b = api.requests("batch")
    assert.equal(3, #b)
    assert.same({ 100, 100, 50 }, { #b[1].ids, #b[2].ids, #b[3].ids })
  end)

  it("status_many checks every id before any request, and gives a failed request's error to each id", function()
    local api = fake_api()
    local c = api.client()
    local tasks, err = c:status_many({ "good", "bad id" })
    assert.is_nil(tasks)
    assert.equal("invalid_argument", err.kind)
    assert.truthy(err.message:find("#2", 1, true))
    assert.is_nil(c:status_many("abc"))
    assert.equal(0, #api.log)
    api.batch = function() return { status = 500, json = { code = 1000, message = "boom" }, headers = {} } end
    local ids = api.add(2, function() return { queue = 0, run = 1 } end)
    local t2, e2 = c:status_many(ids)
    assert.is_nil(next(t2))
    for _, id in ipairs(ids) do
      fe.check_err(e2[id], "server")
      assert.equal(id, e2[id].task_id)
    end
    assert.equal(1 + c.retries, #api.log) -- retried as any call is
  end)

  it("keeps one GET per task for a provider without a batch endpoint (SellerPic)", function()
    local sent = {}
    local spy = { request = function(_, req)
      sent[#sent + 1] = req
      return { status = 200, headers = {}, json = { code = 0, data = { resultList = {
        { id = 1, status = "SUCCESS", fileUrl = "http://files.test/a.png" } } } } }
    end }
    local c = assert(taskapi.new { provider = "sellerpic", api_key = fe.KEY, transport = spy, min_interval = 0 })
    local tasks, errs = c:wait_all({ "1", "2", "3" })
    assert.is_nil(next(errs))
    assert.equal(3, count(tasks))
    assert.equal(3, #sent)
    for _, r in ipairs(sent) do assert.equal("GET", r.method or "GET") end
    local t2 = c:status_many({ "4", "5" })
    assert.equal(2, count(t2))
    assert.equal(5, #sent)
  end)
end)

