-- The coroutine scheduler: run/spawn/sleep/gather on their own, then many waits and downloads
-- at once over real HTTP against the nginx fake, cancellation, errors in one coroutine.
local taskapi = require "taskapi"
local core = require "taskapi.core"
local fe = require "support.fake_env"

describe("scheduler", function()
  it("returns fn's results once every spawned coroutine has finished", function()
    local order = {}
    local a, b = taskapi.run(function(x)
      taskapi.spawn(function() taskapi.sleep(0.1); order[#order + 1] = "late" end)
      taskapi.spawn(function() order[#order + 1] = "early" end)
      return x * 2, "two"
    end, 21)
    assert.are.equal(42, a)
    assert.are.equal("two", b)
    assert.are.same({ "early", "late" }, order)
  end)

  it("runs sleeps concurrently, not one after another", function()
    local t0 = core.now()
    taskapi.run(function()
      for _ = 1, 20 do taskapi.spawn(function() taskapi.sleep(0.3) end) end
    end)
    local took = core.now() - t0
    assert.is_true(took >= 0.29 and took < 1.0, "took " .. took)
  end)

  it("sleeps in poll, not in a busy loop", function()
    local function cpu()
      local f = io.open("/proc/self/stat", "rb")
      local s = f:read("*a")
      f:close()
      local fields = {}
      for w in s:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
      return (tonumber(fields[12]) + tonumber(fields[13])) / 100
    end
    local c0 = cpu()
    taskapi.run(function() taskapi.spawn(function() taskapi.sleep(0.5) end) end)
    assert.is_true(cpu() - c0 < 0.2, "CPU " .. (cpu() - c0))
  end)

  it("gives an error raised in one coroutine to its joiner and lets the others finish", function()
    local other_done = false
    local r, e = taskapi.run(function()
      local bad = taskapi.spawn(function() error("boom") end)
      local good = taskapi.spawn(function() taskapi.sleep(0.05); other_done = true; return "fine" end)
      local v, err = bad:join()
      assert(v == nil)
      return err, good:join()
    end)
    assert.are.equal("runtime", r.kind)
    assert.truthy(tostring(r):find("boom", 1, true))
    assert.are.equal("fine", e)
    assert.is_true(other_done)
  end)

  it("raises fn's own error from run", function()
    assert.has_error(function() taskapi.run(function() error("top level") end) end)
  end)

  it("gathers results and errors by position", function()
    local results, errs = taskapi.gather {
      function() taskapi.sleep(0.02); return 1 end,
      function() return nil, taskapi.error("not_found", "nope") end,
      function() error("bad") end,
    }
    assert.are.equal(1, results[1])
    assert.are.equal("not_found", errs[2].kind)
    assert.are.equal("runtime", errs[3].kind)
  end)

  it("refuses spawn outside run and bad arguments", function()
    local h, err = taskapi.spawn(function() end)
    assert.is_nil(h)
    assert.are.equal("invalid_argument", err.kind)
    assert.are.equal("invalid_argument", select(2, taskapi.sleep(-1)).kind)
    assert.are.equal("invalid_argument", select(2, taskapi.gather { 1 }).kind)
  end)

  it("blocks outside run: sleep really sleeps", function()
    local t0 = core.now()
    assert.is_true(taskapi.sleep(0.1))
    assert.is_true(core.now() - t0 >= 0.09)
  end)
end)

describe("scheduler over HTTP", function()
  local env
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  it("cancels a coroutine in the middle of a transfer; its joiner gets 'cancelled', others go on", function()
    local c = env:client("tripo")
    local slow = env:add { provider = "tripo", queue = 0, run = 0.1, faults = { delay = 3 } }
    local quick = env:add { provider = "tripo", queue = 0, run = 0.1 }
    local t0 = core.now()
    local err, other = taskapi.run(function()
      local h = taskapi.spawn(function() return c:status(slow) end)
      local g = taskapi.spawn(function() taskapi.sleep(0.3); return c:wait(quick, { interval = 0.05 }) end)
      taskapi.sleep(0.2)
      assert(h:cancel())
      local v, e = h:join()
      assert(v == nil)
      return e, g:join()
    end)
    assert.are.equal("cancelled", err.kind)
    assert.are.equal("succeeded", other.state)
    assert.is_true(core.now() - t0 < 2.5, "the cancelled transfer was not removed")
    -- the multi handle is usable afterwards: a blocking call still works
    assert(c:status(quick))
  end)

  it("waits for 200 tasks at once with wait_all", function()
    local c = env:client("tripo")
    local ids, want = {}, {}
    for i = 1, 200 do
      local final = (i % 50 == 0) and "failed" or "success"
      ids[i] = env:add { provider = "tripo", queue = (i % 7) * 0.1, run = 0.2 + (i % 5) * 0.2, final = final }
      want[ids[i]] = final == "success" and "succeeded" or "failed"
    end
    local t0 = core.now()
    local tasks, errs = c:wait_all(ids, { interval = 0.1, max_interval = 0.5, timeout = 30 })
    local took = core.now() - t0
    local n = 0
    for id, t in pairs(tasks) do
      n = n + 1
      assert.are.equal(want[id], t.state)
      assert.are.equal(id, t.id)
    end
    assert.are.equal(200, n)
    assert.is_nil(next(errs))
    -- concurrently: the longest task takes ~1.6 s; one after another would take minutes
    assert.is_true(took < 8, "took " .. took)
  end)


  it("wakes one coroutine per due poll in wait_all, not every worker", function()
    -- SellerPic: one request per poll (Tripo's batched polls: spec/wait_batch_spec.lua)
    local c = env:client("sellerpic")
    local ids = {}
    for i = 1, 150 do ids[i] = env:add { provider = "sellerpic", queue = (i % 13) * 0.05, run = 0.5 + (i % 37) * 0.05 } end
    local backend = require "taskapi.run.backend"
    local resumes, polls = 0, 0
    local resume, request = coroutine.resume, backend.request
    coroutine.resume = function(...) resumes = resumes + 1 return resume(...) end
    backend.request = function(...) polls = polls + 1 return request(...) end
    local ok, tasks = pcall(c.wait_all, c, ids, { interval = 0.1, max_interval = 0.3, timeout = 30 })
    coroutine.resume, backend.request = resume, request
    assert(ok, tasks)
    local n = 0
    for _ in pairs(tasks) do n = n + 1 end
    assert.are.equal(150, n)
    -- a poll is a resume to start it and one when its transfer ends, plus a little; 64
    -- workers all waking for every due poll would be dozens per poll
    assert.is_true(resumes / polls < 3.5, resumes .. " resumes for " .. polls .. " polls")
  end)
  it("reports a failed wait in wait_all's errors, keyed by id", function()
    local c = env:client("tripo")
    local ok_id = env:add { provider = "tripo", queue = 0, run = 0.1 }
    local slow_id = env:add { provider = "tripo", queue = 30, run = 30 }
    local tasks, errs = c:wait_all({ ok_id, slow_id }, { interval = 0.05, timeout = 0.8 })
    assert.are.equal("succeeded", tasks[ok_id].state)
    assert.are.equal("timeout", errs[slow_id].kind)
    assert.are.equal(slow_id, errs[slow_id].task_id)
  end)

  it("yields tasks in the order they finish with each_completed", function()
    local c = env:client("tripo")
    local runs = { 1.6, 0.2, 0.9 }
    local ids = {}
    for i, r in ipairs(runs) do ids[i] = env:add { provider = "tripo", queue = 0, run = r } end
    local seen = {}
    for task, err in c:each_completed(ids, { interval = 0.05, max_interval = 0.1, timeout = 10 }) do
      assert.is_nil(err)
      seen[#seen + 1] = task.id
    end
    assert.are.same({ ids[2], ids[3], ids[1] }, seen)
  end)

  it("goes on past a failed wait in each_completed, naming the task", function()
    local c = env:client("tripo")
    local a = env:add { provider = "tripo", queue = 0, run = 0.1 }
    local b = env:add { provider = "tripo", queue = 30, run = 30 }
    local got = {}
    for task, err in c:each_completed({ b, a }, { interval = 0.05, timeout = 2 }) do
      got[#got + 1] = { id = task.id, err = err }
    end
    assert.are.equal(2, #got)
    assert.are.equal(a, got[1].id)
    assert.are.equal(b, got[2].id)
    assert.are.equal("timeout", got[2].err.kind)
    assert.are.equal(b, got[2].err.task_id)
  end)

  it("downloads concurrently inside run, each file complete", function()
    local c = env:client("tripo")
    local dir = fe.tmpdir()
    local ids = {}
    for i = 1, 6 do ids[i] = env:add { provider = "tripo", queue = 0, run = 0.1, file_size = 300000 } end
    local saved = 0
    taskapi.run(function()
      for task, err in c:each_completed(ids, { interval = 0.05 }) do
        assert(not err, tostring(err))
        taskapi.spawn(function()
          local files = assert(c:download(task, { dir = dir }))
          saved = saved + #files
        end)
      end
    end)
    assert.are.equal(12, saved)
    for _, name in ipairs(fe.ls(dir)) do
      assert.is_nil(name:find("%.part$"))
    end
    fe.rmdir(dir)
  end)
end)
