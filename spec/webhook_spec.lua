-- taskapi.webhook: verifying Tripo's signed deliveries (signatures made here with the C
-- module's HMAC), the receiver's deduplication, the notification point, the wait hook that
-- ends waits at once (real HTTP against the nginx fake), and the fake's own deliveries
-- (taskapi.fake.webhook, on an in-process model).
local core = require "taskapi.core"
local json = require "taskapi.json"
local taskapi = require "taskapi"
local webhook = require "taskapi.webhook"
local fake_webhook = require "taskapi.fake.webhook"
local model = require "taskapi.fake.model"
local fe = require "support.fake_env"

local SECRET = "whsec_test_5d1f0e2a"
local NOW = 1764000000

local function sign(secret, body, t, extra)
  return "t=" .. t .. ",v1=" .. core.hmac_sha256(secret, t .. "." .. body) .. (extra or "")
end

local function task_data(over)
  local d = {
    task_id = "7f3a9c1e-0001-4001-a007-000000000001", type = "text_to_model", status = "success",
    progress = 100, input = {}, output = { model = "https://files.example/m.glb", rendered_image = "https://files.example/r.webp" },
    create_time = NOW - 60,
  }
  for k, v in pairs(over or {}) do d[k] = v end
  return d
end

local function envelope(typ, data, extra)
  local e = { id = (data and data.task_id or "x") .. ":" .. typ, type = typ, created_at = "2025-11-24T16:00:00Z", data = data }
  for k, v in pairs(extra or {}) do e[k] = v end
  return assert(json.encode(e))
end

local function delivery(body, t, over)
  local h = {
    ["Tripo-Webhook-Signature"] = sign(SECRET, body, t or NOW),
    ["Tripo-Webhook-Id"] = "wh_1", ["Tripo-Webhook-Delivery"] = "dlv_1", ["Tripo-Webhook-Event"] = "task.completed",
  }
  for k, v in pairs(over or {}) do h[k] = v end
  return h
end

local function fails(kind, pattern, ev, err)
  assert.is_nil(ev)
  assert.are.equal(kind, err.kind, tostring(err))
  assert.truthy(err.message:find(pattern, 1, true), err.message)
  assert.falsy(tostring(err):find(SECRET, 1, true))
end

