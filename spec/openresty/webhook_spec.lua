-- OpenResty, end to end: the example (examples/openresty/) receives the nginx fake's signed
-- Tripo webhook deliveries at POST /webhooks/tripo while its job watcher waits on the tasks
-- with a long poll interval: a good delivery ends the wait at once (long before the next
-- poll), a bad or stale signature is refused with 401 and the wait goes on to its poll, a
-- repeated delivery is handled once.
local fe = require "support.fake_env"
local example = require "openresty.example_app"
local cjson = require "cjson"

local SECRET = "whsec_openresty_spec_7c2e"

local function curl(args)
  local p = io.popen("curl -s -m 20 " .. args .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out
end

describe("OpenResty example: Tripo webhooks #openresty", function()
  local env, app, out, hook_url

  setup(function()
    env = fe.start()
    out = fe.tmpdir()
    os.execute("chmod 0777 " .. fe.q(out))
    app = example.start(env, out, { TASKAPI_WEBHOOK_SECRET = SECRET })
    hook_url = app.url .. "/webhooks/tripo"
  end)

  teardown(function()
    if app then app.stop() end
    if env then env:stop() end
    if out then fe.rmdir(out) end
  end)

  local function job(ids, interval)
    local created = cjson.decode(curl("-d " .. fe.q(cjson.encode { provider = "tripo", ids = ids, interval = interval }) ..
      " " .. app.url .. "/jobs"))
    assert.truthy(created.job, "no job: " .. tostring(created.error))
    return created.job
  end

  local function until_done(id, seconds)
    local j
    for _ = 1, seconds * 20 do
      j = cjson.decode(curl(app.url .. "/jobs/" .. id))
      if j.state == "done" then return j end
      os.execute("sleep 0.05")
    end
    return j
  end

  local function deliveries(task_id)
    local all = cjson.decode(curl(env.url .. "/_fake/webhook")).deliveries
    local out_ = {}
    for _, d in ipairs(all) do if d.task_id == task_id then out_[#out_ + 1] = d end end
    return out_
  end

  local function stats() return cjson.decode(curl(app.url .. "/webhooks/stats")) end

  local function wait_for_status(task_id, n)
    for _ = 1, 100 do
      local ds = deliveries(task_id)
      local with = 0
      for _, d in ipairs(ds) do if d.status ~= nil or d.error ~= nil then with = with + 1 end end
      if with >= n then return ds end
      os.execute("sleep 0.05")
    end
    return deliveries(task_id)
  end

  it("ends the waits at a signed delivery, long before the next poll", function()
    local hook = { url = hook_url, secret = SECRET }
    local ok = env:add { provider = "tripo", queue = 0.5, run = 0, webhook = hook }
    local failed = env:add { provider = "tripo", queue = 0.8, run = 0, final = "failed", webhook = hook }
    local t0 = os.time() -- whole seconds: the bound below is generous
    local j = until_done(job({ ok, failed }, 10), 8)
    assert.are.equal("done", j.state)
    assert.are.equal("succeeded", j.tasks[ok].state)
    assert.are.equal("failed", j.tasks[failed].state)
    for _, id in ipairs({ ok, failed }) do
      local ds = wait_for_status(id, 1)
      assert.are.equal(1, #ds)
      assert.are.equal(200, ds[1].status, tostring(ds[1].error))
      local info = env:task_info(id)
      -- the fake's clock is its nginx's (Unix seconds): the delivery left at ds[1].at
      local lag = j.tasks[id].done_at - ds[1].at
      io.stderr:write(string.format("\nopenresty webhook: task %s done %.0f ms after its delivery (polls %d; next poll due >= 10 s after the first)\n",
        j.tasks[id].state, lag * 1000, info.polls))
      assert.is_true(lag >= 0 and lag < 0.5, "wait ended " .. lag .. " s after the delivery")
      -- the first poll (queued) and one right after the delivery
      assert.are.equal(2, info.polls)
    end
    assert.is_true(os.time() - t0 <= 4, "the job took " .. (os.time() - t0) .. " s")
    local st = stats()
    assert.are.equal(1, st.by_task[ok])
    assert.are.equal(1, st.by_task[failed])
  end)

  it("refuses a bad or stale signature with 401; the wait goes on to its next poll", function()
    local forged = env:add { provider = "tripo", queue = 0.3, run = 0,
      webhook = { url = hook_url, secret = SECRET, bad_signature = true } }
    local stale = env:add { provider = "tripo", queue = 0.3, run = 0,
      webhook = { url = hook_url, secret = SECRET, stale = true } }
    local before = stats().refused
    local j = until_done(job({ forged, stale }, 2), 12)
    assert.are.equal("done", j.state)
    for _, id in ipairs({ forged, stale }) do
      local ds = wait_for_status(id, 1)
      assert.are.equal(1, #ds)
      assert.are.equal(401, ds[1].status)
      assert.are.equal("succeeded", j.tasks[id].state)
      -- ended by the poll (>= 2 s after the first), not by the refused delivery (~0.3 s)
      local lag = j.tasks[id].done_at - ds[1].at
      assert.is_true(lag > 1, "wait ended " .. lag .. " s after a refused delivery")
      assert.is_nil(stats().by_task[id])
    end
    assert.are.equal(before + 2, stats().refused)
  end)

  it("handles a repeated delivery once", function()
    local id = env:add { provider = "tripo", queue = 0.3, run = 0,
      webhook = { url = hook_url, secret = SECRET, duplicate = true } }
    local before = stats()
    local j = until_done(job({ id }, 10), 8)
    assert.are.equal("succeeded", j.tasks[id].state)
    local ds = wait_for_status(id, 2)
    assert.are.equal(2, #ds)
    assert.are.equal(ds[1].delivery, ds[2].delivery)
    assert.are.equal(200, ds[1].status)
    assert.are.equal(200, ds[2].status)   -- a duplicate is acknowledged, so Tripo stops retrying
    local after = stats()
    assert.are.equal(1, after.by_task[id])
    assert.are.equal(before.handled + 1, after.handled)
    assert.are.equal(before.duplicates + 1, after.duplicates)
  end)

  it("answers 400 to a signed body that is not the envelope, 401 to no signature", function()
    local body = '{"hello":"world"}'
    local t = tostring(os.time())
    local core = require "taskapi.core"
    local sig = "t=" .. t .. ",v1=" .. core.hmac_sha256(SECRET, t .. "." .. body)
    local code = curl("-o /dev/null -w '%{http_code}' -H " .. fe.q("Tripo-Webhook-Signature: " .. sig) ..
      " --data-binary " .. fe.q(body) .. " " .. hook_url)
    assert.are.equal("400", code)
    code = curl("-o /dev/null -w '%{http_code}' --data-binary " .. fe.q(body) .. " " .. hook_url)
    assert.are.equal("401", code)
  end)
end)
