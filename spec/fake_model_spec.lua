-- taskapi.fake.model driven directly, with an injected clock.
local model = require "taskapi.fake.model"
local json = require "taskapi.json"
local cjson = require "cjson"
local files = require "taskapi.files"
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