describe("webhook.verify", function()
  it("returns the event of a good delivery with its task normalized", function()
    local body = envelope("task.completed", task_data())
    local ev = assert(webhook.verify(SECRET, delivery(body), body, NOW))
    assert.are.equal("task.completed", ev.type)
    assert.are.equal("7f3a9c1e-0001-4001-a007-000000000001:task.completed", ev.id)
    assert.are.equal("dlv_1", ev.delivery)
    assert.are.equal("wh_1", ev.webhook_id)
    assert.are.equal("2025-11-24T16:00:00Z", ev.created_at)
    assert.are.equal("7f3a9c1e-0001-4001-a007-000000000001", ev.task.id)
    assert.are.equal("succeeded", ev.task.state)
    assert.is_true(ev.task.done and ev.task.ok)
    assert.are.equal("model", ev.task.outputs[1].name)
    assert.are.equal("success", ev.raw.data.status)
  end)

  it("reads header names in any case and values given as arrays (repeated headers)", function()
    local body = envelope("task.completed", task_data())
    local ev = assert(webhook.verify(SECRET, {
      ["tripo-webhook-signature"] = { sign(SECRET, body, NOW) }, ["TRIPO-WEBHOOK-DELIVERY"] = { "dlv_9", "dlv_9" },
    }, body, NOW))
    assert.are.equal("dlv_9", ev.delivery)
    -- the signature split over two headers is one list: t in one, v1 in the other
    local sig = sign(SECRET, body, NOW)
    local t, v1 = sig:match("^(t=%d+),(v1=%x+)$")
    assert(webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = { t, v1 } }, body, NOW))
  end)

  it("accepts any matching v1 among several (a rotating secret) and upper-case hex", function()
    local body = envelope("task.completed", task_data())
    local good = core.hmac_sha256(SECRET, NOW .. "." .. body)
    local h = { ["Tripo-Webhook-Signature"] = "t=" .. NOW .. ", v1=" .. string.rep("0", 64) .. ", v1=" .. good:upper() .. ",v0=zz" }
    assert(webhook.verify(SECRET, h, body, NOW))
    h = { ["Tripo-Webhook-Signature"] = "t=" .. NOW .. ",v1=" .. string.rep("0", 64) .. ",v1=" .. core.hmac_sha256("whsec_old", NOW .. "." .. body) }
    fails("auth", "signature does not match", webhook.verify(SECRET, h, body, NOW))
  end)

  it("refuses a missing or malformed signature header (auth), naming what is wrong", function()
    local body = envelope("task.completed", task_data())
    fails("auth", "missing Tripo-Webhook-Signature header", webhook.verify(SECRET, {}, body, NOW))
    fails("auth", "no timestamp", webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = "v1=abc" }, body, NOW))
    fails("auth", "no v1 signature", webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = "t=" .. NOW }, body, NOW))
    fails("auth", "is not key=value", webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = "t=" .. NOW .. ",garbage" }, body, NOW))
    fails("auth", "is not Unix seconds", webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = "t=12.5,v1=ab" }, body, NOW))
    fails("auth", "two different timestamps",
      webhook.verify(SECRET, { ["Tripo-Webhook-Signature"] = { sign(SECRET, body, NOW), "t=" .. (NOW + 1) } }, body, NOW))
  end)

  it("refuses a signature made with another secret or over another body (auth)", function()
    local body = envelope("task.completed", task_data())
    local h = delivery(body)
    fails("auth", "signature does not match", webhook.verify("whsec_other", h, body, NOW))
    fails("auth", "signature does not match", webhook.verify(SECRET, h, body:gsub("success", "failed", 1), NOW))
    fails("auth", "signature does not match", webhook.verify(SECRET, h, body .. " ", NOW))
    -- the timestamp is signed too
    local moved = { ["Tripo-Webhook-Signature"] = h["Tripo-Webhook-Signature"]:gsub("^t=%d+", "t=" .. (NOW + 1)) }
    fails("auth", "signature does not match", webhook.verify(SECRET, moved, body, NOW))
  end)

  it("refuses a timestamp more than 300 s away, either way (auth), and takes one 300 s away", function()
    local body = envelope("task.completed", task_data())
    fails("auth", "301 s in the past", webhook.verify(SECRET, delivery(body, NOW - 301), body, NOW))
    fails("auth", "301 s in the future", webhook.verify(SECRET, delivery(body, NOW + 301), body, NOW))
    assert(webhook.verify(SECRET, delivery(body, NOW - 300), body, NOW))
    assert(webhook.verify(SECRET, delivery(body, NOW + 300), body, NOW))
    -- now defaults to the clock
    local t = os.time()
    assert(webhook.verify(SECRET, delivery(body, t), body))
    fails("auth", "more than 300 s away", webhook.verify(SECRET, delivery(body, t - 1000), body))
  end)

  it("refuses a signed body that is not the envelope (bad_response)", function()
    local function check(body, pattern)
      fails("bad_response", pattern, webhook.verify(SECRET, delivery(body), body, NOW))
    end
    check("not json", "not a JSON object")
    check("[1,2]", "not a JSON object")
    check('{"id":"a","data":{}}', "no 'type'")
    check('{"type":"task.completed","data":{}}', "no 'id'")
    check('{"type":"task.completed","id":"a"}', "no 'data' object")
    check('{"type":"task.completed","id":"a","data":{"status":"success"}}', "no data.task_id")
    check('{"type":"task.completed","id":"a","data":{"task_id":"t1"}}', "no status")
  end)

  it("gives a failed task its error, from error_code or from an error object", function()
    local body = envelope("task.failed", task_data({ status = "failed", output = {}, error_code = 2008, error_message = "moderation" }))
    local ev = assert(webhook.verify(SECRET, delivery(body), body, NOW))
    assert.is_true(ev.task.done)
    assert.is_false(ev.task.ok)
    assert.are.equal(2008, ev.task.error.code)
    body = envelope("task.failed", task_data({ status = "failed", output = {}, error = { code = "task_failed", message = "it broke" } }))
    ev = assert(webhook.verify(SECRET, delivery(body), body, NOW))
    assert.are.same({ code = "task_failed", message = "it broke" }, ev.task.error)
  end)

  it("passes other events through without a task (balance.low)", function()
    local body = envelope("balance.low", { balance = 12.5, threshold = 50 })
    local ev = assert(webhook.verify(SECRET, delivery(body), body, NOW))
    assert.are.equal("balance.low", ev.type)
    assert.is_nil(ev.task)
    assert.are.equal(12.5, ev.data.balance)
  end)

  it("checks its arguments (invalid_argument)", function()
    local body = envelope("task.completed", task_data())
    fails("invalid_argument", "secret must be a non-empty string", webhook.verify(nil, delivery(body), body, NOW))
    fails("invalid_argument", "an empty string", webhook.verify("", delivery(body), body, NOW))
    fails("invalid_argument", "headers must be a table", webhook.verify(SECRET, "x", body, NOW))
    fails("invalid_argument", "raw request body", webhook.verify(SECRET, delivery(body), { type = "x" }, NOW))
    fails("invalid_argument", "'now' must be a finite number", webhook.verify(SECRET, delivery(body), body, 0 / 0))
  end)
