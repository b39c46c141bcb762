-- taskapi.fake (in-process host): the transport with the shape of the C module's m:request.
local fake = require "taskapi.fake"
local model = require "taskapi.fake.model"
local files = require "taskapi.util.files"

-- POST /tasks/list answers tasks as an array (the default list_shape, as Tripo's SDKs read it):
-- keyed by task_id here for the checks
local function by_id(tasks)
  local out = {}
  for k, t in pairs(tasks) do out[type(k) == "number" and t.task_id or k] = t end
  return out
end

local tmpdir, read_all, write = files.tmpdir, files.read, files.write

describe("fake in-process transport", function()
  local dir, now, slept, f, tr

  setup(function() dir = tmpdir() end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    now, slept = 1700000000, {}
    f = fake.new({ clock = function() return now end, sleep = function(s) slept[#slept + 1] = s; now = now + s end,
      files_dir = dir .. "/files" })
    tr = f:transport()
  end)

  local function status_req(id, key)
    return tr:request({ url = f:base_url("tripo-v2") .. "/task/" .. id, json = true,
      headers = { "Authorization: Bearer " .. (key or "test-key"), "Accept: application/json" },
      trace_header = "X-Tripo-Trace-ID" })
  end

  it("gives base URLs and a log", function()
    assert.equal("http://fake.invalid", f.url)
    assert.equal("http://fake.invalid/tripo/v2/openapi", f:base_url("tripo-v2"))
    assert.equal("http://fake.invalid/tripo/v3", f:base_url("tripo-v3"))
    -- "tripo": the API the built-in provider speaks (its default base URL's version)
    local def = require "taskapi.providers.tripo"
    local v3 = def.base_url:match("/v3/?$") ~= nil
    assert.equal(v3 and "http://fake.invalid/tripo/v3" or "http://fake.invalid/tripo/v2/openapi", f:base_url("tripo"))
    assert.equal("http://fake.invalid/sellerpic", f:base_url("sellerpic"))
    local id = f:add_task({ provider = "tripo" })
    status_req(id)
    assert.equal(1, #f.log)
    assert.equal("test-key", f.log[1].key)
  end)

  it("answers requests with decoded JSON, lower-case headers and the trace id", function()
    local id = f:add_task({ provider = "tripo", queue = 0, run = 0 })
    local res = assert(status_req(id))
    assert.equal(200, res.status)
    assert.equal("application/json", res.content_type)
    assert.equal("application/json", res.headers["content-type"])
    assert.is_string(res.trace_id)
    assert.equal(res.headers["x-tripo-trace-id"], res.trace_id)
    assert.equal("success", res.json.data.status)
    assert.is_string(res.body)
    res = assert(status_req(id, "other-key"))
    assert.equal(404, res.status)
    assert.equal(2001, res.json.code)
  end)

  it("serves Tripo V3: a create, a status, a list, and a presigned PUT without the key", function()
    local base = f:base_url("tripo-v3")
    local auth = { "Authorization: Bearer tsk_test-key", "X-Request-ID: rq-1" }
    local res = assert(tr:request({ method = "POST", url = base .. "/generation/text-to-model", json = true,
      headers = { auth[1], auth[2], "Content-Type: application/json" },
      body = '{"prompt":"a cat","model_version":"v3.1-20260211","fake":{"queue":0,"run":0}}' }))
    assert.equal(200, res.status)
    assert.equal("rq-1", res.headers["x-request-id"])
    assert.equal("queued", res.json.data.status)
    local id = res.json.data.task_id
    res = assert(tr:request({ url = base .. "/tasks/" .. id, json = true, headers = auth, trace_header = "X-Tripo-Trace-ID" }))
    assert.equal("success", res.json.status)
    assert.equal("success", res.json.data.status)
    assert.equal(12.5, res.json.data.credits_consumed)
    assert.is_string(res.trace_id)
    local dl = dir .. "/v3-model.glb"
    res = assert(tr:request({ url = res.json.data.output.model_url, path = dl }))
    assert.equal(200, res.status)
    local glb = assert(io.open(dl, "rb")):read("*a")
    assert.equal(#glb, res.bytes)
    assert.equal("glTF", glb:sub(1, 4)) -- a real GLB (the fake's media files)
    res = assert(tr:request({ method = "POST", url = base .. "/tasks/list", json = true,
      headers = { auth[1], "Content-Type: application/json" }, body = '{"task_ids":["' .. id .. '","gone"]}' }))
    assert.equal("success", by_id(res.json.data.tasks)[id].status)
    assert.equal("gone", res.json.data.missed[1])
    res = assert(tr:request({ method = "POST", url = base .. "/files/presign", json = true,
      headers = { auth[1], "Content-Type: application/json" }, body = '{"format":"png"}' }))
    local up = res.json.data
    res = assert(tr:request({ method = "PUT", url = up.upload_url, headers = { "Content-Type: image/png" }, body = "PNGDATA" }))
    assert.equal(200, res.status)
    local e = f.log[#f.log]
    assert.equal("PUT", e.method)
    assert.is_false(e.authorization)
    assert.equal(7, e.upload.size)
    res = assert(tr:request({ method = "POST", url = base .. "/generation/image-to-model", json = true,
      headers = { auth[1], "Content-Type: application/json" },
      body = '{"input":{"file_token":"' .. up.file_token .. '"},"model_version":"v3.1-20260211"}' }))
    assert.equal(200, res.status)
    res = assert(tr:request({ url = base .. "/tasks/" .. id, json = true, headers = { "Authorization: Bearer nope" } }))
    assert.equal(401, res.status)
    assert.equal(2, res.json.code)
  end)

  it("decodes 19-digit numeric ids exactly when taskapi.core is there, and posts bodies", function()
    local res = assert(tr:request({ method = "POST", url = f:base_url("sellerpic") .. "/v1/api/generate/instructEdit",
      headers = { "Authorization: Bearer test-key", "Content-Type: application/json" },
      body = '{"fake":{"numeric_ids":true,"id":"1869254713398571010"}}', json = true }))
    assert.equal(200, res.status)
    assert.matches('"id":1869254713398571010', res.body)
    local ok = pcall(require, "taskapi.core")
    if ok then assert.equal("1869254713398571010", tostring(res.json.data.id)) end
  end)

  it("reports malformed JSON as json_error, and parses Retry-After (seconds and dates)", function()
    local id = f:add_task({ provider = "tripo", faults = { malformed_json = 1, rate_limit = { count = 2, retry_after = 12, as_date = false } } })
    local res = assert(status_req(id))
    assert.equal(429, res.status)
    assert.equal(12, res.retry_after)
    f:task(id).faults.rate_limit = { count = 1, retry_after = 20, as_date = true }
    res = assert(status_req(id))
    assert.equal(20, res.retry_after)
    res = assert(status_req(id))
    assert.equal(200, res.status)
    assert.is_nil(res.json)
    assert.is_string(res.json_error)
    local fake_inprocess = require "taskapi.fake.inprocess"
    assert.equal(0, fake_inprocess.parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 10))
    assert.equal(86400, fake_inprocess.parse_retry_after("Fri, 02 Jan 1970 00:00:00 GMT", 0))
    assert.equal(1700000030 - 1700000000, fake_inprocess.parse_retry_after(model.http_date(1700000030), 1700000000))
    assert.is_nil(fake_inprocess.parse_retry_after("soon"))
  end)

  it("refuses other hosts as a transport error and bad requests as invalid_argument", function()
    local res, err = tr:request({ url = "http://elsewhere.invalid/x" })
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.is_true(err.retryable)
    res, err = tr:request({})
    assert.is_nil(res)
    assert.equal("invalid_argument", err.kind)
  end)

  it("turns a delay longer than the timeout into a timeout error, and sleeps a shorter one", function()
    local id = f:add_task({ provider = "tripo", faults = { delay = 5 } })
    local res, err = tr:request({ url = f:base_url("tripo-v2") .. "/task/" .. id, headers = { "Authorization: Bearer test-key" }, timeout = 2 })
    assert.is_nil(res)
    assert.equal("timeout", err.kind)
    assert.same({ 2 }, slept)
    res = assert(tr:request({ url = f:base_url("tripo-v2") .. "/task/" .. id, headers = { "Authorization: Bearer test-key" }, timeout = 10 }))
    assert.equal(200, res.status)
    assert.same({ 2, 5 }, slept)
  end)

  it("refuses bodies over max_body", function()
    local id = f:add_task({ provider = "tripo", queue = 0, run = 0 })
    local res, err = tr:request({ url = f:base_url("tripo-v2") .. "/task/" .. id, headers = { "Authorization: Bearer test-key" }, max_body = 10 })
    assert.is_nil(res)
    assert.equal("bad_response", err.kind)
  end)

  describe("downloads", function()
    local function links(spec)
      spec.provider, spec.queue, spec.run = "tripo", 0, 0
      local id = f:add_task(spec)
      return id, assert(status_req(id)).json.data.output
    end

    local function expected(id, key, size)
      return model.file_bytes("taskapi-fake " .. id .. " " .. key, size)
    end

    it("write through the part file and rename it, without sending the key", function()
      local id, out = links({ file_size = 150000 })
      local path = dir .. "/model.glb"
      local res = assert(tr:request({ url = out.model, path = path }))
      assert.equal(200, res.status)
      assert.equal(path, res.path)
      assert.equal(150000, res.bytes)
      assert.equal("model/gltf-binary", res.content_type)
      assert.equal(expected(id, "model", 150000), read_all(path))
      assert.is_nil(read_all(path .. ".part"))
      assert.is_false(f.log[#f.log].authorization)
      os.remove(path)
    end)

    it("leave nothing on disk on a non-2xx answer", function()
      local _, out = links({ expired_links = 1 })
      local path = dir .. "/x.glb"
      local res = assert(tr:request({ url = out.model, path = path, part = path .. ".tmp" }))
      assert.equal(403, res.status)
      assert.matches("expired", res.body)
      assert.is_nil(read_all(path))
      assert.is_nil(read_all(path .. ".tmp"))
    end)

    it("fail a dropped download as a retryable transport error and resume from the kept part", function()
      local id, out = links({ file_size = 100000, drop_download = 0.4 })
      local path = dir .. "/drop.glb"
      local part = path .. ".part"
      local res, err = tr:request({ url = out.model, path = path, part = part, keep_partial = true, resume = true })
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.is_true(err.retryable)
      assert.equal(40000, #read_all(part))
      assert.is_nil(read_all(path))
      res = assert(tr:request({ url = out.model, path = path, part = part, keep_partial = true, resume = true }))
      assert.equal(206, res.status)
      assert.is_true(res.resumed)
      assert.equal(100000, res.bytes)
      assert.equal(expected(id, "model", 100000), read_all(path))
      assert.equal("bytes=40000-", f.log[#f.log].headers.range)
      -- without keep_partial the part goes away
      local _, out2 = links({ file_size = 1000, drop_download = 0.5 })
      res, err = tr:request({ url = out2.model, path = dir .. "/d2", resume = true })
      assert.is_nil(res)
      assert.is_nil(read_all(dir .. "/d2.part"))
      os.remove(path)
    end)

    it("start over when the server ignores the Range", function()
      local id, out = links({ file_size = 5000, ignore_range = true })
      local path = dir .. "/ir.glb"
      write(path .. ".part", expected(id, "model", 5000):sub(1, 1000))
      local res = assert(tr:request({ url = out.model, path = path, resume = true }))
      assert.equal(200, res.status)
      assert.is_nil(res.resumed)
      assert.equal(expected(id, "model", 5000), read_all(path))
      os.remove(path)
    end)

    it("fail when the server lies about Content-Length", function()
      local _, out = links({ file_size = 5000, lie_length = true })
      local res, err = tr:request({ url = out.model, path = dir .. "/lie.glb" })
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.is_nil(read_all(dir .. "/lie.glb"))
    end)

    it("refuse files over max_bytes", function()
      local _, out = links({ file_size = 5000 })
      local res, err = tr:request({ url = out.model, path = dir .. "/big.glb", max_bytes = 4999 })
      assert.is_nil(res)
      assert.equal("download", err.kind)
      assert.is_nil(read_all(dir .. "/big.glb"))
      assert.is_nil(read_all(dir .. "/big.glb.part"))
    end)

    it("time out on a long stall, and wait out a short one", function()
      local _, out = links({ file_size = 5000, stall = 60 })
      local res, err = tr:request({ url = out.model, path = dir .. "/st.glb", low_speed_time = 30, keep_partial = true })
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal(2500, #read_all(dir .. "/st.glb.part"))
      local _, out2 = links({ file_size = 5000, stall = 3 })
      res = assert(tr:request({ url = out2.model, path = dir .. "/st2.glb", low_speed_time = 30 }))
      assert.equal(5000, res.bytes)
      assert.equal(3, slept[#slept])
    end)

    it("sanitize a hostile Content-Disposition file name", function()
      local _, out = links({ filename = "../../evil.sh" })
      local res = assert(tr:request({ url = out.model, path = dir .. "/cd.glb" }))
      assert.is_true(res.filename == nil or (not res.filename:find("/") and not res.filename:find("..", 1, true)))
      local ip = require "taskapi.fake.inprocess"
      assert.equal("evil.sh", ip.parse_content_disposition('attachment; filename="../../evil.sh"'))
      assert.is_nil(ip.parse_content_disposition('attachment; filename=".."'))
      assert.equal("a.png", ip.parse_content_disposition("attachment; filename=a.png"))
    end)
  end)
end)

describe("client settings in API calls", function()
  it("carry the client's user_agent and limits, and no setting it did not give", function()
    local f = fake.new()
    local id = f:add_task { provider = "tripo", queue = 0, run = 0 }
    local seen = {}
    local tr = f:transport()
    local spy = { request = function(_, req, ...) seen[#seen + 1] = req return tr:request(req, ...) end }
    local taskapi = require "taskapi"
    local c = assert(taskapi.new { provider = "tripo", api_key = "test-key", base_url = f:base_url("tripo"),
      transport = spy, min_interval = 0, user_agent = "myapp/2", max_body = 4096, stall_time = 7 })
    assert(c:status(id))
    assert.equal("myapp/2 taskapi/" .. require("taskapi.core").version, f.log[#f.log].headers["user-agent"])
    assert.equal(4096, seen[1].max_body)
    assert.equal(7, seen[1].low_speed_time)
    local plain = assert(taskapi.new { provider = "tripo", api_key = "test-key", base_url = f:base_url("tripo"),
      transport = spy, min_interval = 0 })
    assert(plain:status(id))
    local req = seen[2]
    assert.matches("^taskapi/", req.user_agent) -- the default names the library
    assert.is_nil(req.max_body)
    assert.is_nil(req.ca_file)
    assert.is_nil(req.insecure)
    assert.is_nil(req.low_speed_time)
    assert.equal(30, req.timeout)
    assert.is_false(req.response_headers)
  end)
end)
