-- Integration: status and wait through the real C module over real HTTP against the nginx
-- fake, for Tripo3D and SellerPic: the normalized task, id checks before any request, and the
-- basics of wait (the polling policy itself has its own specs).
local fe = require "support.fake_env"
local taskapi = require "taskapi"

describe("integration: status", function()
  local env

  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  for _, P in ipairs { "tripo", "tripo-v2" } do
  local V3 = P == "tripo"
  describe(P, function()
    local c
    setup(function() c = env:client(P) end)

    local function status_of(spec)
      spec.provider = P
      local id = env:add(spec)
      local task, err = c:status(id)
      assert.is_nil(err)
      assert.equal(id, task.id)
      assert.equal(P, task.provider)
      return task, id
    end

    it("maps a queued task: queue position from queuing_num, no ETA", function()
      local task = status_of { queue = 30, run = 1 }
      assert.equal("queued", task.state)
      assert.equal("queued", task.status)
      assert.is_false(task.done)
      assert.is_false(task.ok)
      assert.is_true(fe.is_integer(task.progress))
      assert.equal(0, task.progress)
      assert.is_true(fe.is_integer(task.queue_position))
      assert.is_true(task.queue_position >= 1 and task.queue_position <= 30)
      assert.is_nil(task.eta)            -- running_left_time is -1
      assert.same({}, task.outputs)
      assert.is_nil(task.error)
      if not V3 then assert.equal(-1, task.raw.running_left_time) end
      assert.equal("text_to_model", task.type)
      assert.is_number(task.created_at)
      assert.is_true(math.abs(task.created_at - os.time()) < 120, "created_at " .. tostring(task.created_at))
      assert.is_nil(task.completed_at)
    end)

    it("maps a running task: integer progress, ETA from running_left_time, no queue position", function()
      local task = status_of { queue = 0, run = 30 }
      assert.equal("running", task.state)
      assert.equal("running", task.status)
      assert.is_false(task.done)
      assert.is_true(fe.is_integer(task.progress))
      if math.type then assert.equal("integer", math.type(task.progress)) end
      assert.is_true(task.progress >= 0 and task.progress < 100)
      assert.is_true(fe.is_integer(task.eta))
      assert.is_true(task.eta > 20 and task.eta <= 30, "eta " .. tostring(task.eta))
      assert.is_nil(task.queue_position)  -- queuing_num is -1 (V2) or absent (V3)
      if not V3 then assert.equal(-1, task.raw.queuing_num) end
    end)

    it("maps a successful task: done, ok, progress 100, outputs, trace id", function()
      local task = status_of { queue = 0, run = 0 }
      assert.equal("succeeded", task.state)
      assert.equal("success", task.status)
      assert.is_true(task.done)
      assert.is_true(task.ok)
      assert.equal(100, task.progress)
      if math.type then assert.equal("integer", math.type(task.progress)) end
      assert.is_nil(task.eta)
      assert.is_nil(task.queue_position)
      assert.is_nil(task.error)
      assert.equal(2, #task.outputs)
      assert.equal("model", task.outputs[1].name)
      assert.equal("model", task.outputs[1].kind)
      assert.equal("rendered_image", task.outputs[2].name)
      assert.equal("image", task.outputs[2].kind)
      for _, o in ipairs(task.outputs) do
        assert.equal(env.url .. "/files/", o.url:sub(1, #env.url + 7))
      end
      assert.is_string(task.trace_id)
      assert.truthy(task.trace_id:match("^fake%-trace%-%x+$"), task.trace_id)
      assert.equal("success", task.raw.status)
      assert.is_number(task.credits)
      assert.is_true(task.credits > 0)
      if V3 then
        assert.is_number(task.completed_at)
        assert.is_true(task.completed_at >= task.created_at)
        assert.is_string(task.raw.output.model_url)
      else
        assert.is_string(task.raw.output.model)
      end
    end)

    it("takes the trace id of the last response (X-Tripo-Trace-ID)", function()
      local id = env:add { provider = P, queue = 0, run = 0 }
      local a = assert(c:status(id))
      local b = assert(c:status(id))
      assert.is_string(a.trace_id)
      assert.is_string(b.trace_id)
      assert.are_not.equal(a.trace_id, b.trace_id)
    end)

    -- V3 sends five statuses: banned and expired come as failed with error_code 2008 / 2018.
    local FINALS = {
      { "failed", "failed", 1001, "failed" },
      { "banned", "banned", 2008, "failed" },
      { "expired", "expired", V3 and 2018 or nil, "failed" },
      { "cancelled", "cancelled", nil, "cancelled" },
      { "unknown", "unknown", nil, "unknown" },
    }
    for _, f in ipairs(FINALS) do
      local status, state, code, v3_status = f[1], f[2], f[3], f[4]
      it("maps final status '" .. status .. "' to state '" .. state .. "'", function()
        local task = status_of { queue = 0, run = 0, final = status }
        assert.equal(state, task.state)
        assert.equal(V3 and v3_status or status, task.status)
        assert.is_true(task.done)
        assert.is_false(task.ok)
        assert.same({}, task.outputs)
        if code then
          assert.same(code, task.error and task.error.code)
          assert.is_string(task.error.message)
          if not V3 then assert.truthy(task.error.message:find(tostring(code), 1, true)) end
          if V3 then assert.is_string(task.raw.error_message) end
          if V3 then assert.equal(task.raw.error_message, task.error.message) end
        else
          assert.is_nil(task.error)
        end
      end)
    end

    it("takes a failed task's error code from the provider (error_code)", function()
      local task = status_of { queue = 0, run = 0, final = "failed", error_code = 2003 }
      assert.equal("failed", task.state)
      assert.equal(2003, task.error.code)
      assert.is_string(task.error.message)
    end)

    it("finalizes a status nobody documented as 'unknown' and keeps the raw value", function()
      local task = status_of { queue = 0, run = 0, status_value = "paused" }
      assert.equal("unknown", task.state)
      assert.equal("paused", task.status)
      assert.equal("paused", task.raw.status)
      assert.is_true(task.done)
      assert.is_false(task.ok)
    end)

    it("lists outputs in the stable order, multiview views and undocumented URL fields last", function()
      local task, id = status_of {
        queue = 0, run = 0, multiview = true,
        outputs = { "rendered_image", "zeta_extra", "generated_image", "pbr_model", "alpha_extra",
          "base_model", "model" },
      }
      local names = {}
      for i, o in ipairs(task.outputs) do
        names[i] = o.name
        assert.is_string(o.url)
        assert.truthy(o.url:find("/files/", 1, true))
      end
      if V3 then
        -- V3 has one model_url for what V2 split into model, base_model and pbr_model
        assert.same({ "model", "generated_image", "rendered_image",
          "front_view", "left_view", "back_view", "right_view", "alpha_extra", "zeta_extra" }, names)
      else
        assert.same({ "model", "base_model", "pbr_model", "generated_image", "rendered_image",
          "front_view", "left_view", "back_view", "right_view", "alpha_extra", "zeta_extra" }, names)
      end
      local views = V3 and 4 or 6
      assert.equal("model", task.outputs[1].kind)
      assert.equal("image", task.outputs[views].kind)
      assert.truthy(task.outputs[views].url:match("/front%.png$"))
      assert.truthy(task.outputs[views + 3].url:match("/right%.png$"))
      -- the same order on every read
      local again = assert(c:status(id))
      for i, o in ipairs(again.outputs) do assert.equal(names[i], o.name) end
    end)

  end)
  end

  describe("sellerpic", function()
    local c
    setup(function() c = env:client("sellerpic") end)

    local function status_of(spec)
      spec.provider = "sellerpic"
      local id = env:add(spec)
      local task, err = c:status(id)
      assert.is_nil(err)
      assert.equal(id, task.id)
      assert.equal("sellerpic", task.provider)
      return task, id
    end

    it("derives 'queued' while every result is CREATED", function()
      local task = status_of { queue = 30, run = 1, results = 2 }
      assert.equal("queued", task.state)
      assert.is_false(task.done)
      assert.same({}, task.outputs)
      assert.equal(2, #task.results)
      for _, r in ipairs(task.results) do assert.equal("CREATED", r.status) end
    end)

    it("derives 'running' from RUNNING results", function()
      local task = status_of { queue = 0, run = 30, results = 2 }
      assert.equal("running", task.state)
      assert.is_false(task.done)
      assert.same({}, task.outputs)
    end)

    it("names each output by its result id and takes the trace id from traceId", function()
      local task = status_of { queue = 0, run = 0, results = 3 }
      assert.equal("succeeded", task.state)
      assert.is_true(task.done)
      assert.is_true(task.ok)
      assert.equal(3, #task.outputs)
      local seen = {}
      for _, o in ipairs(task.outputs) do
        assert.is_string(o.name)
        assert.truthy(o.name:match("^%d+$"), o.name)
        assert.is_nil(seen[o.name])
        seen[o.name] = true
        -- the result's file link ends with its id
        assert.equal(o.name, o.url:match("/(%d+)%.png$"))
      end
      -- in the order of resultList
      for i, r in ipairs(task.raw.resultList) do
        assert.equal(task.outputs[i].name, type(r.id) == "string" and r.id or string.format("%d", r.id))
      end
      assert.truthy(task.trace_id and task.trace_id:match("^fake%-trace%-%x+$"))
      -- raw is untouched: JSON null stays taskapi.null
      assert.equal(taskapi.null, task.raw.resultList[1].errorCode)
    end)

    it("derives 'failed' when every result failed, with the provider's error", function()
      local task = status_of { queue = 0, run = 0, results = 2, final = "FAILED", error_code = 50042 }
      assert.equal("failed", task.state)
      assert.is_true(task.done)
      assert.is_false(task.ok)
      assert.same({}, task.outputs)
      assert.equal(50042, task.error.code)
      assert.equal("generation failed", task.error.message)
    end)

    it("derives 'succeeded' from SUCCESS + FAILED and keeps the failed result's error", function()
      local task = status_of { queue = 0, run = 0, result_states = { "SUCCESS", "FAILED" } }
      assert.equal("succeeded", task.state)
      assert.is_true(task.ok)
      assert.is_nil(task.error)
      assert.equal(1, #task.outputs)
      assert.equal(2, #task.results)
      assert.equal("succeeded", task.results[1].state)
      assert.equal("failed", task.results[2].state)
      assert.equal(50001, task.results[2].error.code)
      assert.equal("generation failed", task.results[2].error.message)
      assert.equal(task.results[1].name, task.outputs[1].name)
    end)

    it("finalizes an undocumented result status as 'unknown' and keeps the raw value", function()
      local task = status_of { queue = 0, run = 0, status_value = "PAUSED" }
      assert.equal("unknown", task.state)
      assert.equal("PAUSED", task.status)
      assert.is_true(task.done)
      assert.is_false(task.ok)
      assert.equal("PAUSED", task.raw.resultList[1].status)
    end)

    it("keeps 19-digit numeric ids exact (create answers a JSON number)", function()
      local id = assert(c:create { type = "instructEdit", prompt = "x",
        fake = { queue = 0, run = 0, results = 2, numeric_ids = true } })
      assert.is_string(id)
      assert.truthy(id:match("^%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d$"), id)
      local info = env:task_info(id)
      assert.is_table(info, "the fake knows no task " .. id)
      assert.equal(id, info.id)
      local task = assert(c:status(id))
      assert.equal(id, task.id)
      assert.equal(2, #task.outputs)
      for _, o in ipairs(task.outputs) do
        assert.truthy(o.name:match("^%d+$") and #o.name == 19, o.name)
        assert.equal(o.name, o.url:match("/(%d+)%.png$"))
      end
      -- neighbours differ in their last digits only: still two distinct names
      assert.are_not.equal(task.outputs[1].name, task.outputs[2].name)
    end)

    it("builds the URL of an integer id without '.0'", function()
      local id = env:add { provider = "sellerpic", id = 4242, queue = 0, run = 0 }
      assert.equal("4242", id)
      local mark = env:mark()
      local task = assert(c:status(4242))
      assert.equal("4242", task.id)
      assert.equal("succeeded", task.state)
      local reqs = env:log(mark)
      assert.equal(1, #reqs)
      assert.equal("/sellerpic/v1/api/generate", reqs[1].path)
      assert.equal("4242", reqs[1].query.id)
    end)

    it("reports an error code under HTTP 200 as an error with the provider's code", function()
      local c0 = env:client("sellerpic", { retries = 0 })
      local id = env:add { provider = "sellerpic", queue = 0, run = 0, code_under_200 = { count = 5, code = 30003 } }
      local task, err = c0:status(id)
      assert.is_nil(task)
      fe.check_err(err, "rate_limited")
      assert.equal(30003, err.code)
      assert.equal(200, err.status)
      assert.equal(id, err.task_id)
      local id2 = env:add { provider = "sellerpic", queue = 0, run = 0, code_under_200 = 5 }
      task, err = c0:status(id2)
      assert.is_nil(task)
      fe.check_err(err)
      assert.equal(500, err.code)
      assert.equal(200, err.status)
    end)
  end)

  describe("tripo error code under HTTP 200", function()
    it("is an error with the provider's code, retried as transient (1000)", function()
      local c0 = env:client("tripo", { retries = 0 })
      local id = env:add { provider = "tripo", queue = 0, run = 0, code_under_200 = { count = 5, code = 1000 } }
      local task, err = c0:status(id)
      assert.is_nil(task)
      fe.check_err(err, "server")
      assert.equal(1000, err.code)
      assert.equal(200, err.status)
      assert.is_true(err.retryable)
      -- with retries, one such answer is survived
      local c3 = env:client("tripo")
      local id2 = env:add { provider = "tripo", queue = 0, run = 0, code_under_200 = 1 }
      local t2 = assert(c3:status(id2))
      assert.equal("succeeded", t2.state)
    end)
  end)

  describe("ids are checked before any request", function()
    local tripo, sp
    setup(function()
      tripo = env:client("tripo")
      sp = env:client("sellerpic")
    end)

    local BAD_TRIPO = {
      { "", "empty" },
      { "a/b", "'/'" },
      { "..", "'..'" },
      { "a b", "a space" },
      { "x\n", "\\10" },
      { string.rep("a", 300), "300 bytes" },
      { 42, "must be a string" },
      { {}, "must be a string" },
      { false, "must be a string" },
    }
    local BAD_SP = {
      { "12a", "digits only" },
      { 1.5, "not a whole positive number" },
      { -3, "not a whole positive number" },
      { 2.0 ^ 60, "2^53" },
      { "", "empty" },
      { 0 / 0, "not a finite number" },
      { "123456789012345678901", "digits" },
      { {}, "must be a string of digits or an integer" },
    }

    local function check(client, list)
      local mark = env:mark()
      for _, case in ipairs(list) do
        local id, want = case[1], case[2]
        local shown = type(id) == "string" and ("%q"):format(id:sub(1, 20)) or tostring(id)
        for _, call in ipairs({ "status", "wait", "download" }) do
          local r, err = client[call](client, id, call == "download" and { dir = "/tmp" } or { timeout = 1 })
          assert.is_nil(r, call .. " " .. shown)
          fe.check_err(err, "invalid_argument")
          -- a table given to download is a malformed task, not an id
          if call == "download" and type(id) == "table" then want = "expects a" end
          assert.truthy(err.message:find(want, 1, true),
            call .. " " .. shown .. ": message '" .. err.message .. "' should name " .. want)
        end
      end
      assert.same({}, env:log(mark))
    end

    it("tripo: empty, '/', '..', space, control character, too long, not a string", function()
      check(tripo, BAD_TRIPO)
    end)

    it("sellerpic: non-digits, fraction, negative, float above 2^53, empty, NaN, too long", function()
      check(sp, BAD_SP)
    end)

    it("accepts a large SellerPic id given as a string and sends it exactly", function()
      local id = "1869254799999999999"
      local mark = env:mark()
      local task, err = sp:status(id)
      assert.is_nil(task)
      fe.check_err(err, "not_found")
      local reqs = env:log(mark)
      assert.equal(1, #reqs)
      assert.equal(id, reqs[1].query.id)
    end)
  end)

  describe("wait", function()
    local OPTS = { interval = 0.05, max_interval = 0.2, timeout = 20 }

    local TRIPO_FINALS = {
      success = "succeeded", failed = "failed", banned = "banned", expired = "expired",
      cancelled = "cancelled", unknown = "unknown",
    }
    for final, state in pairs(TRIPO_FINALS) do
      for _, P in ipairs { "tripo", "tripo-v2" } do
      it(P .. ": returns the finalized task when it ends '" .. final .. "'", function()
        local c = env:client(P)
        local id = env:add { provider = P, queue = 0.3, run = 0.2, final = final }
        local seen = {}
        local task, err = c:wait(id, { interval = 0.05, max_interval = 0.2, timeout = 20,
          on_progress = function(t) seen[#seen + 1] = t.state end })
        assert.is_nil(err)
        assert.equal(id, task.id)
        assert.equal(state, task.state)
        assert.is_true(task.done)
        assert.equal(state == "succeeded", task.ok)
        assert.equal(state, seen[#seen])
        if fe.FAST then -- under valgrind the first poll may come after the queue time
          assert.equal("queued", seen[1])   -- the first poll comes at once
          assert.is_true(#seen >= 2, "on_progress saw " .. table.concat(seen, ","))
        end
      end)
      end
    end

    for _, final in ipairs({ "SUCCESS", "FAILED" }) do
      it("sellerpic: returns the finalized task when its results end " .. final, function()
        local c = env:client("sellerpic")
        local id = env:add { provider = "sellerpic", queue = 0.1, run = 0.2, final = final, results = 2 }
        local task, err = c:wait(id, OPTS)
        assert.is_nil(err)
        assert.equal(id, task.id)
        assert.is_true(task.done)
        assert.equal(final == "SUCCESS" and "succeeded" or "failed", task.state)
        assert.equal(final == "SUCCESS" and 2 or 0, #task.outputs)
      end)
    end

    for _, p in ipairs(fe.PROVIDERS) do
      it(p .. ": times out with the last task and the task id", function()
        local c = env:client(p)
        local id = env:add { provider = p, queue = 60, run = 1 }
        local t0 = fe.now()
        local task, err = c:wait(id, { timeout = 0.5, interval = 0.1 })
        local took = fe.now() - t0
        assert.is_nil(task)
        fe.check_err(err, "timeout")
        assert.equal(id, err.task_id)
        assert.is_table(err.task)
        assert.equal(id, err.task.id)
        assert.equal("queued", err.task.state)
        assert.is_true(took >= 0.4, "returned after " .. took .. " s")
        if fe.FAST then assert.is_true(took < 3, "returned after " .. took .. " s") end
      end)

      it(p .. ": a 401 ends the wait at once", function()
        local bad = env:client(p, { api_key = "wrong-key-123" })
        local id = env:add { provider = p, queue = 0, run = 0 }
        local mark = env:mark()
        local task, err = bad:wait(id, { timeout = 30, interval = 0.05 })
        assert.is_nil(task)
        fe.check_err(err, "auth")
        assert.equal(401, err.status)
        assert.is_false(err.retryable)
        assert.equal(1, #env:log(mark))
      end)
    end
  end)
end)
