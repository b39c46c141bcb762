-- The polling policy: next_delay as a pure function, then client:wait over real HTTP against
-- the nginx fake (short schedules; the fake's request log gives the poll times).
local wait = require "taskapi.ops.wait"
local fe = require "support.fake_env"

local function rnd_mid() return 0.5 end

describe("wait.next_delay", function()
  local p = { interval = 2, max_interval = 30, min_interval = 0 }

  it("looks again after most of a reported ETA", function()
    local d = wait.next_delay({ state = "running", eta = 100 }, { misses = 0 }, p, rnd_mid)
    assert.is_true(d <= 30 and d >= 20)
    d = wait.next_delay({ state = "running", eta = 20 }, { misses = 0 }, p, rnd_mid)
    assert.is_true(d > 10 and d < 20, "d = " .. d)
  end)

  it("looks again soon, but not in a tight loop, when the ETA is spent", function()
    local d = wait.next_delay({ state = "running", eta = 1 }, { misses = 0 }, p, rnd_mid)
    assert.is_true(d > 0.5 and d <= 1, "d = " .. d)
    assert.are.equal(wait.ETA_FLOOR, wait.next_delay({ state = "running", eta = 0 }, { misses = 0 }, p, rnd_mid))
  end)

  it("waits longer the further back a task is queued", function()
    local d1 = wait.next_delay({ state = "queued", queue_position = 1 }, { misses = 0 }, p, rnd_mid)
    local d5 = wait.next_delay({ state = "queued", queue_position = 5 }, { misses = 0 }, p, rnd_mid)
    assert.is_true(d5 > d1)
    assert.is_true(d5 <= p.max_interval)
  end)

  it("backs off exponentially with jitter when nothing is known", function()
    local lo = function() return 0 end
    local hi = function() return 0.999 end
    local d0 = wait.next_delay(nil, { misses = 0 }, p, lo)
    local d3 = wait.next_delay(nil, { misses = 3 }, p, lo)
    assert.is_true(d3 > d0 * 4, d0 .. " " .. d3)
    assert.is_true(wait.next_delay(nil, { misses = 1 }, p, hi) > wait.next_delay(nil, { misses = 1 }, p, lo))
    assert.are.equal(30, wait.next_delay(nil, { misses = 20 }, p, hi))
  end)

  it("never goes below the minimum interval, even with an ETA about to end", function()
    local q = { interval = 2, max_interval = 30, min_interval = 60 }
    assert.are.equal(60, wait.next_delay({ state = "running", eta = 1 }, { misses = 0 }, q, rnd_mid))
    assert.are.equal(60, wait.next_delay(nil, { misses = 0 }, q, rnd_mid))
  end)
end)

describe("client:wait against the fake", function()
  local env
  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  local function poll_times(mark, id)
    local out = {}
    for _, e in ipairs(fe.status_requests(env:log(mark), id)) do out[#out + 1] = e.time end
    return out
  end

  it("schedules polls from the reported ETA: few polls, seen soon after the end", function()
    local c = env:client("tripo")
    local mark = env:mark()
    local id = env:add { provider = "tripo", queue = 0, run = 3 }
    local t0 = require("taskapi.core").now()
    local task = assert(c:wait(id, { interval = 0.1, max_interval = 5 }))
    local took = require("taskapi.core").now() - t0
    assert.are.equal("succeeded", task.state)
    local times = poll_times(mark, id)
    -- fixed 0.1 s polling would take ~30 requests; the ETA lets it take a handful
    assert.is_true(#times <= 8, #times .. " polls")
    assert.is_true(took < 3 + 1.0, "seen " .. took .. " s after the start of a 3 s task")
  end)

  it("backs off when the provider gives no ETA (SellerPic)", function()
    local c = env:client("sellerpic")
    local mark = env:mark()
    local id = env:add { provider = "sellerpic", queue = 0, run = 2.5 }
    local task = assert(c:wait(id, { interval = 0.1, max_interval = 2 }))
    assert.are.equal("succeeded", task.state)
    local times = poll_times(mark, id)
    assert.is_true(#times >= 3 and #times <= 8, #times .. " polls")
    -- the gaps grow
    assert.is_true(times[3] - times[2] > times[2] - times[1])
  end)

  it("never polls faster than the minimum interval", function()
    local c = env:client("tripo", { min_interval = 0.4 })
    local mark = env:mark()
    local id = env:add { provider = "tripo", queue = 0.5, run = 1 }
    assert(c:wait(id, { interval = 0.05, max_interval = 0.1 }))
    local times = poll_times(mark, id)
    assert.is_true(#times >= 3)
    for i = 2, #times do
      assert.is_true(times[i] - times[i - 1] >= 0.39, "gap " .. (times[i] - times[i - 1]))
    end
  end)

  it("keeps SellerPic's documented 60 s minimum unless lowered, and never sleeps past the deadline", function()
    local c = assert(require("taskapi").new { provider = "sellerpic", api_key = fe.KEY, base_url = env.base.sellerpic })
    assert.are.equal(60, c.min_interval)
    local mark = env:mark()
    local id = env:add { provider = "sellerpic", queue = 30, run = 30 }
    local t0 = require("taskapi.core").now()
    local task, err = c:wait(id, { timeout = 1, interval = 0.1 })
    local took = require("taskapi.core").now() - t0
    assert.is_nil(task)
    assert.are.equal("timeout", err.kind)
    assert.are.equal(1, #poll_times(mark, id))
    assert.is_true(took >= 0.95 and took < 1.5, "took " .. took)
  end)

  for _, as_date in ipairs({ false, true }) do
    it("honours Retry-After " .. (as_date and "as an HTTP date" or "in seconds") .. " in the middle of a wait", function()
      local c = env:client("tripo")
      local mark = env:mark()
      local id = env:add { provider = "tripo", queue = 0, run = 0.2, faults = { rate_limit = { count = 1, retry_after = 2, as_date = as_date } } }
      local task = assert(c:wait(id, { interval = 0.05, max_interval = 0.1 }))
      assert.are.equal("succeeded", task.state)
      local times = poll_times(mark, id)
      assert.is_true(#times >= 2)
      -- an HTTP date has one-second resolution: at least 1 s, in seconds the full 2 s
      assert.is_true(times[2] - times[1] >= (as_date and 0.9 or 1.9), "gap " .. (times[2] - times[1]))
    end)
  end

  it("survives a burst of 5xx answers and still returns the task", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0, run = 0.3, faults = { server_errors = 4 } }
    local mark = env:mark()
    local task = assert(c:wait(id, { interval = 0.05, max_interval = 0.2 }))
    assert.are.equal("succeeded", task.state)
    assert.is_true(#poll_times(mark, id) >= 5)
  end)

  it("ends at once on a 401", function()
    local c = env:client("tripo", { api_key = "revoked-key-0000" })
    local id = env:add { provider = "tripo", queue = 5, run = 5 }
    local mark = env:mark()
    local task, err = c:wait(id, { interval = 0.05 })
    assert.is_nil(task)
    assert.are.equal("auth", err.kind)
    assert.are.equal(401, err.status)
    assert.are.equal(1, #poll_times(mark, id))
    assert.is_nil(tostring(err):find("revoked-key-0000", 1, true))
  end)

  it("times out with the last task seen", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 10, run = 10 }
    local t0 = require("taskapi.core").now()
    local task, err = c:wait(id, { timeout = 0.6, interval = 0.1 })
    local took = require("taskapi.core").now() - t0
    assert.is_nil(task)
    assert.are.equal("timeout", err.kind)
    assert.are.equal(id, err.task_id)
    assert.are.equal("queued", err.task.state)
    assert.is_true(took < 0.6 + 0.4, "took " .. took)
  end)

  it("ends on the seed's 'unknown' and on a status nobody documented", function()
    local c = env:client("tripo")
    local a = env:add { provider = "tripo", queue = 0, run = 0.2, final = "unknown" }
    local b = env:add { provider = "tripo", queue = 0, run = 0.2, status_value = "paused" }
    local ta = assert(c:wait(a, { interval = 0.05, timeout = 5 }))
    local tb = assert(c:wait(b, { interval = 0.05, timeout = 5 }))
    assert.are.equal("unknown", ta.state)
    assert.is_true(ta.done)
    assert.are.equal("unknown", tb.state)
    assert.are.equal("paused", tb.status)
    assert.is_true(tb.done)
  end)

  it("reports each change through on_progress", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0.3, run = 1 }
    local seen = {}
    assert(c:wait(id, { interval = 0.05, max_interval = 0.1, on_progress = function(t) seen[#seen + 1] = t.state end }))
    assert.are.equal("queued", seen[1])
    assert.are.equal("succeeded", seen[#seen])
    for i = 2, #seen do assert.is_true(seen[i] ~= nil) end
  end)
end)

describe("wait options", function()
  it("refuse a misspelt option before any request", function()
    local f = require("taskapi.fake").new()
    local id = f:add_task { provider = "tripo", queue = 0, run = 0 }
    local c = assert(require("taskapi").new { provider = "tripo", api_key = "test-key", base_url = f:base_url("tripo"),
      transport = f:transport(), min_interval = 0 })
    local n = #f.log
    local task, err = c:wait(id, { timout = 5 })
    assert.is_nil(task)
    assert.are.equal("invalid_argument", err.kind)
    assert.truthy(err.message:find("timout", 1, true))
    assert.are.equal(n, #f.log)
    local tasks, werr = c:wait_all({ id }, { intervall = 1 })
    assert.is_nil(tasks)
    assert.are.equal("invalid_argument", werr.kind)
  end)
end)