end)

describe("webhook.lru", function()
  it("remembers at most size keys, the least recently seen going first", function()
    local s = webhook.lru(3)
    assert.is_true(s:add("a"))
    assert.is_true(s:add("b"))
    assert.is_true(s:add("c"))
    local new, err = s:add("a") -- seen: refreshed
    assert.is_false(new)
    assert.are.equal("exists", err)
    assert.is_true(s:add("d"))   -- evicts b, the least recently seen
    assert.are.equal(3, s:count())
    assert.is_false((s:add("a")))
    assert.is_false((s:add("c")))
    assert.is_true(s:add("b"))
  end)
end)

describe("webhook.new (receiver)", function()
  it("checks its options", function()
    local rx, err = webhook.new({})
    assert.is_nil(rx)
    assert.are.equal("invalid_argument", err.kind)
    rx, err = webhook.new({ secret = SECRET, store = {} })
    assert.is_nil(rx)
    assert.truthy(err.message:find("add(key, value, ttl)", 1, true), err.message)
  end)

  it("handles a delivery once: a repeat of its delivery id is a duplicate that notifies no one", function()
    local events = {}
    local rx = assert(webhook.new { secret = SECRET, on_event = function(ev) events[#events + 1] = ev end })
    local data = task_data({ task_id = "dedup-1" })
    local body = envelope("task.completed", data)
    local calls = 0
    local token = webhook.subscribe("dedup-1", function(task) calls = calls + 1; assert.are.equal("dedup-1", task.id) end)
    local ev = assert(rx:handle(delivery(body), body, NOW))
    assert.is_nil(ev.duplicate)
    assert.are.equal(1, ev.notified)
    local again = assert(rx:handle(delivery(body), body, NOW))
    assert.is_true(again.duplicate)
    assert.are.equal(1, calls)
    assert.are.equal(1, #events)
    -- a new delivery id of the same event is handled again (Tripo's id is per delivery)
    assert(rx:handle(delivery(body, NOW, { ["Tripo-Webhook-Delivery"] = "dlv_2" }), body, NOW))
    assert.are.equal(2, calls)
    -- without the header, the event id tells deliveries apart
    local h = delivery(body)
    h["Tripo-Webhook-Delivery"] = nil
    assert.is_nil(assert(rx:handle(h, body, NOW)).duplicate)
    assert.is_true(assert(rx:handle(h, body, NOW)).duplicate)
    webhook.unsubscribe(token)
    assert.are.equal(0, webhook.listening("dedup-1"))
  end)

  it("uses a store with ngx.shared.DICT's add(key, value, ttl)", function()
    local seen, ttls = {}, {}
    local dict = { add = function(self, k, v, ttl)
      if seen[k] then return false, "exists" end
      seen[k], ttls[k] = v, ttl
      return true
    end }
    local rx = assert(webhook.new { secret = SECRET, store = dict, ttl = 120 })
    local body = envelope("task.completed", task_data())
    assert.is_nil(assert(rx:handle(delivery(body), body, NOW)).duplicate)
    assert.is_true(assert(rx:handle(delivery(body), body, NOW)).duplicate)
    assert.are.equal(120, ttls["delivery:dlv_1"])
  end)

  it("refuses a bad delivery without remembering it", function()
    local rx = assert(webhook.new { secret = SECRET })
    local body = envelope("task.completed", task_data())
    local ev, err = rx:handle(delivery(body, NOW - 1000), body, NOW)
    assert.is_nil(ev)
    assert.are.equal("auth", err.kind)
    assert.are.equal("dlv_1", err.delivery)
    assert.is_nil(assert(rx:handle(delivery(body), body, NOW)).duplicate)
  end)
end)

describe("webhook.subscribe / notify", function()
  it("calls every listener of the task, survives a failing one, and stops after unsubscribe", function()
    local got = {}
    local a = webhook.subscribe("n-1", function(t) got[#got + 1] = "a:" .. t.id end)
    local b = webhook.subscribe("n-1", function() error("listener broke") end)
    local c = webhook.subscribe("n-2", function(t) got[#got + 1] = "c:" .. t.id end)
    local n, err = webhook.notify({ id = "n-1" })
    assert.are.equal(2, n)
    assert.truthy(tostring(err):find("listener broke", 1, true))
    assert.are.same({ "a:n-1" }, got)
    webhook.unsubscribe(a)
    webhook.unsubscribe(b)
    assert.are.equal(0, (webhook.notify({ id = "n-1" })))
    assert.are.equal(1, (webhook.notify("n-2")))
    webhook.unsubscribe(c)
  end)
end)

describe("a delivery ends waits at once (nginx fake, real HTTP)", function()
  local env, rx
  setup(function()
    env = fe.start()
    rx = assert(webhook.new { secret = SECRET })
  end)
  teardown(function() if env then env:stop() end end)

  -- After `after` seconds, reads the task (final by then) and delivers it as Tripo would.
  local function deliver_later(client, id, after)
    taskapi.spawn(function()
      taskapi.sleep(after)
      local task = assert(client:status(id))
      local body = envelope(task.ok and "task.completed" or "task.failed", task.raw)
      assert(rx:handle(delivery(body, os.time(), { ["Tripo-Webhook-Delivery"] = "dlv-" .. id }), body))
    end)
  end

  it("client:wait returns right after the delivery, not at the next poll", function()
    local c = env:client("tripo")
    -- queued for 0.3 s, then final: the policy's next look at a queued task is `interval` away
    local id = env:add { provider = "tripo", queue = 0.3, run = 0 }
    local t0 = core.now()
    local task, elapsed, polls
    local mark = env:mark()
    taskapi.run(function()
      deliver_later(c, id, 0.6)
      task = assert(c:wait(id, { interval = 5, max_interval = 5 }))
      elapsed = core.now() - t0
    end)
    polls = #fe.status_requests(env:log(mark), id)
    io.stderr:write(string.format("\nwebhook: wait ended %.2f s after start (delivery at 0.6 s, next poll due at ~5 s), %d polls\n",
      elapsed, polls))
    assert.is_true(task.ok)
    assert.is_true(elapsed >= 0.6 and elapsed < 1.5, "wait took " .. elapsed .. " s")
    assert.are.equal(3, polls) -- the wait's first, deliver_later's read, the wait's one right after
    assert.are.equal(0, webhook.listening(id))
  end)

  it("without a delivery the same wait lasts until the next poll (the control case)", function()
    local c = env:client("tripo")
    local id = env:add { provider = "tripo", queue = 0.3, run = 0 }
    local t0 = core.now()
    local task = assert(c:wait(id, { interval = 2, max_interval = 2 }))
    local elapsed = core.now() - t0
    assert.is_true(task.ok)
    assert.is_true(elapsed >= 1.4, "wait took " .. elapsed .. " s")
  end)

  it("wait_all and each_completed end each task's wait at its delivery", function()
    local c = env:client("tripo")
    local ids = {}
    for i = 1, 3 do ids[i] = env:add { provider = "tripo", queue = 0.2, run = 0 } end
    local done_at = {}
    local t0 = core.now()
    taskapi.run(function()
      deliver_later(c, ids[1], 0.5)
      deliver_later(c, ids[2], 0.8)
      deliver_later(c, ids[3], 1.1)
      for task, err in c:each_completed(ids, { interval = 8, max_interval = 8 }) do
        assert.is_nil(err)
        done_at[task.id] = core.now() - t0
      end
    end)
    for i, id in ipairs(ids) do
      io.stderr:write(string.format("webhook: each_completed task %d done at %.2f s (delivered at %.1f s)\n", i, done_at[id], 0.2 + 0.3 * i))
      assert.is_true(done_at[id] >= 0.2 + 0.3 * i and done_at[id] < 0.5 + 0.3 * i, "task " .. i .. " at " .. done_at[id])
    end
    ids = { env:add { provider = "tripo", queue = 0.2, run = 0 }, env:add { provider = "tripo", queue = 0.2, run = 0 } }
    t0 = core.now()
    local tasks, errs
    taskapi.run(function()
      deliver_later(c, ids[1], 0.5)
      deliver_later(c, ids[2], 0.5)
      tasks, errs = c:wait_all(ids, { interval = 8, max_interval = 8 })
    end)
    local elapsed = core.now() - t0
    assert.is_nil(next(errs))
    assert.is_true(tasks[ids[1]].ok and tasks[ids[2]].ok)
    assert.is_true(elapsed < 1.5, "wait_all took " .. elapsed .. " s")
  end)

  it("a wait that no receiver listens for only sleeps (the hook is a stub until webhook.new)", function()
    local was = webhook.enabled
    webhook.enabled = false
    local hook = webhook.hook(nil)
    webhook.enabled = was
    assert.is_nil(hook.tokens)
    assert.are.equal(hook, hook:watch({ sid = "x", at = 0 }))
    assert.are.equal(0, webhook.listening("x"))
  end)
end)

describe("webhook.hook (the wait hook)", function()
  local heap = require "taskapi.util.heap"
  local was
  setup(function() was = webhook.enabled; webhook.enabled = true end)
  teardown(function() webhook.enabled = was end)

  it("moves a notified wait to the front of the heap, at once or when its poll is back", function()
    local q = heap.new()
    local now = core.now()
    local w1, w2, w3 = { sid = "h-1", at = now + 100 }, { sid = "h-2", at = now + 200 }, { sid = "h-3", at = now + 300 }
    heap.push(q, w1)
    heap.push(q, w2)
    local woken = 0
    local hook = webhook.hook(nil, q, function() woken = woken + 1 end)
    hook:watch(w1):watch(w2):watch(w3)
    assert.are.equal(1, webhook.listening("h-2"))
    webhook.notify({ id = "h-2" })
    assert.are.equal(w2, q[1])
    assert.is_true(w2.at <= core.now())
    assert.are.equal(1, woken)
    assert.are.equal("h-2", w2.delivered.id)
    -- w3's poll is under way (not in the heap): it is moved once it is back, at the next sleep
    webhook.notify({ id = "h-3" })
    heap.pop(q)
    heap.push(q, w3)
    assert.are.equal(w1, q[1])
    local t0 = core.now()
    assert.is_true(hook:sleep(5))
    assert.is_true(core.now() - t0 < 0.1)
    assert.are.equal(w3, q[1])
    hook:close()
    assert.are.equal(0, webhook.listening("h-1") + webhook.listening("h-2") + webhook.listening("h-3"))
  end)

  it("ends a sleep in taskapi.run at a delivery, and leaves no timer behind", function()
    local hook = webhook.hook(nil):watch({ sid = "h-4", at = 0 })
    local t0 = core.now()
    local early, slept
    taskapi.run(function()
      taskapi.spawn(function() taskapi.sleep(0.2); webhook.notify("h-4") end)
      early = hook:sleep(10)
      slept = core.now() - t0
    end)
    local total = core.now() - t0
    hook:close()
    assert.is_true(early)
    assert.is_true(slept >= 0.2 and slept < 0.5, "slept " .. slept)
    assert.is_true(total < 0.5, "taskapi.run lasted " .. total .. " s") -- not until the 10 s timer
    -- a sleep nobody ends lasts its time and says so
    taskapi.run(function() early = hook:sleep(0.1) end)
    assert.is_false(early)
  end)

  it("skips the next sleep when the delivery came between two sleeps", function()
    local hook = webhook.hook(nil):watch({ sid = "h-5", at = 0 })
    webhook.notify("h-5")
    local t0 = core.now()
    assert.is_true(hook:sleep(3))
    assert.is_true(core.now() - t0 < 0.1)
    hook:close()
  end)
end)

describe("taskapi.fake.webhook (in-process model)", function()
  local function new_model(clock)
    return model.new { clock = clock, base_url = "http://127.0.0.1:1" }
  end

  it("delivers a signed envelope of a task once it is final, once", function()
    local now = 1000
    local m = new_model(function() return now end)
    local id = assert(m:add_task { provider = "tripo", queue = 1, run = 1,
      webhook = { url = "http://127.0.0.1:9/hook", secret = SECRET } })
    assert.are.equal(0, #fake_webhook.due(m))
    now = 1002
    local list = fake_webhook.due(m)
    assert.are.equal(1, #list)
    local d = list[1]
    assert.are.equal(9, d.port)
    assert.are.equal("/hook", d.path)
    local ev = assert(webhook.verify(SECRET, d.headers, d.body))
    assert.are.equal("task.completed", ev.type)
    assert.are.equal(id, ev.task.id)
    assert.is_true(ev.task.ok)
    assert.is_true(#ev.task.outputs > 0)
    assert.are.equal(ev.type, d.headers["Tripo-Webhook-Event"])
    assert.are.equal(0, #fake_webhook.due(m))
  end)

  it("sends task.failed for a failed task, and its fault knobs: duplicate, bad_signature, stale", function()
    local now = 1000
    local m = new_model(function() return now end)
    local hook = { url = "http://127.0.0.1:9/", secret = SECRET }
    local function with(extra)
      local w = {}
      for k, v in pairs(hook) do w[k] = v end
      for k, v in pairs(extra) do w[k] = v end
      return w
    end
    local failed = m:add_task { provider = "tripo", queue = 0, run = 0, final = "failed", webhook = hook }
    local dup = m:add_task { provider = "tripo", queue = 0, run = 0, webhook = with { duplicate = true } }
    local forged = m:add_task { provider = "tripo", queue = 0, run = 0, webhook = with { bad_signature = true } }
    local stale = m:add_task { provider = "tripo", queue = 0, run = 0, webhook = with { stale = true } }
    local by = {}
    for _, d in ipairs(fake_webhook.due(m)) do
      local id = d.record.task_id
      by[id] = by[id] or {}
      table.insert(by[id], d)
    end
    local ev = assert(webhook.verify(SECRET, by[failed][1].headers, by[failed][1].body))
    assert.are.equal("task.failed", ev.type)
    assert.are.equal("failed", ev.task.state)
    assert.are.equal(2, #by[dup])
    assert.are.equal(by[dup][1].headers["Tripo-Webhook-Delivery"], by[dup][2].headers["Tripo-Webhook-Delivery"])
    assert.are.equal(by[dup][1].body, by[dup][2].body)
    local rx = assert(webhook.new { secret = SECRET })
    assert.is_nil(assert(rx:handle(by[dup][1].headers, by[dup][1].body)).duplicate)
    assert.is_true(assert(rx:handle(by[dup][2].headers, by[dup][2].body)).duplicate)
    fails("auth", "signature does not match", webhook.verify(SECRET, by[forged][1].headers, by[forged][1].body))
    -- the stale delivery is stamped 600 s before the wall clock; verify reads the clock again,
    -- which may have ticked a second since
    local _, serr = webhook.verify(SECRET, by[stale][1].headers, by[stale][1].body)
    fails("auth", " s in the past", nil, serr)
    local ago = tonumber(serr.message:match("(%d+) s in the past"))
    assert.is_true(ago == 600 or ago == 601, serr.message)
  end)

  it("takes a configuration for the whole fake at POST /_fake/webhook, loopback URLs only", function()
    local now = 1000
    local m = new_model(function() return now end)
    local function call(method, path, body)
      local r = m:handle { method = method, path = path, body = body and json.encode(body), headers = {} }
      return r.status, model.decode_json(r.body)
    end
    local status, res = call("POST", "/_fake/webhook", { url = "http://example.com/hook", secret = SECRET })
    assert.are.equal(400, status)
    assert.truthy(res.error:find("127.0.0.1", 1, true))
    status = call("POST", "/_fake/webhook", { url = "http://127.0.0.1:9/all", secret = SECRET })
    assert.are.equal(200, status)
    local id = m:add_task { provider = "tripo", queue = 0, run = 0 }
    m:add_task { provider = "sellerpic", queue = 0, run = 0 }
    local list = fake_webhook.due(m)
    assert.are.equal(1, #list)
    assert.are.equal(id, list[1].record.task_id)
    assert.are.equal("/all", list[1].path)
    status, res = call("GET", "/_fake/webhook")
    assert.are.equal(200, status)
    assert.are.equal(1, #res.deliveries)
    assert.are.equal("http://127.0.0.1:9/all", res.config.url)
    assert.are.equal(200, (call("DELETE", "/_fake/webhook")))
    m:add_task { provider = "tripo", queue = 0, run = 0 }
    assert.are.equal(0, #fake_webhook.due(m))
    -- /_fake/reset forgets the configuration and the list of deliveries
    call("POST", "/_fake/webhook", { url = "http://127.0.0.1:9/all", secret = SECRET })
    call("POST", "/_fake/reset")
    m:add_task { provider = "tripo", queue = 0, run = 0 }
    assert.are.equal(0, #fake_webhook.due(m))
    status, res = call("GET", "/_fake/webhook")
    assert.are.equal(0, #res.deliveries)
  end)
end)
