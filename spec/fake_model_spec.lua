-- taskapi.fake.model driven directly, with an injected clock.
local model = require "taskapi.fake.model"
local json = require "taskapi.json"
local cjson = require "cjson"
local files = require "taskapi.util.files"

-- POST /tasks/list answers tasks as an array (the default list_shape, as Tripo's SDKs read it):
-- keyed by task_id here for the checks
local function by_id(tasks)
  local out = {}
  for k, t in pairs(tasks) do out[type(k) == "number" and t.task_id or k] = t end
  return out
end

local tmpdir, read_all = files.tmpdir, files.read

local TRIPO = "/tripo/v2/openapi"
local SP = "/sellerpic/v1/api"
local AUTH = { authorization = "Bearer test-key" }
local OTHER = { authorization = "Bearer other-key" }

local dir, now, m

local function new_model(opts)
  opts = opts or {}
  opts.clock = function() return now end
  opts.files_dir = dir
  return model.new(opts)
end

local function get(path, query, headers)
  return m:handle({ method = "GET", path = path, query = query or {}, headers = headers or AUTH })
end

local function post(path, body, headers)
  return m:handle({ method = "POST", path = path, query = {}, headers = headers or AUTH, body = body })
end

local function decode(resp) return cjson.decode(resp.body) end

local function tstatus(id, headers)
  local r = get(TRIPO .. "/task/" .. id, nil, headers)
  return r, r.status == 200 and decode(r) or nil
end

local function sstatus(id, headers)
  local r = get(SP .. "/generate", { id = id }, headers)
  return r, decode(r)
end

local function file_get(url, headers)
  local p = url:match("^http://fake%.invalid(/files/.*)$")
  assert.is_string(p, "not a fake file link: " .. tostring(url))
  return m:handle({ method = "GET", path = p, query = {}, headers = headers or {} })
end

local function body_of(resp)
  local f = assert(io.open(resp.file, "rb"))
  f:seek("set", resp.offset)
  local s = f:read(resp.length) or ""
  f:close()
  return s
end

describe("fake model", function()
  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    now = 1700000000
    m = new_model()
  end)

  describe("Tripo tasks", function()
    it("goes queued -> running -> success on schedule", function()
      local id = m:add_task({ provider = "tripo", queue = 3, run = 4 })
      assert.is_string(id)
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", id)
      local r, b = tstatus(id)
      assert.equal(200, r.status)
      assert.equal("application/json", r.headers["Content-Type"])
      assert.is_string(r.headers["X-Tripo-Trace-ID"])
      assert.equal(0, b.code)
      local d = b.data
      assert.equal(id, d.task_id)
      assert.equal("queued", d.status)
      assert.equal(3, d.queuing_num)
      assert.equal(-1, d.running_left_time)
      assert.equal(0, d.progress)
      assert.equal(1700000000, d.create_time)
      assert.equal("text_to_model", d.type)
      now = now + 1.5
      assert.equal(2, select(2, tstatus(id)).data.queuing_num)
      now = now + 1
      assert.equal(1, select(2, tstatus(id)).data.queuing_num)
      now = 1700000000 + 3 -- running starts
      d = select(2, tstatus(id)).data
      assert.equal("running", d.status)
      assert.equal(0, d.progress)
      assert.equal(4, d.running_left_time)
      assert.equal(-1, d.queuing_num)
      now = 1700000000 + 5
      d = select(2, tstatus(id)).data
      assert.equal(50, d.progress)
      assert.equal(2, d.running_left_time)
      now = 1700000000 + 6.5
      d = select(2, tstatus(id)).data
      assert.equal(87, d.progress)
      assert.equal(1, d.running_left_time)
      assert.equal(math.floor(d.running_left_time), d.running_left_time)
      now = 1700000000 + 7
      d = select(2, tstatus(id)).data
      assert.equal("success", d.status)
      assert.equal(100, d.progress)
      assert.equal(-1, d.running_left_time)
      assert.equal(-1, d.queuing_num)
      assert.matches("^http://fake%.invalid/files/%w+/model%.glb$", d.output.model)
      assert.matches("^http://fake%.invalid/files/%w+/rendered_image%.webp$", d.output.rendered_image)
      assert.is_nil(d.error_code)
    end)

    it("reports every documented final status, failed ones with error_code under HTTP 200", function()
      for _, final in ipairs({ "success", "failed", "banned", "expired", "cancelled", "unknown" }) do
        local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = final })
        local r, b = tstatus(id)
        assert.equal(200, r.status)
        assert.equal(0, b.code)
        assert.equal(final, b.data.status)
        if final == "failed" then assert.equal(1001, b.data.error_code) end
        if final == "banned" then assert.equal(2008, b.data.error_code) end
        if final ~= "success" then assert.same({}, b.data.output) end
      end
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = "failed", error_code = 2006 })
      assert.equal(2006, select(2, tstatus(id)).data.error_code)
    end)

    it("reports an undocumented raw status when asked", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 1, status_value = "paused" })
      assert.equal("running", select(2, tstatus(id)).data.status)
      now = now + 1
      assert.equal("paused", select(2, tstatus(id)).data.status)
    end)

    it("adds noise to the ETA when asked, never below 0", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 100, eta_noise = 5 })
      local seen = {}
      for i = 1, 20 do
        now = 1700000000 + i
        local d = select(2, tstatus(id)).data
        local exact = 100 - i
        assert.is_true(math.abs(d.running_left_time - exact) <= 5)
        assert.is_true(d.running_left_time >= 0)
        seen[d.running_left_time - exact] = true
      end
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.is_true(n > 1)
    end)

    it("serves chosen outputs and multiview views", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, outputs = { "pbr_model", "generated_image" },
        multiview = true })
      local out = select(2, tstatus(id)).data.output
      assert.matches("/pbr_model%.glb$", out.pbr_model)
      assert.matches("/generated_image%.png$", out.generated_image)
      assert.is_nil(out.model)
      local mv = out.generate_multiview_image
      for _, v in ipairs({ "front", "left", "back", "right" }) do
        local url = mv[v .. "_view_url"]
        assert.matches("/" .. v .. "%.png$", url)
        local f = file_get(url)
        assert.equal(200, f.status)
        assert.equal("image/png", f.headers["Content-Type"])
      end
      local g = file_get(out.pbr_model)
      assert.equal("model/gltf-binary", g.headers["Content-Type"])
    end)

    it("creates tasks from POST /task, scripted by a fake field", function()
      local r = post(TRIPO .. "/task", '{"type":"image_to_model","file":{"type":"png"},"fake":{"queue":0,"run":0,"final":"banned"}}')
      assert.equal(200, r.status)
      local id = decode(r).data.task_id
      assert.is_string(id)
      local d = select(2, tstatus(id)).data
      assert.equal("banned", d.status)
      assert.equal("image_to_model", d.type)
      assert.same({ type = "png" }, d.input.file)
      assert.is_nil(d.input.fake)
    end)

    it("answers 400 code 1004 without a type and 1003 for a malformed body", function()
      local r = post(TRIPO .. "/task", '{"prompt":"x"}')
      assert.equal(400, r.status)
      local b = decode(r)
      assert.equal(1004, b.code)
      assert.is_string(b.message)
      assert.is_string(b.suggestion)
      assert.is_string(r.headers["X-Tripo-Trace-ID"])
      r = post(TRIPO .. "/task", '{"type":')
      assert.equal(400, r.status)
      assert.equal(1003, decode(r).code)
    end)

    it("answers balance and upload", function()
      local r = get(TRIPO .. "/user/balance")
      assert.equal(200, r.status)
      local d = decode(r).data
      assert.equal(3000, d.balance)
      assert.equal(0, d.frozen)
      local body = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n" ..
        "Content-Type: image/png\r\n\r\n\137PNG-data\r\n--XyZ--\r\n"
      r = m:handle({ method = "POST", path = TRIPO .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = "multipart/form-data; boundary=XyZ" }, body = body })
      assert.equal(200, r.status)
      assert.is_string(decode(r).data.image_token)
      -- not multipart, or without a file part
      r = m:handle({ method = "POST", path = TRIPO .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = "application/json" }, body = "{}" })
      assert.equal(400, r.status)
      assert.equal(1003, decode(r).code)
      r = m:handle({ method = "POST", path = TRIPO .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = "multipart/form-data; boundary=XyZ" },
        body = "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--XyZ--\r\n" })
      assert.equal(400, r.status)
      r = m:handle({ method = "POST", path = TRIPO .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = "multipart/form-data; boundary=XyZ" },
        body = body:sub(1, 60) })
      assert.equal(400, r.status)
    end)
  end)

  describe("auth and ownership", function()
    it("answers 401 code 1002 to a missing or unknown key", function()
      local id = m:add_task({ provider = "tripo" })
      for _, h in ipairs({ {}, { authorization = "Bearer nope" }, { authorization = "Basic dGVzdA==" } }) do
        local r = get(TRIPO .. "/task/" .. id, nil, h)
        assert.equal(401, r.status)
        assert.equal(1002, decode(r).code)
        assert.is_string(r.headers["X-Tripo-Trace-ID"])
      end
      local r = get(SP .. "/usage", nil, {})
      assert.equal(401, r.status)
      local b = decode(r)
      assert.equal(401, b.code)
      assert.is_false(b.success)
      assert.equal(cjson.null, b.data)
      assert.is_string(b.traceId)
    end)

    it("hides a task from another key (404, code 2001) and unknown ids alike", function()
      local id = m:add_task({ provider = "tripo" })
      local r = get(TRIPO .. "/task/" .. id, nil, OTHER)
      assert.equal(404, r.status)
      local b = decode(r)
      assert.equal(2001, b.code)
      assert.equal("task not found", b.message)
      r = get(TRIPO .. "/task/no-such-task")
      assert.equal(404, r.status)
      assert.equal(2001, decode(r).code)
      local mine = m:add_task({ provider = "tripo", owner_key = "other-key" })
      assert.equal(200, get(TRIPO .. "/task/" .. mine, nil, OTHER).status)
      assert.equal(404, get(TRIPO .. "/task/" .. mine).status)
    end)

    it("gives a created task to the key that created it", function()
      local r = post(TRIPO .. "/task", '{"type":"text_to_model"}', OTHER)
      local id = decode(r).data.task_id
      assert.equal(404, get(TRIPO .. "/task/" .. id).status)
      assert.equal(200, get(TRIPO .. "/task/" .. id, nil, OTHER).status)
    end)

    it("logs every request with the key, and file requests without one", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0 })
      local _, b = tstatus(id)
      file_get(b.data.output.model)
      get(TRIPO .. "/user/balance", nil, {})
      assert.equal(3, #m.log)
      assert.equal("GET", m.log[1].method)
      assert.equal(TRIPO .. "/task/" .. id, m.log[1].path)
      assert.is_true(m.log[1].authorization)
      assert.equal("test-key", m.log[1].key)
      assert.is_nil(m.log[1].headers.authorization)
      assert.matches("^/files/", m.log[2].path)
      assert.is_false(m.log[2].authorization)
      assert.is_nil(m.log[2].key)
      assert.is_false(m.log[3].authorization)
      assert.equal(now, m.log[1].time)
      local log = m.log
      m:reset()
      assert.equal(log, m.log)
      assert.equal(0, #m.log)
      assert.equal(404, get(TRIPO .. "/task/" .. id).status)
    end)
  end)

  describe("SellerPic tasks", function()
    it("creates with a 19-digit id and goes CREATED -> RUNNING -> SUCCESS", function()
      local r = post(SP .. "/generate/instructEdit", '{"imageUrl":"x","fake":{"queue":1,"run":1,"results":2}}')
      assert.equal(200, r.status)
      local b = decode(r)
      assert.equal(0, b.code)
      assert.is_true(b.success)
      assert.is_string(b.traceId)
      local id = b.data.id
      assert.matches("^%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d$", id)
      assert.is_true(tonumber(id) > 2 ^ 53)
      local _, s = sstatus(id)
      assert.equal(2, #s.data.resultList)
      for _, e in ipairs(s.data.resultList) do
        assert.equal("CREATED", e.status)
        assert.equal("", e.fileUrl)
        assert.matches("^%d+$", e.id)
      end
      now = now + 1
      _, s = sstatus(id)
      assert.equal("RUNNING", s.data.resultList[1].status)
      now = now + 1
      _, s = sstatus(id)
      for _, e in ipairs(s.data.resultList) do
        assert.equal("SUCCESS", e.status)
        assert.matches("^http://fake%.invalid/files/", e.fileUrl)
        assert.equal(cjson.null, e.errorMsg)
      end
      assert.not_equal(s.data.resultList[1].id, s.data.resultList[2].id)
    end)

    it("reports mixed and failed results with errorCode and errorMsg", function()
      local id = m:add_task({ provider = "sellerpic", queue = 0, run = 0, result_states = { "SUCCESS", "FAILED" } })
      local _, s = sstatus(id)
      local l = s.data.resultList
      assert.equal(2, #l)
      assert.equal("SUCCESS", l[1].status)
      assert.equal("FAILED", l[2].status)
      assert.equal("", l[2].fileUrl)
      assert.equal(50001, l[2].errorCode)
      assert.is_string(l[2].errorMsg)
      id = m:add_task({ provider = "sellerpic", queue = 0, run = 0, final = "failed", error_code = 777 })
      _, s = sstatus(id)
      assert.equal("FAILED", s.data.resultList[1].status)
      assert.equal(777, s.data.resultList[1].errorCode)
      id = m:add_task({ provider = "sellerpic", queue = 0, run = 0, status_value = "PAUSED" })
      assert.equal("PAUSED", select(2, sstatus(id)).data.resultList[1].status)
    end)

    it("emits ids as JSON numbers with numeric_ids", function()
      local id = m:add_task({ provider = "sellerpic", id = "1869254713398571010", queue = 0, run = 0, numeric_ids = true })
      assert.equal("1869254713398571010", id)
      local r = get(SP .. "/generate", { id = id })
      local rid = m:task(id).results[1].id
      assert.truthy(r.body:find('"id":' .. rid, 1, true))
      r = post(SP .. "/generate/tryOnApparel", '{"fake":{"numeric_ids":true}}')
      assert.matches('"data":{"id":%d+}', r.body)
    end)

    it("gives download links per result and format, and refuses bad ones", function()
      local id = m:add_task({ provider = "sellerpic", queue = 0, run = 0, results = 2 })
      local _, s = sstatus(id)
      local rid = s.data.resultList[2].id
      for _, fmt in ipairs({ "jpg", "png", "webp" }) do
        local r = get(SP .. "/download", { id = rid, downloadFormat = fmt, uhd = "true" })
        assert.equal(200, r.status)
        local d = decode(r).data
        assert.equal("SUCCESS", d.status)
        assert.equal(rid .. "." .. fmt, d.name)
        assert.equal(cjson.null, d.errorMsg)
        local f = file_get(d.fileUrl)
        assert.equal(200, f.status)
        assert.equal(({ jpg = "image/jpeg", png = "image/png", webp = "image/webp" })[fmt], f.headers["Content-Type"])
      end
      local r = get(SP .. "/download", { id = rid, downloadFormat = "mp4" })
      assert.equal(400, r.status)
      assert.is_false(decode(r).success)
      r = get(SP .. "/download", { id = "1234567890123456789", downloadFormat = "png" })
      assert.equal(404, r.status)
      assert.equal(404, decode(r).code)
      r = get(SP .. "/download", { id = id, downloadFormat = "png" }) -- a task id is not a result id
      assert.equal(404, r.status)
      r = get(SP .. "/download", { id = rid, downloadFormat = "png" }, OTHER)
      assert.equal(404, r.status)
      -- videos
      local vid = m:add_task({ provider = "sellerpic", type = "imageToVideo", queue = 0, run = 0 })
      local vrid = m:task(vid).results[1].id
      for _, fmt in ipairs({ "mp4", "gif", "webp" }) do
        assert.equal(200, get(SP .. "/download", { id = vrid, downloadFormat = fmt }).status)
      end
      assert.equal(400, get(SP .. "/download", { id = vrid, downloadFormat = "png" }).status)
      local d = decode(get(SP .. "/download", { id = vrid, downloadFormat = "mp4" })).data
      assert.equal("video/mp4", file_get(d.fileUrl).headers["Content-Type"])
    end)

    it("says a result is not ready before it succeeded", function()
      local id = m:add_task({ provider = "sellerpic", queue = 5, run = 5 })
      local rid = m:task(id).results[1].id
      local d = decode(get(SP .. "/download", { id = rid, downloadFormat = "png" })).data
      assert.equal("CREATED", d.status)
      assert.equal(cjson.null, d.fileUrl)
    end)

    it("hides tasks from other keys and answers usage and upload", function()
      local id = m:add_task({ provider = "sellerpic" })
      local r = sstatus(id, OTHER)
      assert.equal(404, r.status)
      r = get(SP .. "/generate", { id = "42" })
      assert.equal(404, r.status)
      assert.equal(400, get(SP .. "/generate", {}).status)
      post(SP .. "/generate/instructEdit", "{}")
      local u = decode(get(SP .. "/usage")).data
      assert.equal(1000, u.total)
      assert.equal(1, u.usage)
      assert.equal(999, u.remaining)
      local body = "--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"shoe.jpg\"\r\n\r\nJPEG\r\n--b1--\r\n"
      r = m:handle({ method = "POST", path = SP .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = 'multipart/form-data; boundary="b1"' }, body = body })
      assert.equal(200, r.status)
      assert.matches("^UPLOAD/%d+/shoe%.jpg$", decode(r).data.fileKey)
      r = m:handle({ method = "POST", path = SP .. "/upload", query = {},
        headers = { authorization = "Bearer test-key", ["content-type"] = "image/jpeg" }, body = "JPEG" })
      assert.equal(400, r.status)
    end)
  end)

  describe("faults", function()
    -- model.FAULT_TABLE is the one list of faults: each is known where it is set, each answer
    -- field it names is played by both hosts, and doc/internals.md lists every one
    it("FAULT_TABLE: every fault is taken where it is set, played by both hosts, documented", function()
      local hosts = { files.read("lua/taskapi/fake/server.lua"), files.read("lua/taskapi/fake/inprocess.lua") }
      local doc = files.read("doc/internals.md")
      local names = {}
      for _, f in ipairs(model.FAULT_TABLE) do
        local name, where, what, field = f[1], f[2], f[3], f[4]
        assert.is_nil(names[name], "twice: " .. name)
        names[name] = true
        assert.is_true(where == "task" or where == "request", name)
        assert.is_string(what, name)
        if where == "task" then
          assert.is_string(m:add_task({ provider = "tripo", faults = { [name] = 1 } }), name)
        else
          assert.is_true(m:add_request_fault({ on = "create", fault = name }), name)
        end
        if field then
          for i, src in ipairs(hosts) do
            assert.truthy(src:find("resp." .. field, 1, true), name .. ": host " .. i .. " does not act on resp." .. field)
          end
        end
        assert.truthy(doc:find("`" .. name .. "`", 1, true), name .. " is not in doc/internals.md")
      end
      local ok, err = m:add_request_fault({ on = "create", fault = "explode" })
      assert.is_nil(ok)
      assert.matches("unknown request fault 'explode'", err)
    end)

    it("FAULT_TABLE: a task fault's hook is one the model plays; a host missing an answer field fails at load", function()
      local hooks = { status = true, data = true, reply = true, link = true, file = true, get = true }
      local fields = {}
      for _, f in ipairs(model.FAULT_TABLE) do
        if f.at then
          assert.is_true(hooks[f.at], f[1] .. ": unknown hook " .. tostring(f.at))
          assert.is_function(f.play, f[1])
        end
        if f[4] then fields[f[4]] = true end
      end
      assert.is_true(model.check_host("all", fields))
      local field = next(fields)
      fields[field] = nil
      local ok, err = pcall(model.check_host, "a host", fields)
      assert.is_false(ok)
      assert.matches("a host does not play resp%." .. field, err)
    end)

    it("server_errors: the next N requests answer 500 code 1000", function()
      local id = m:add_task({ provider = "tripo", faults = { server_errors = 2 } })
      for _ = 1, 2 do
        local r = get(TRIPO .. "/task/" .. id)
        assert.equal(500, r.status)
        assert.equal(1000, decode(r).code)
        assert.is_string(r.headers["X-Tripo-Trace-ID"])
      end
      assert.equal(200, get(TRIPO .. "/task/" .. id).status)
      local sid = m:add_task({ provider = "sellerpic", server_errors = 1 }) -- top-level form
      local r = sstatus(sid)
      assert.equal(500, r.status)
      assert.is_false(decode(r).success)
      assert.equal(200, sstatus(sid).status)
    end)

    it("rate_limit: 429 code 2000 with Retry-After in seconds or as a date", function()
      local id = m:add_task({ provider = "tripo", faults = { rate_limit = { count = 1, retry_after = 7 } } })
      local r = get(TRIPO .. "/task/" .. id)
      assert.equal(429, r.status)
      assert.equal(2000, decode(r).code)
      assert.equal("7", r.headers["Retry-After"])
      assert.equal(200, get(TRIPO .. "/task/" .. id).status)
      id = m:add_task({ provider = "tripo", faults = { rate_limit = { count = 2, retry_after = 30, as_date = true } } })
      r = get(TRIPO .. "/task/" .. id)
      assert.equal(429, r.status)
      assert.equal(os.date("!%a, %d %b %Y %H:%M:%S GMT", 1700000030), r.headers["Retry-After"])
      assert.equal(429, get(TRIPO .. "/task/" .. id).status)
      assert.equal(200, get(TRIPO .. "/task/" .. id).status)
      local sid = m:add_task({ provider = "sellerpic", faults = { rate_limit = 1 } })
      r = sstatus(sid)
      assert.equal(429, r.status)
      assert.equal("1", r.headers["Retry-After"])
    end)

    it("malformed_json: 200 with a truncated body", function()
      local id = m:add_task({ provider = "tripo", faults = { malformed_json = 1 } })
      local r = get(TRIPO .. "/task/" .. id)
      assert.equal(200, r.status)
      assert.is_false(pcall(cjson.decode, r.body))
      assert.is_true(#r.body > 0)
      assert.equal(200, get(TRIPO .. "/task/" .. id).status)
      assert.is_true(pcall(cjson.decode, get(TRIPO .. "/task/" .. id).body))
    end)

    it("html_error: 502 with an HTML page", function()
      local id = m:add_task({ provider = "sellerpic", faults = { html_error = 1 } })
      local r = get(SP .. "/generate", { id = id })
      assert.equal(502, r.status)
      assert.equal("text/html", r.headers["Content-Type"])
      assert.matches("<html>", r.body)
      assert.equal(200, get(SP .. "/generate", { id = id }).status)
    end)

    it("code_under_200: an error code under HTTP 200", function()
      local id = m:add_task({ provider = "sellerpic", faults = { code_under_200 = { count = 1, code = 30003, msg = "too many tasks" } } })
      local r, b = sstatus(id)
      assert.equal(200, r.status)
      assert.equal(30003, b.code)
      assert.is_false(b.success)
      assert.equal("too many tasks", b.msg)
      assert.equal(cjson.null, b.data)
      r, b = sstatus(id)
      assert.equal(0, b.code)
      local tid = m:add_task({ provider = "tripo", faults = { code_under_200 = 1 } })
      r = get(TRIPO .. "/task/" .. tid)
      assert.equal(200, r.status)
      assert.equal(1000, decode(r).code)
    end)

    it("applies one fault per request, in order, and counts them down", function()
      local id = m:add_task({ provider = "tripo", faults = { server_errors = 1, rate_limit = 1, html_error = 1, malformed_json = 1 } })
      assert.equal(500, get(TRIPO .. "/task/" .. id).status)
      assert.equal(429, get(TRIPO .. "/task/" .. id).status)
      assert.equal(502, get(TRIPO .. "/task/" .. id).status)
      assert.is_false(pcall(cjson.decode, get(TRIPO .. "/task/" .. id).body))
      assert.is_true(pcall(cjson.decode, get(TRIPO .. "/task/" .. id).body))
    end)

    it("delay: status answers carry the delay for the host", function()
      local id = m:add_task({ provider = "tripo", faults = { delay = 1.5 } })
      assert.equal(1.5, get(TRIPO .. "/task/" .. id).delay)
      local other = m:add_task({ provider = "tripo" })
      assert.is_nil(get(TRIPO .. "/task/" .. other).delay)
    end)

    it("wrong_shape: data missing or of the wrong type", function()
      local id = m:add_task({ provider = "tripo", wrong_shape = true })
      local b = decode(get(TRIPO .. "/task/" .. id))
      assert.equal(0, b.code)
      assert.equal("string", type(b.data))
      id = m:add_task({ provider = "tripo", faults = { wrong_shape = "missing" } })
      b = decode(get(TRIPO .. "/task/" .. id))
      assert.equal(0, b.code)
      assert.is_nil(b.data)
      id = m:add_task({ provider = "sellerpic", faults = { wrong_shape = "array" } })
      b = decode(get(SP .. "/generate", { id = id }))
      assert.same({}, b.data)
      assert.truthy(get(SP .. "/generate", { id = id }).body:find('"data":[]', 1, true))
    end)

    it("expired_links: the first N links are already expired (403)", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, outputs = { "model" }, expired_links = 1 })
      local url1 = select(2, tstatus(id)).data.output.model
      local r = file_get(url1)
      assert.equal(403, r.status)
      assert.matches("expired", r.body)
      local url2 = select(2, tstatus(id)).data.output.model
      assert.not_equal(url1, url2)
      assert.equal(200, file_get(url2).status)
    end)

    it("drop_download: the first GET of each file is cut, later ones behave", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, file_size = 10000, drop_download = 0.3 })
      local out = select(2, tstatus(id)).data.output
      local r = file_get(out.model)
      assert.equal(200, r.status)
      assert.equal("10000", r.headers["Content-Length"])
      assert.equal(3000, r.drop_after)
      assert.is_false(r.plain)
      r = file_get(out.model)
      assert.is_nil(r.drop_after)
      assert.is_true(r.plain)
      assert.equal(3000, file_get(out.rendered_image).drop_after)
    end)

    it("ignore_range, lie_length, filename and stall shape the file answer", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, file_size = 1000,
        faults = { ignore_range = true, lie_length = true, filename = "../../evil.sh", stall = 3, stall_count = 1 } })
      local url = select(2, tstatus(id)).data.output.model
      local r = file_get(url, { range = "bytes=100-" })
      assert.equal(200, r.status)
      assert.is_nil(r.headers["Content-Range"])
      assert.equal(0, r.offset)
      assert.equal(1000, r.length)
      assert.equal("5096", r.headers["Content-Length"])
      assert.is_true(r.lie_length)
      assert.equal('attachment; filename="../../evil.sh"', r.headers["Content-Disposition"])
      assert.equal(3, r.stall)
      assert.equal(500, r.stall_after)
      r = file_get(url)
      assert.is_nil(r.stall)
    end)

    it("counts faults per task", function()
      local a = m:add_task({ provider = "tripo", server_errors = 1 })
      local b = m:add_task({ provider = "tripo" })
      assert.equal(200, get(TRIPO .. "/task/" .. b).status)
      assert.equal(500, get(TRIPO .. "/task/" .. a).status)
    end)
  end)

  describe("files", function()
    local function done_task(spec)
      spec.provider, spec.queue, spec.run = "tripo", 0, 0
      local id = m:add_task(spec)
      return id, select(2, tstatus(id)).data.output
    end

    it("are real deterministic files with the spec's size", function()
      local id, out = done_task({ file_size = 200000 })
      local r = file_get(out.model)
      assert.equal(200, r.status)
      assert.equal("200000", r.headers["Content-Length"])
      assert.equal("bytes", r.headers["Accept-Ranges"])
      assert.is_true(r.plain)
      local data = read_all(r.file)
      assert.equal(200000, #data)
      local info = m:file_info(id, "model")
      assert.equal(model.file_bytes(info.seed, 200000), data)
      assert.equal(model.file_bytes(info.seed, 200000, 70000, 100), data:sub(70001, 70100))
      assert.not_equal(data:sub(1, 100), read_all(file_get(out.rendered_image).file):sub(1, 100))
      -- same id and output: same content in another model
      local m2 = new_model()
      m2:add_task({ provider = "tripo", id = id, queue = 0, run = 0, file_size = 200000 })
      local b = cjson.decode(m2:handle({ method = "GET", path = TRIPO .. "/task/" .. id, headers = AUTH }).body)
      local p = b.data.output.model:match("fake%.invalid(.*)$")
      assert.equal(data, read_all(m2:handle({ method = "GET", path = p, headers = {} }).file))
    end)

    it("honour Range: 206 with Content-Range, suffixes, 416 past the end", function()
      local _, out = done_task({ file_size = 5000 })
      local r = file_get(out.model, { range = "bytes=100-199" })
      assert.equal(206, r.status)
      assert.equal("bytes 100-199/5000", r.headers["Content-Range"])
      assert.equal("100", r.headers["Content-Length"])
      assert.equal(100, r.offset)
      assert.equal(100, r.length)
      local whole = read_all(r.file)
      assert.equal(whole:sub(101, 200), body_of(r))
      r = file_get(out.model, { range = "bytes=4000-" })
      assert.equal(206, r.status)
      assert.equal("bytes 4000-4999/5000", r.headers["Content-Range"])
      r = file_get(out.model, { range = "bytes=-10" })
      assert.equal("bytes 4990-4999/5000", r.headers["Content-Range"])
      r = file_get(out.model, { range = "bytes=4990-99999" })
      assert.equal("bytes 4990-4999/5000", r.headers["Content-Range"])
      r = file_get(out.model, { range = "bytes=5000-" })
      assert.equal(416, r.status)
      assert.equal("bytes */5000", r.headers["Content-Range"])
      r = file_get(out.model, { range = "items=1-2" })
      assert.equal(200, r.status)
    end)

    it("links expire after link_ttl and unknown tokens are refused", function()
      m = new_model({ link_ttl = 60 })
      local _, out = done_task({})
      now = now + 59
      assert.equal(200, file_get(out.model).status)
      now = now + 1
      assert.equal(403, file_get(out.model).status)
      assert.equal(403, file_get("http://fake.invalid/files/deadbeef/model.glb").status)
      local good = out.rendered_image:gsub("rendered_image", "model")
      assert.equal(403, file_get(good).status) -- a token is bound to its file name
    end)

    it("answers HEAD without a body and refuses other methods", function()
      local _, out = done_task({})
      local p = out.model:match("fake%.invalid(.*)$")
      local r = m:handle({ method = "HEAD", path = p, headers = {} })
      assert.equal(200, r.status)
      assert.is_true(r.head)
      r = m:handle({ method = "DELETE", path = p, headers = {} })
      assert.equal(405, r.status)
    end)

    it("honour content_type", function()
      local _, out = done_task({ content_type = "application/x-test" })
      assert.equal("application/x-test", file_get(out.model).headers["Content-Type"])
    end)
  end)

  describe("Tripo V3", function()
    local V3 = "/tripo/v3"
    local TSK = { authorization = "Bearer tsk_test-key" }

    local function v3get(path, query, headers)
      return get(V3 .. path, query, headers or TSK)
    end
    local function v3post(path, body, headers)
      return post(V3 .. path, body, headers or TSK)
    end
    local function v3status(id, headers)
      local r = v3get("/tasks/" .. id, nil, headers)
      return r, r.status == 200 and decode(r) or nil
    end
    local function is_iso(s) return type(s) == "string" and s:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$") ~= nil end
    local function create(path, body, headers)
      local r = v3post(path, body, headers)
      assert.equal(200, r.status, r.body)
      return decode(r).data.task_id, decode(r)
    end
    local function multipart(name, data, field, ctype)
      return "--XyZ\r\nContent-Disposition: form-data; name=\"" .. (field or "file") .. "\"; filename=\"" .. name ..
        "\"\r\nContent-Type: " .. (ctype or "application/octet-stream") .. "\r\n\r\n" .. data .. "\r\n--XyZ--\r\n"
    end
    local function upload(name, data, headers, ctype)
      local h = { ["content-type"] = "multipart/form-data; boundary=XyZ" }
      for k, v in pairs(headers or TSK) do h[k] = v end
      return m:handle({ method = "POST", path = V3 .. "/files", query = {}, headers = h,
        body = multipart(name, data, nil, ctype) })
    end

    it("goes queued -> running -> success in V3's shape, and the same task reads through V2", function()
      local id = m:add_task({ provider = "tripo", queue = 3, run = 4 })
      local r, b = v3status(id)
      assert.equal(200, r.status)
      assert.equal("application/json", r.headers["Content-Type"])
      assert.is_string(r.headers["X-Tripo-Trace-ID"])
      assert.equal(0, b.code)
      assert.equal("success", b.status)
      local d = b.data
      assert.equal(id, d.task_id)
      assert.equal("text_to_model", d.type)
      assert.equal("queued", d.status)
      assert.equal(0, d.progress)
      assert.equal(3, d.queuing_num)
      assert.is_nil(d.running_left_time)
      assert.equal(0, d.credits_consumed)
      assert.equal("2023-11-14T22:13:20Z", d.created_at)
      -- left out, not null, until final / unless failed (Tripo's JS SDK types them optional)
      assert.is_nil(d.completed_at)
      assert.is_nil(d.error_code)
      assert.is_nil(d.error_message)
      assert.falsy(r.body:find("null", 1, true))
      assert.same({}, d.output)
      assert.same({}, d.input)
      assert.is_nil(d.create_time)
      assert.is_nil(d.consumed_credit)
      now = now + 5
      d = select(2, v3status(id)).data
      assert.equal("running", d.status)
      assert.equal(50, d.progress)
      assert.equal(2, d.running_left_time)
      assert.is_nil(d.queuing_num)
      assert.is_nil(d.completed_at)
      now = now + 2
      d = select(2, v3status(id)).data
      assert.equal("success", d.status)
      assert.equal(100, d.progress)
      assert.equal(12.5, d.credits_consumed)
      assert.truthy(r.body:find('"credits_consumed":0', 1, true))
      assert.truthy(get(V3 .. "/tasks/" .. id, nil, TSK).body:find('"credits_consumed":12.5', 1, true))
      assert.equal("2023-11-14T22:13:27Z", d.completed_at)
      assert.is_true(is_iso(d.created_at))
      assert.is_nil(d.queuing_num)
      assert.is_nil(d.running_left_time)
      assert.is_nil(d.error_code)
      assert.matches("^http://fake%.invalid/files/%w+/model%.glb$", d.output.model_url)
      assert.matches("^http://fake%.invalid/files/%w+/rendered_image%.webp$", d.output.rendered_image_url)
      assert.is_nil(d.output.model)
      assert.is_nil(d.output.generated_image_url)
      local f = file_get(d.output.model_url)
      assert.equal(200, f.status)
      assert.equal("model/gltf-binary", f.headers["Content-Type"])
      -- the V2 API renders the same record in V2's shape, with the same file
      local _, v2 = tstatus(id)
      assert.equal("success", v2.data.status)
      assert.equal(20, v2.data.consumed_credit)
      assert.equal(body_of(f), body_of(file_get(v2.data.output.model)))
      assert.is_nil(v2.data.output.model_url)
      assert.is_nil(v2.status)
    end)

    it("echoes X-Request-ID, or makes one, on answers and errors", function()
      local id = m:add_task({ provider = "tripo" })
      local r = v3get("/tasks/" .. id, nil, { authorization = "Bearer test-key", ["x-request-id"] = "my-req-7" })
      assert.equal("my-req-7", r.headers["X-Request-ID"])
      r = v3get("/tasks/nope", nil, { authorization = "Bearer test-key", ["x-request-id"] = "my-req-8" })
      assert.equal(404, r.status)
      assert.equal("my-req-8", decode(r).request_id)
      assert.equal("my-req-8", r.headers["X-Request-ID"])
      r = v3get("/tasks/nope")
      assert.matches("^req_%x+$", r.headers["X-Request-ID"])
      assert.equal(r.headers["X-Request-ID"], decode(r).request_id)
      assert.not_equal(r.headers["X-Request-ID"], v3get("/tasks/nope").headers["X-Request-ID"])
      assert.is_nil(get(TRIPO .. "/task/" .. id).headers["X-Request-ID"])
    end)

    it("answers 401 code 2 to a missing or unknown key, in the error envelope", function()
      local id = m:add_task({ provider = "tripo" })
      for _, h in ipairs({ {}, { authorization = "Bearer nope" }, { authorization = "Basic dGVzdA==" } }) do
        local r = v3get("/tasks/" .. id, nil, h)
        assert.equal(401, r.status)
        local b = decode(r)
        assert.equal(2, b.code)
        assert.equal("error", b.status)
        assert.is_string(b.message)
        assert.is_string(b.suggestion)
        assert.is_string(b.request_id)
        assert.is_nil(b.data)
        assert.is_string(r.headers["X-Tripo-Trace-ID"])
      end
      assert.equal(401, v3post("/generation/text-to-model", '{"model_version":"v3.1-20260211"}', {}).status)
      assert.equal(401, v3get("/account/balance", nil, {}).status)
      assert.equal(0, m.stats.created.tripo)
    end)

    it("hides another account's task (404, code 2001); tsk_ keys are their plain name's account", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0 })
      assert.equal(200, v3status(id, { authorization = "Bearer test-key" }).status)
      assert.equal(200, v3status(id, TSK).status)
      assert.equal(200, tstatus(id, TSK).status)
      for _, k in ipairs({ "other-key", "tsk_other-key" }) do
        local r = v3status(id, { authorization = "Bearer " .. k })
        assert.equal(404, r.status)
        local b = decode(r)
        assert.equal(2001, b.code)
        assert.equal("error", b.status)
        assert.equal("task not found", b.message)
      end
      local theirs = m:add_task({ provider = "tripo", owner_key = "tsk_other-key" })
      assert.equal(200, v3status(theirs, { authorization = "Bearer other-key" }).status)
      assert.equal(404, v3status(theirs).status)
      local sp = m:add_task({ provider = "sellerpic" })
      assert.equal(404, v3status(sp).status) -- not a Tripo task
    end)

    it("takes more keys from new{keys = ...} and add_key", function()
      m = new_model({ keys = { "extra-key", ["alias-key"] = "test-key", ["own-key"] = true } })
      local id = m:add_task({ provider = "tripo" })
      assert.equal(200, v3status(id, { authorization = "Bearer alias-key" }).status)
      assert.equal(200, tstatus(id, { authorization = "Bearer alias-key" }).status)
      assert.equal(200, v3status(id, { authorization = "Bearer tsk_test-key" }).status)
      assert.equal(404, v3status(id, { authorization = "Bearer extra-key" }).status)
      assert.equal(404, v3status(id, { authorization = "Bearer own-key" }).status)
      assert.equal(401, v3status(id, { authorization = "Bearer other-extra" }).status)
      assert.is_true(m:add_key("other-extra"))
      assert.equal(404, v3status(id, { authorization = "Bearer other-extra" }).status)
      assert.is_nil(m:add_key(""))
      local mine = m:add_task({ provider = "tripo", owner_key = "extra-key" })
      assert.equal(200, v3status(mine, { authorization = "Bearer extra-key" }).status)
      assert.equal(200, get(SP .. "/usage", nil, { authorization = "Bearer extra-key" }).status)
    end)

    it("creates a task per capability endpoint, typed, queued, without a type field", function()
      local n = 0
      for path, typ in pairs(model.V3_CREATES) do
        n = n + 1
        local body = model.V3_NEED_MODEL[path] and '{"prompt":"x","model_version":"v3.1-20260211","type":"bogus"}'
          or '{"input":"7f3a9c1e-0000-4000-a000-000000000000"}'
        local r = v3post(path, body)
        assert.equal(200, r.status, path)
        local b = decode(r)
        assert.equal(0, b.code)
        assert.equal("success", b.status)
        assert.equal(typ, b.data.type)
        assert.equal("queued", b.data.status)
        assert.is_string(b.data.task_id)
        local d = select(2, v3status(b.data.task_id)).data
        assert.equal(typ, d.type)
        assert.is_nil(d.input.fake)
      end
      assert.equal(18, n)
      assert.equal(18, m.stats.creates.tripo)
      assert.equal(18, m.stats.created.tripo)
      assert.equal(0, m.stats.creates["tripo-v2"])
    end)

    it("needs model_version (or model) on the three to-model endpoints: 400 code 1004", function()
      for _, path in ipairs({ "/generation/text-to-model", "/generation/image-to-model", "/generation/multiview-to-model" }) do
        local r = v3post(path, '{"prompt":"x"}')
        assert.equal(400, r.status)
        local b = decode(r)
        assert.equal(1004, b.code)
        assert.equal("error", b.status)
        assert.matches("model_version", b.message)
        assert.is_string(b.request_id)
        assert.equal(400, v3post(path, '{"prompt":"x","model_version":""}').status)
        assert.equal(200, v3post(path, '{"prompt":"x","model":"P1-20260311"}').status)
        assert.equal(200, v3post(path, '{"prompt":"x","model_version":"v2.5-20250123"}').status)
      end
      assert.equal(200, v3post("/generation/text-to-image", '{"prompt":"x"}').status)
      local r = v3post("/generation/text-to-model", '{"prompt":')
      assert.equal(400, r.status)
      assert.equal(1003, decode(r).code)
      assert.equal(400, v3post("/models/texture", "[1,2]").status)
      assert.equal(15, m.stats.creates.tripo)
      assert.equal(7, m.stats.created.tripo)
    end)

    it("scripts a created task by its fake field and gives it to the creating key", function()
      local id = create("/generation/image-to-model",
        '{"input":"https://example.com/a.png","model_version":"v3.1-20260211","fake":{"queue":0,"run":0,"final":"failed"}}',
        { authorization = "Bearer other-key" })
      assert.equal(404, v3status(id).status)
      local d = select(2, v3status(id, { authorization = "Bearer tsk_other-key" })).data
      assert.equal("failed", d.status)
      assert.equal("https://example.com/a.png", d.input.input)
      assert.is_nil(d.input.fake)
    end)

    it("gives outputs by task type when the spec names none", function()
      local function out_of(path, body)
        local id = create(path, body or '{"input":"x","fake":{"queue":0,"run":0}}')
        local d = select(2, v3status(id)).data
        assert.equal("success", d.status)
        return d.output, id
      end
      local function keys(t)
        local k = {}
        for name in pairs(t) do k[#k + 1] = name end
        table.sort(k)
        return table.concat(k, " ")
      end
      for _, path in ipairs({ "/generation/text-to-model", "/generation/image-to-model", "/generation/multiview-to-model" }) do
        assert.equal("model_url rendered_image_url", keys(out_of(path, '{"model_version":"v3.1-20260211","fake":{"queue":0,"run":0}}')))
      end
      for _, path in ipairs({ "/models/texture", "/models/convert", "/models/stylize", "/models/refine", "/models/import",
        "/mesh/segment", "/mesh/complete", "/mesh/decimate" }) do
        assert.equal("model_url rendered_image_url", keys(out_of(path)), path)
      end
      for _, path in ipairs({ "/generation/text-to-image", "/generation/image-to-image" }) do
        local out = out_of(path)
        assert.equal("generated_image_url", keys(out))
        assert.matches("/generated_image%.png$", out.generated_image_url)
        assert.equal("image/png", file_get(out.generated_image_url).headers["Content-Type"])
      end
      for _, path in ipairs({ "/generation/image-to-multiview", "/generation/edit-multiview" }) do
        local out = out_of(path)
        assert.equal("back_view_url front_view_url left_view_url right_view_url", keys(out))
        for _, v in ipairs({ "front", "left", "back", "right" }) do
          assert.matches("/" .. v .. "%.png$", out[v .. "_view_url"])
          assert.equal(200, file_get(out[v .. "_view_url"]).status)
        end
      end
      local out, id = out_of("/animations/rig-check")
      assert.equal("rig_type riggable", keys(out))
      assert.is_true(out.riggable)
      assert.equal("biped", out.rig_type)
      assert.is_true(select(2, tstatus(id)).data.output.riggable) -- V2 shows it too
      out = out_of("/animations/rig-check", '{"input":"x","fake":{"queue":0,"run":0,"riggable":false,"rig_type":"quadruped"}}')
      assert.is_false(out.riggable)
      assert.equal("quadruped", out.rig_type)
      out = out_of("/animations/rig")
      assert.equal("model_url", keys(out))
      out = out_of("/animations/retarget", '{"input":"x","animations":["preset:idle","preset:walk","preset:run"],"fake":{"queue":0,"run":0}}')
      assert.equal("model_url model_urls", keys(out))
      assert.equal(3, #out.model_urls)
      assert.equal(out.model_url, out.model_urls[1])
      assert.not_equal(body_of(file_get(out.model_urls[2])), body_of(file_get(out.model_urls[3])))
      out = out_of("/animations/retarget", '{"input":"x","animation":"preset:idle","fake":{"queue":0,"run":0}}')
      assert.equal(1, #out.model_urls)
    end)

    it("maps a spec's V2 output names to V3 keys", function()
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0,
        outputs = { "base_model", "pbr_model", "model", "generated_image", "rendered_image", "rendered_video", "extra_thing",
          "multiview_basecolor" },
        multiview = true })
      local out = select(2, v3status(id)).data.output
      assert.matches("/pbr_model%.glb$", out.model_url)
      assert.matches("/generated_image%.png$", out.generated_image_url)
      assert.matches("/rendered_image%.webp$", out.rendered_image_url)
      assert.matches("/rendered_video%.mp4$", out.rendered_video_url)
      assert.matches("/extra_thing%.bin$", out.extra_thing)
      assert.matches("/front%.png$", out.front_view_url)
      assert.matches("/multiview_basecolor%.png$", out.multiview_basecolor_url)
      assert.is_nil(out.model)
      assert.is_nil(out.pbr_model)
      assert.is_nil(out.generate_multiview_image)
      assert.equal("video/mp4", file_get(out.rendered_video_url).headers["Content-Type"])
      id = m:add_task({ provider = "tripo", queue = 0, run = 0, outputs = { "base_model", "model" } })
      assert.matches("/model%.glb$", select(2, v3status(id)).data.output.model_url)
      id = m:add_task({ provider = "tripo", queue = 0, run = 0, outputs = { model = "fbx" } })
      assert.matches("/model%.fbx$", select(2, v3status(id)).data.output.model_url)
    end)

    it("makes the model file in the format the create asked for (format, out_format, quad)", function()
      -- Tripo's SDKs: convertModel emits the requested format, quad forces FBX; downloads are
      -- named by the URL's extension
      local function model_url(path, body)
        local id = create(path, body)
        now = now + 10
        return select(2, v3status(id)).data.output.model_url
      end
      assert.matches("/model%.fbx$", model_url("/models/convert", '{"input":"t1","format":"FBX"}'))
      assert.matches("/model%.obj$", model_url("/models/convert", '{"input":"t1","format":"obj"}'))
      assert.matches("/model%.fbx$", model_url("/animations/rig", '{"input":"t1","out_format":"fbx"}'))
      assert.matches("/model%.fbx$", model_url("/generation/text-to-model",
        '{"prompt":"p","model":"P2-20260801","quad":true}'))
      assert.matches("/model%.glb$", model_url("/generation/text-to-model", '{"prompt":"p","model":"v3.1-20260211"}'))
      assert.matches("/model%.glb$", model_url("/models/convert", '{"input":"t1","format":"GLB"}'))
      assert.matches("/model%.glb$", model_url("/models/convert", '{"input":"t1","format":"WAV"}'))
      local rid = create("/animations/retarget", '{"input":"t1","animations":["preset:idle","preset:walk"],"out_format":"fbx"}')
      now = now + 10
      local urls = select(2, v3status(rid)).data.output.model_urls
      assert.equal(2, #urls)
      for _, u in ipairs(urls) do assert.matches("%.fbx$", u) end
      -- V2 the same (the Python SDK's convert_model sends format "FBX")
      local r = post(TRIPO .. "/task", '{"type":"convert_model","original_model_task_id":"t1","format":"FBX"}')
      local id = decode(r).data.task_id
      now = now + 10
      local d = select(2, tstatus(id)).data
      assert.matches("/model%.fbx$", d.output.model)
      assert.matches("/rendered_image%.webp$", d.output.rendered_image)
      -- a spec's own outputs win
      id = m:add_task({ provider = "tripo", queue = 0, run = 0, input = { format = "FBX" }, outputs = { "model" } })
      assert.matches("/model%.glb$", select(2, v3status(id)).data.output.model_url)
    end)

    it("sends the five-value status list by default, banned and expired as failed with their codes", function()
      local want = {
        success = { "success" }, cancelled = { "cancelled" }, failed = { "failed", 1001 },
        banned = { "failed", 2008 }, expired = { "failed", 2018 },
      }
      for final, w in pairs(want) do
        local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = final })
        local d = select(2, v3status(id)).data
        assert.equal(w[1], d.status, final)
        assert.is_true(is_iso(d.completed_at))
        if w[2] then
          assert.equal(w[2], d.error_code, final)
          assert.is_string(d.error_message)
          assert.equal(0, d.credits_consumed)
          assert.same({}, d.output)
        else
          assert.is_nil(d.error_code)
          assert.is_nil(d.error_message)
        end
        assert.equal(final, select(2, tstatus(id)).data.status) -- V2 keeps its own list
      end
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = "failed", error_code = 2006 })
      assert.equal(2006, select(2, v3status(id)).data.error_code)
      id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = "banned", v3_statuses = 8 })
      local d = select(2, v3status(id)).data
      assert.equal("banned", d.status)
      assert.equal(2008, d.error_code)
    end)

    it("sends the eight-value list when the model or the task says so", function()
      m = new_model({ v3_statuses = 8 })
      for _, final in ipairs({ "banned", "expired", "unknown", "failed", "cancelled" }) do
        local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = final })
        assert.equal(final, select(2, v3status(id)).data.status)
      end
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0, final = "expired", v3_statuses = 5 })
      local d = select(2, v3status(id)).data
      assert.equal("failed", d.status)
      assert.equal(2018, d.error_code)
    end)

    it("leaves out queuing_num and running_left_time when v3_eta is false", function()
      m = new_model({ v3_eta = false })
      local id = m:add_task({ provider = "tripo", queue = 1, run = 2 })
      local d = select(2, v3status(id)).data
      assert.equal("queued", d.status)
      assert.is_nil(d.queuing_num)
      now = now + 2
      d = select(2, v3status(id)).data
      assert.equal("running", d.status)
      assert.is_nil(d.running_left_time)
      assert.equal(-1, select(2, tstatus(id)).data.queuing_num) -- V2 keeps its fields
      local eta = m:add_task({ provider = "tripo", queue = 0, run = 10, v3_eta = true })
      assert.equal(10, select(2, v3status(eta)).data.running_left_time)
      m = new_model()
      local no = m:add_task({ provider = "tripo", queue = 5, v3_eta = false })
      assert.is_nil(select(2, v3status(no)).data.queuing_num)
    end)

    it("takes credits from the model or the task spec", function()
      m = new_model({ credits = 48 })
      local id = m:add_task({ provider = "tripo", queue = 0, run = 0 })
      assert.equal(48, select(2, v3status(id)).data.credits_consumed)
      id = m:add_task({ provider = "tripo", queue = 0, run = 0, credits = 7.25 })
      assert.equal(7.25, select(2, v3status(id)).data.credits_consumed)
    end)

    it("applies the status faults to V3 reads, in V3's error shape", function()
      local id = m:add_task({ provider = "tripo", faults = { server_errors = 1, rate_limit = { count = 1, retry_after = 7 },
        html_error = 1, malformed_json = 1, code_under_200 = { count = 1, code = 1001 } } })
      local r = v3status(id)
      assert.equal(500, r.status)
      local b = decode(r)
      assert.equal(1000, b.code)
      assert.equal("error", b.status)
      assert.is_string(b.request_id)
      r = v3status(id)
      assert.equal(429, r.status)
      assert.equal(2000, decode(r).code)
      assert.equal("error", decode(r).status)
      assert.equal("7", r.headers["Retry-After"])
      r = v3status(id)
      assert.equal(502, r.status)
      assert.equal("text/html", r.headers["Content-Type"])
      r = v3get("/tasks/" .. id)
      assert.equal(200, r.status)
      assert.is_false(pcall(cjson.decode, r.body))
      r = v3get("/tasks/" .. id)
      assert.equal(200, r.status)
      b = decode(r)
      assert.equal(1001, b.code)
      assert.equal("error", b.status)
      assert.equal(0, decode(v3get("/tasks/" .. id)).code)
      local d = m:add_task({ provider = "tripo", delay = 2.5 })
      assert.equal(2.5, v3get("/tasks/" .. d).delay)
      local w = m:add_task({ provider = "tripo", wrong_shape = "missing" })
      b = decode(v3get("/tasks/" .. w))
      assert.same({ code = 0, status = "success" }, b)
      w = m:add_task({ provider = "tripo", wrong_shape = "null" })
      assert.equal(cjson.null, decode(v3get("/tasks/" .. w)).data)
      assert.equal(1, m:task(w).polls)
    end)

    it("answers 404 code 1004 to an unknown endpoint and 405 to a wrong method", function()
      local r = v3get("/nothing")
      assert.equal(404, r.status)
      assert.equal(1004, decode(r).code)
      assert.equal("error", decode(r).status)
      assert.equal(405, v3get("/generation/text-to-model").status)
      assert.equal(405, v3get("/tasks/list").status)
      assert.equal(405, v3post("/account/balance", "{}").status)
      assert.equal(405, v3post("/tasks/some-id", "{}").status)
      assert.equal(0, m.stats.creates.tripo)
    end)

    describe("POST /tasks/list and V2's POST /task/batch", function()
      it("answers found tasks by id and the missed ids (unknown or another account's)", function()
        local a = m:add_task({ provider = "tripo", queue = 0, run = 0 })
        local b = m:add_task({ provider = "tripo", queue = 5 })
        local theirs = m:add_task({ provider = "tripo", owner_key = "other-key" })
        local body = cjson.encode({ task_ids = { a, "no-such", b, theirs, a } })
        local r = v3post("/tasks/list", body)
        assert.equal(200, r.status)
        local d = decode(r)
        assert.equal(0, d.code)
        assert.equal("success", d.status)
        assert.equal(a, d.data.tasks[1].task_id) -- an array in request order
        assert.equal(b, d.data.tasks[2].task_id)
        d.data.tasks = by_id(d.data.tasks)
        assert.equal("success", d.data.tasks[a].status)
        assert.matches("/model%.glb$", d.data.tasks[a].output.model_url)
        assert.equal(12.5, d.data.tasks[a].credits_consumed)
        assert.equal("queued", d.data.tasks[b].status)
        assert.equal(b, d.data.tasks[b].task_id)
        assert.is_nil(d.data.tasks[theirs])
        assert.same({ "no-such", theirs }, d.data.missed)
        assert.equal(1, m:task(a).polls)
        assert.equal(0, m:task(theirs).polls)
        -- V2: the same in V2's envelope and task shape
        r = post(TRIPO .. "/task/batch", body)
        assert.equal(200, r.status)
        d = decode(r)
        assert.equal(0, d.code)
        assert.is_nil(d.status)
        d.data.tasks = by_id(d.data.tasks)
        assert.equal("success", d.data.tasks[a].status)
        assert.matches("/model%.glb$", d.data.tasks[a].output.model)
        assert.equal(-1, d.data.tasks[a].queuing_num)
        assert.same({ "no-such", theirs }, d.data.missed)
        -- none found: an empty array and an empty list
        r = v3post("/tasks/list", '{"task_ids":["x"]}')
        assert.truthy(r.body:find('"tasks":[]', 1, true))
        r = v3post("/tasks/list", '{"task_ids":["' .. a .. '"]}')
        assert.truthy(r.body:find('"missed":[]', 1, true))
        assert.equal(0, m.stats.creates.tripo)
      end)

      it("takes at most 100 ids, and refuses a bad body", function()
        local ids = {}
        for i = 1, 100 do ids[i] = "id-" .. i end
        assert.equal(100, #decode(v3post("/tasks/list", cjson.encode({ task_ids = ids }))).data.missed)
        assert.equal(100, #decode(post(TRIPO .. "/task/batch", cjson.encode({ task_ids = ids }))).data.missed)
        ids[101] = "id-101"
        for _, r in ipairs({ v3post("/tasks/list", cjson.encode({ task_ids = ids })),
          post(TRIPO .. "/task/batch", cjson.encode({ task_ids = ids })) }) do
          assert.equal(400, r.status)
          assert.equal(1004, decode(r).code)
          assert.matches("100", decode(r).message)
        end
        assert.equal("error", decode(v3post("/tasks/list", cjson.encode({ task_ids = ids }))).status)
        for _, body in ipairs({ '{"task_ids":[]}', "{}", '{"task_ids":"a"}', '{"task_ids":[1.5e300,{}]}' }) do
          local r = v3post("/tasks/list", body)
          assert.equal(400, r.status, body)
          assert.equal(1004, decode(r).code, body)
        end
        local r = v3post("/tasks/list", "{oops")
        assert.equal(400, r.status)
        assert.equal(1003, decode(r).code)
        r = post(TRIPO .. "/task/batch", "{oops")
        assert.equal(1003, decode(r).code)
        assert.is_nil(decode(r).status)
        assert.equal(401, v3post("/tasks/list", '{"task_ids":["a"]}', {}).status)
        assert.equal(401, post(TRIPO .. "/task/batch", '{"task_ids":["a"]}', {}).status)
      end)

      it("answers an array of tasks in request order with list_shape = array", function()
        m = new_model({ list_shape = "array" })
        local a = m:add_task({ provider = "tripo" })
        local b = m:add_task({ provider = "tripo" })
        local d = decode(v3post("/tasks/list", cjson.encode({ task_ids = { b, "zz", a } }))).data
        assert.equal(2, #d.tasks)
        assert.equal(b, d.tasks[1].task_id)
        assert.equal(a, d.tasks[2].task_id)
        assert.same({ "zz" }, d.missed)
        d = decode(post(TRIPO .. "/task/batch", cjson.encode({ task_ids = { a } }))).data
        assert.equal(a, d.tasks[1].task_id)
        local r = v3post("/tasks/list", '{"task_ids":["zz"]}')
        assert.truthy(r.body:find('"tasks":[]', 1, true))
      end)

      it("lets the listed tasks' faults answer the request", function()
        local a = m:add_task({ provider = "tripo" })
        local b = m:add_task({ provider = "tripo", faults = { server_errors = 1, malformed_json = 1, delay = 1.5 } })
        local body = cjson.encode({ task_ids = { a, b } })
        local r = v3post("/tasks/list", body)
        assert.equal(500, r.status)
        assert.equal("error", decode(r).status)
        r = v3post("/tasks/list", body)
        assert.equal(200, r.status)
        assert.is_false(pcall(cjson.decode, r.body))
        assert.equal(1.5, r.delay)
        r = post(TRIPO .. "/task/batch", body)
        assert.equal(200, r.status)
        assert.equal(1.5, r.delay)
        assert.equal(2, m:task(a).polls)
        local c = m:add_task({ provider = "tripo", rate_limit = { count = 1, retry_after = 3 } })
        r = post(TRIPO .. "/task/batch", cjson.encode({ task_ids = { c } }))
        assert.equal(429, r.status)
        assert.equal("3", r.headers["Retry-After"])
        assert.is_nil(decode(r).status)
      end)
    end)

    describe("files", function()
      it("takes images and models by extension and answers a file_token", function()
        for _, name in ipairs({ "a.webp", "a.png", "a.jpeg", "a.jpg", "a.bmp", "a.tiff", "a.glb", "a.obj", "a.fbx",
          "a.stl", "a.3mf", "A.USDZ" }) do
          local r = upload(name, "bytes of " .. name)
          assert.equal(200, r.status, name)
          local b = decode(r)
          assert.equal(0, b.code)
          assert.equal("success", b.status)
          assert.matches("^file_%x+%-%x+%-%x+%-%x+%-%x+$", b.data.file_token)
        end
        local e = m.log[#m.log].upload
        assert.equal("A.USDZ", e.filename)
        assert.equal(#"bytes of A.USDZ", e.size)
        assert.equal(model.adler32("bytes of A.USDZ"), e.adler32)
        for _, name in ipairs({ "a.gif", "a.exe", "noext", "upload.bin" }) do
          local r = upload(name, "x")
          assert.equal(400, r.status, name)
          assert.equal(2004, decode(r).code)
          assert.equal("error", decode(r).status)
        end
        -- a name without a known extension (the SDKs' default "upload.bin"): the part's type decides
        assert.equal(200, upload("upload.bin", "x", nil, "image/png").status)
        assert.equal(200, upload("upload.bin", "x", nil, "model/gltf-binary; charset=binary").status)
        assert.equal(400, upload("upload.bin", "x", nil, "image/gif").status)
        -- neither name nor type tells (the JS SDK's uploadFile(buffer) without options sends
        -- "upload.bin" as application/octet-stream): the leading bytes decide
        local png = "\137PNG\r\n\26\n\0\0\0\rIHDR"
        for _, c in ipairs({ { "upload.bin", "application/octet-stream", png, "png" }, { "blob", nil, png, "png" },
          { "upload.bin", "application/octet-stream", "\255\216\255\224..JFIF", "jpeg" },
          { "upload.bin", "application/octet-stream", "RIFF\0\0\0\0WEBPVP8 ", "webp" },
          { "upload.bin", "application/octet-stream", "glTF\2\0\0\0", "glb" } }) do
          local r = upload(c[1], c[3], nil, c[2])
          assert.equal(200, r.status, c[4])
          assert.equal(c[4], m.file_tokens[decode(r).data.file_token].format)
        end
        -- a name or a type that says otherwise still refuses, whatever the bytes
        assert.equal(2004, decode(upload("hero.gif", png, nil, "application/octet-stream")).code)
        assert.equal(2004, decode(upload("upload.bin", png, nil, "image/gif")).code)
        assert.equal(2004, decode(upload("upload.bin", "plain text", nil, "application/octet-stream")).code)
        local r = m:handle({ method = "POST", path = V3 .. "/files", query = {},
          headers = { authorization = "Bearer test-key", ["content-type"] = "multipart/form-data; boundary=XyZ" },
          body = multipart("a.png", "x", "image") })
        assert.equal(400, r.status)
        assert.equal(1003, decode(r).code)
        r = m:handle({ method = "POST", path = V3 .. "/files", query = {},
          headers = { authorization = "Bearer test-key", ["content-type"] = "image/png" }, body = "x" })
        assert.equal(400, r.status)
        assert.equal(401, upload("a.png", "x", {}).status)
      end)

      it("makes a token valid for creates of its account only; unknown tokens are 400 code 1004", function()
        local tok = decode(upload("shoe.png", "PNG")).data.file_token
        local path = "/generation/image-to-model"
        local function body(input) return cjson.encode({ input = input, model_version = "v3.1-20260211" }) end
        assert.equal(200, v3post(path, body(tok)).status)
        assert.equal(200, v3post(path, body({ file_token = tok })).status)
        assert.equal(200, v3post("/generation/multiview-to-model",
          cjson.encode({ inputs = { { file_token = tok }, "", tok, "" }, model = "P1-20260311" })).status)
        local r = v3post(path, body(tok), { authorization = "Bearer other-key" })
        assert.equal(400, r.status)
        assert.equal(1004, decode(r).code)
        r = v3post(path, body({ file_token = "not-a-token" }))
        assert.equal(400, r.status)
        assert.matches("file token", decode(r).message)
        r = v3post(path, body("file_00000000-0000-4000-a000-000000000000"))
        assert.equal(400, r.status)
        assert.equal(200, v3post(path, body("https://example.com/file_a.png")).status)
        assert.equal(4, m.stats.created.tripo)
        assert.equal(7, m.stats.creates.tripo)
      end)

      it("presigns an upload: PUT the bytes without a key, then the token is valid", function()
        local r = v3post("/files/presign", '{"format":"png"}')
        assert.equal(200, r.status)
        local d = decode(r).data
        assert.matches("^file_%x+%-", d.file_token)
        assert.equal(900, d.expires_in)
        local p = d.upload_url:match("^http://fake%.invalid(/storage/.+)$")
        assert.is_string(p, d.upload_url)
        local create_body = cjson.encode({ input = { file_token = d.file_token }, model_version = "v3.1-20260211" })
        r = v3post("/generation/image-to-model", create_body)
        assert.equal(400, r.status) -- nothing uploaded yet
        assert.equal(1004, decode(r).code)
        local bytes = "\137PNG presigned bytes"
        r = m:handle({ method = "PUT", path = p, query = {}, headers = { ["content-type"] = "image/png" }, body = bytes })
        assert.equal(200, r.status)
        assert.equal('"' .. model.adler32(bytes) .. '"', r.headers.ETag)
        local e = m.log[#m.log]
        assert.equal("PUT", e.method)
        assert.is_false(e.authorization)
        assert.is_nil(e.key)
        assert.equal(#bytes, e.upload.size)
        assert.equal(model.adler32(bytes), e.upload.adler32)
        assert.equal("image/png", e.upload.content_type)
        assert.equal(200, v3post("/generation/image-to-model", create_body).status)
        assert.equal(400, v3post("/generation/image-to-model", create_body, { authorization = "Bearer other-key" }).status)
        -- a PUT that carries the key anyway is logged as such
        r = m:handle({ method = "PUT", path = p, query = {}, headers = { authorization = "Bearer test-key" }, body = "again" })
        assert.equal(200, r.status)
        assert.is_true(m.log[#m.log].authorization)
        assert.equal(5, m.log[#m.log].upload.size)
        -- wrong method, unknown URL, expiry
        assert.equal(405, m:handle({ method = "GET", path = p, query = {}, headers = {} }).status)
        r = m:handle({ method = "PUT", path = "/storage/uploads/deadbeef/x.png", query = {}, headers = {}, body = "x" })
        assert.equal(403, r.status)
        assert.equal("application/xml", r.headers["Content-Type"])
        now = now + 900
        r = m:handle({ method = "PUT", path = p, query = {}, headers = {}, body = "late" })
        assert.equal(403, r.status)
        assert.matches("expired", r.body)
      end)

      it("refuses a presign without a known format", function()
        local r = v3post("/files/presign", '{"format":"gif"}')
        assert.equal(400, r.status)
        assert.equal(2004, decode(r).code)
        r = v3post("/files/presign", "{}")
        assert.equal(400, r.status)
        assert.equal(1004, decode(r).code)
        assert.equal(1003, decode(v3post("/files/presign", "nope")).code)
        for _, f in ipairs({ "GLB", "3mf", "jpeg", "tiff", "usdz" }) do
          assert.equal(200, v3post("/files/presign", cjson.encode({ format = f })).status, f)
        end
        assert.matches("/storage/uploads/%x+/file_[%x%-]+%.glb$", decode(v3post("/files/presign", '{"format":"GLB"}')).data.upload_url)
        m = new_model({ presign_ttl = 60 })
        assert.equal(60, decode(v3post("/files/presign", '{"format":"png"}')).data.expires_in)
      end)
    end)

    describe("account", function()
      it("answers the balance as decimals", function()
        local r = v3get("/account/balance")
        assert.equal(200, r.status)
        local b = decode(r)
        assert.equal("success", b.status)
        assert.equal(2987.5, b.data.balance)
        assert.equal(0, b.data.frozen)
        assert.truthy(r.body:find('"balance":2987.5', 1, true))
        assert.equal(3000, decode(get(TRIPO .. "/user/balance")).data.balance) -- V2 unchanged
        m = new_model({ balance = 120.25 })
        assert.equal(120.25, decode(v3get("/account/balance")).data.balance)
        assert.equal(120.25, decode(get(TRIPO .. "/user/balance")).data.balance)
      end)

      it("answers usage rows of the key's tasks, newest first, paged", function()
        local ids = {}
        for i = 1, 5 do
          ids[i] = m:add_task({ provider = "tripo", queue = 0, run = i <= 2 and 0 or 100, final = i == 2 and "banned" or nil })
          now = now + 1
        end
        m:add_task({ provider = "tripo", owner_key = "other-key" })
        m:add_task({ provider = "sellerpic" })
        local r = v3get("/account/usage", { limit = "3" })
        assert.equal(200, r.status)
        local rows = decode(r).data
        assert.equal(3, #rows)
        assert.equal(ids[5], rows[1].task_id)
        assert.equal(ids[4], rows[2].task_id)
        assert.equal(ids[3], rows[3].task_id)
        assert.equal("text_to_model", rows[1].type)
        assert.equal("running", rows[1].status)
        assert.equal(0, rows[1].credits_consumed)
        assert.is_true(is_iso(rows[1].created_at))
        rows = decode(v3get("/account/usage", { limit = "3", offset = "3" })).data
        assert.equal(2, #rows)
        assert.equal(ids[2], rows[1].task_id)
        assert.equal("failed", rows[1].status)
        assert.equal(ids[1], rows[2].task_id)
        assert.equal("success", rows[2].status)
        assert.equal(12.5, rows[2].credits_consumed)
        assert.equal(5, #decode(v3get("/account/usage")).data)
        assert.equal(5, #decode(v3get("/account/usage", { limit = "200" })).data)
        assert.equal(1, #decode(v3get("/account/usage", nil, { authorization = "Bearer other-key" })).data)
        r = v3get("/account/usage", { offset = "9" })
        assert.truthy(r.body:find('"data":[]', 1, true))
        for _, q in ipairs({ { limit = "201" }, { limit = "0" }, { limit = "x" }, { offset = "-1" }, { limit = "2.5" } }) do
          r = v3get("/account/usage", q)
          assert.equal(400, r.status)
          assert.equal(1004, decode(r).code)
        end
      end)
    end)
  end)

  describe("creation counts", function()
    it("counts every request that can create a task, per provider, in the log and /_fake/stats", function()
      post("/tripo/v3/generation/text-to-model", '{"model_version":"v3.1-20260211"}')
      post("/tripo/v3/generation/text-to-model", '{}')
      post(TRIPO .. "/task", '{"type":"text_to_model"}')
      post(TRIPO .. "/task", '{"prompt":"no type"}')
      post(SP .. "/generate/instructEdit", "{}")
      post(TRIPO .. "/task", '{"type":"text_to_model"}', {}) -- no key: not counted
      get(TRIPO .. "/user/balance")
      local st = decode(get("/_fake/stats", nil, {}))
      assert.same({ tripo = 2, ["tripo-v2"] = 2, sellerpic = 1 }, st.creates)
      assert.same({ tripo = 1, ["tripo-v2"] = 1, sellerpic = 1 }, st.created)
      local log = decode(get("/_fake/log", nil, {}))
      assert.equal("tripo", log[1].create.provider)
      assert.is_string(log[1].create.task_id)
      assert.equal("tripo", log[2].create.provider)
      assert.is_nil(log[2].create.task_id)
      assert.equal("tripo-v2", log[3].create.provider)
      assert.equal("sellerpic", log[5].create.provider)
      assert.is_nil(log[6].create)
      assert.is_nil(log[7].create)
      m:add_task({ provider = "tripo" }) -- scripted tasks are not API creates
      post("/_fake/tasks", '{"provider":"tripo"}', {})
      assert.equal(1, decode(get("/_fake/stats", nil, {})).created.tripo)
      post("/_fake/reset", "", {})
      assert.same({ tripo = 0, ["tripo-v2"] = 0, sellerpic = 0 }, decode(get("/_fake/stats", nil, {})).creates)
    end)

    it("accepts tripo-v2 and tripo-v3 as names of the one Tripo provider", function()
      local a = m:add_task({ provider = "tripo-v2", queue = 0, run = 0 })
      local b = m:add_task({ provider = "tripo-v3", queue = 0, run = 0 })
      assert.equal("tripo", m:task(a).provider)
      assert.equal(200, tstatus(b).status)
      assert.equal(200, get("/tripo/v3/tasks/" .. a).status)
    end)

    it("says when a task is final", function()
      local id = m:add_task({ provider = "tripo", queue = 2, run = 3 })
      assert.equal(1700000005, m:final_time(m:task(id)))
      assert.equal(1700000005, decode(get("/_fake/tasks/" .. id, nil, {})).final_time)
    end)
  end)

  describe("control routes", function()
    it("make tasks, show the log, move the clock and reset", function()
      local r = post("/_fake/tasks", json.encode({ provider = "sellerpic", id = "1869254713398571011", queue = 0, run = 10 }), {})
      assert.equal(200, r.status)
      assert.equal("1869254713398571011", decode(r).id)
      r = post("/_fake/tasks", "{oops", {})
      assert.equal(400, r.status)
      r = post("/_fake/tasks", '{"provider":"nope"}', {})
      assert.equal(400, r.status)
      r = post("/_fake/tasks", '{"provider":"sellerpic","id":"1869254713398571011"}', {})
      assert.equal(400, r.status) -- duplicate
      get(SP .. "/generate", { id = "1869254713398571011" })
      r = get("/_fake/log", nil, {})
      local log = decode(r)
      assert.equal(1, #log)
      assert.equal(SP .. "/generate", log[1].path)
      assert.equal("1869254713398571011", log[1].query.id)
      assert.is_true(log[1].authorization)
      assert.equal("RUNNING", select(2, sstatus("1869254713398571011")).data.resultList[1].status)
      r = m:handle({ method = "POST", path = "/_fake/advance", query = { seconds = "10" }, headers = {} })
      assert.equal(200, r.status)
      assert.equal("SUCCESS", select(2, sstatus("1869254713398571011")).data.resultList[1].status)
      r = get("/_fake/tasks/1869254713398571011", nil, {})
      assert.equal("final", decode(r).phase)
      assert.equal(200, post("/_fake/reset", "", {}).status)
      assert.equal(0, #m.log)
      assert.equal(404, sstatus("1869254713398571011").status)
      assert.equal(404, get("/nothing/here").status)
      assert.equal(404, get(TRIPO .. "/nothing").status)
    end)

    it("rejects bad specs from add_task", function()
      assert.is_nil(m:add_task("x"))
      assert.is_nil(m:add_task({ provider = "x" }))
      assert.is_nil(m:add_task({ id = "a/b" }))
      assert.is_nil(m:add_task({ outputs = 5 }))
      assert.equal("my-id", m:add_task({ id = "my-id" }))
    end)
  end)
end)
