-- taskapi.fake.server: the nginx host of the fake provider, over real HTTP (curl).
local server = require "taskapi.fake.server"
local model = require "taskapi.fake.model"
local cjson = require "cjson"
local files = require "taskapi.util.files"

-- POST /tasks/list answers tasks as an array (the default list_shape, as Tripo's SDKs read it):
-- keyed by task_id here for the checks
local function by_id(tasks)
  local out = {}
  for k, t in pairs(tasks) do out[type(k) == "number" and t.task_id or k] = t end
  return out
end

local sh, q, read_all = files.sh, files.quote, files.read

local function tmpfile()
  return sh("mktemp /tmp/taskapi-fake-spec.XXXXXX")
end

-- curl -s -i: status, headers (lower case), body
local function http(method, url, opts)
  opts = opts or {}
  local cmd = { "curl -s -i -X", method }
  for _, h in ipairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. q(h) end
  if opts.key then cmd[#cmd + 1] = "-H " .. q("Authorization: Bearer " .. opts.key) end
  if opts.body then cmd[#cmd + 1] = "--data-binary " .. q(opts.body) end
  for _, f in ipairs(opts.form or {}) do cmd[#cmd + 1] = "-F " .. q(f) end
  cmd[#cmd + 1] = q(url)
  local out = sh(table.concat(cmd, " "))
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  head = head or out
  local status = tonumber(head:match("^HTTP/%S+ (%d+)"))
  local headers = {}
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  return { status = status, headers = headers, body = body or "" }
end

-- curl download to a file: http code, bytes, curl exit code
local function fetch(url, out, extra)
  local o = sh("curl -s " .. (extra or "") .. " -o " .. q(out) .. " -w '%{http_code} %{size_download}' " .. q(url) .. "; echo \" $?\"")
  local code, size, rc = o:match("(%d+) (%d+)%s+(%d+)")
  return tonumber(code), tonumber(size), tonumber(rc)
end

describe("fake server (nginx)", function()
  local s, url

  local function add(spec)
    local r = http("POST", url .. "/_fake/tasks", { body = cjson.encode(spec) })
    assert.equal(200, r.status, r.body)
    return cjson.decode(r.body).id
  end

  local function tripo_status(id, key)
    return http("GET", url .. "/tripo/v2/openapi/task/" .. id, { key = key or "test-key" })
  end

  setup(function()
    s = assert(server.start({ ttl = 120 }))
    url = s.url
  end)

  teardown(function()
    if s then s.stop() end
  end)

  before_each(function()
    assert.equal(200, http("POST", url .. "/_fake/reset").status)
  end)

  it("listens on loopback and answers the static benchmark route", function()
    assert.matches("^http://127%.0%.0%.1:%d+$", url)
    local r = http("GET", url .. "/static/tripo-status")
    assert.equal(200, r.status)
    assert.equal("application/json", r.headers["content-type"])
    assert.equal("fake-static-trace", r.headers["x-tripo-trace-id"])
    assert.equal("success", cjson.decode(r.body).data.status)
    r = http("GET", url .. "/static/tasks/any-id")
    assert.equal(200, r.status)
    assert.equal("fake-static-trace", r.headers["x-tripo-trace-id"])
    local b = cjson.decode(r.body)
    assert.equal("success", b.status)
    assert.equal(12.5, b.data.credits_consumed)
    assert.is_string(b.data.output.model_url)
  end)

  it("runs a Tripo task through its schedule and serves its files", function()
    local id = add({ provider = "tripo", queue = 0, run = 1, file_size = 300000 })
    local r = tripo_status(id)
    assert.equal(200, r.status)
    assert.is_string(r.headers["x-tripo-trace-id"])
    assert.equal("running", cjson.decode(r.body).data.status)
    assert.equal(200, http("POST", url .. "/_fake/advance?seconds=1").status)
    local b = cjson.decode(tripo_status(id).body)
    assert.equal("success", b.data.status)
    local link = b.data.output.model
    assert.matches("^" .. url:gsub("%p", "%%%0") .. "/files/", link)
    local out = tmpfile()
    local code, size, rc = fetch(link, out)
    assert.equal(200, code)
    assert.equal(0, rc)
    assert.equal(300000, size)
    local seed = "taskapi-fake " .. id .. " model"
    assert.equal(model.file_bytes(seed, 300000), read_all(out))
    local h = http("GET", link)
    assert.equal("model/gltf-binary", h.headers["content-type"])
    os.remove(out)
  end)

  it("answers auth and ownership errors like Tripo", function()
    local id = add({ provider = "tripo" })
    local r = tripo_status(id, "bad-key")
    assert.equal(401, r.status)
    assert.equal(1002, cjson.decode(r.body).code)
    assert.is_string(r.headers["x-tripo-trace-id"])
    r = tripo_status(id, "other-key")
    assert.equal(404, r.status)
    assert.equal(2001, cjson.decode(r.body).code)
    r = http("POST", url .. "/tripo/v2/openapi/task", { key = "test-key", body = '{"prompt":"x"}',
      headers = { "Content-Type: application/json" } })
    assert.equal(400, r.status)
    assert.equal(1004, cjson.decode(r.body).code)
  end)

  it("creates SellerPic tasks with exact numeric ids and serves download links", function()
    local r = http("POST", url .. "/sellerpic/v1/api/generate/instructEdit", { key = "test-key",
      body = '{"prompt":"x","fake":{"queue":0,"run":0,"numeric_ids":true,"results":2}}',
      headers = { "Content-Type: application/json" } })
    assert.equal(200, r.status)
    local id = r.body:match('"id":(%d+)')
    assert.equal(19, #id)
    r = http("GET", url .. "/sellerpic/v1/api/generate?id=" .. id, { key = "test-key" })
    assert.equal(200, r.status)
    local rids = {}
    for rid in r.body:gmatch('"id":(%d+)') do rids[#rids + 1] = rid end
    assert.equal(2, #rids)
    r = http("GET", url .. "/sellerpic/v1/api/download?id=" .. rids[2] .. "&downloadFormat=webp&uhd=true", { key = "test-key" })
    assert.equal(200, r.status)
    local d = cjson.decode(r.body).data
    assert.equal(rids[2] .. ".webp", d.name)
    local f = http("GET", d.fileUrl)
    assert.equal(200, f.status)
    assert.equal("image/webp", f.headers["content-type"])
    -- no file_size: the real WebP, tagged with the task and its file
    assert.equal(require("taskapi.fake.media").bytes("webp", "taskapi-fake " .. id .. " " .. d.name), f.body)
    r = http("GET", url .. "/sellerpic/v1/api/download?id=" .. rids[2] .. "&downloadFormat=mp4", { key = "test-key" })
    assert.equal(400, r.status)
    r = http("GET", url .. "/sellerpic/v1/api/usage")
    assert.equal(401, r.status)
    assert.is_false(cjson.decode(r.body).success)
  end)

  it("accepts multipart uploads and refuses other bodies", function()
    local img = tmpfile()
    local f = io.open(img, "wb"); f:write("\137PNG fake image"); f:close()
    local r = http("POST", url .. "/tripo/v2/openapi/upload", { key = "test-key", form = { "file=@" .. img .. ";filename=a.png" } })
    assert.equal(200, r.status)
    assert.is_string(cjson.decode(r.body).data.image_token)
    r = http("POST", url .. "/sellerpic/v1/api/upload", { key = "test-key", form = { "file=@" .. img .. ";filename=a.png" } })
    assert.equal(200, r.status)
    assert.matches("^UPLOAD/%d+/a%.png$", cjson.decode(r.body).data.fileKey)
    r = http("POST", url .. "/tripo/v2/openapi/upload", { key = "test-key", form = { "other=x" } })
    assert.equal(400, r.status)
    r = http("POST", url .. "/tripo/v2/openapi/upload", { key = "test-key", body = "raw", headers = { "Content-Type: image/png" } })
    assert.equal(400, r.status)
    os.remove(img)
  end)

  it("supports Range on files natively", function()
    local id = add({ provider = "tripo", queue = 0, run = 0, file_size = 100000 })
    local link = cjson.decode(tripo_status(id).body).data.output.model
    local r = http("GET", link, { headers = { "Range: bytes=70000-70099" } })
    assert.equal(206, r.status)
    assert.equal("bytes 70000-70099/100000", r.headers["content-range"])
    assert.equal(model.file_bytes("taskapi-fake " .. id .. " model", 100000, 70000, 100), r.body)
    r = http("GET", link, { headers = { "Range: bytes=200000-" } })
    assert.equal(416, r.status)
  end)

  it("never sees an Authorization header on file requests from a well-behaved client", function()
    local id = add({ provider = "tripo", queue = 0, run = 0 })
    local link = cjson.decode(tripo_status(id).body).data.output.model
    http("GET", link)
    local log = cjson.decode(http("GET", url .. "/_fake/log").body)
    assert.equal(2, #log)
    assert.is_true(log[1].authorization)
    assert.equal("test-key", log[1].key)
    assert.matches("^/files/", log[2].path)
    assert.is_false(log[2].authorization)
  end)

  it("cuts the connection of a dropped download, then serves it whole", function()
    local id = add({ provider = "tripo", queue = 0, run = 0, file_size = 1000000, faults = { drop_download = 0.25 } })
    local link = cjson.decode(tripo_status(id).body).data.output.model
    local out = tmpfile()
    local code, size, rc = fetch(link, out)
    assert.equal(200, code)
    assert.equal(18, rc) -- CURLE_PARTIAL_FILE: the connection closed short of Content-Length
    assert.equal(250000, size)
    code, size, rc = fetch(link, out)
    assert.equal(200, code)
    assert.equal(0, rc)
    assert.equal(1000000, size)
    os.remove(out)
  end)

  it("lies about Content-Length, ignores Range, names a hostile file and expires links", function()
    local id = add({ provider = "tripo", queue = 0, run = 0, file_size = 5000, outputs = { "model", "rendered_image" },
      faults = { lie_length = true, expired_links = 1 } })
    local out = cjson.decode(tripo_status(id).body).data.output
    local tmp = tmpfile()
    local code = fetch(out.model, tmp)
    assert.equal(403, code) -- the first link issued was already expired
    local code2, size, rc = fetch(out.rendered_image, tmp)
    assert.equal(200, code2)
    assert.equal(18, rc)
    assert.equal(5000, size)
    local id2 = add({ provider = "tripo", queue = 0, run = 0, file_size = 5000, faults = { ignore_range = true, filename = "../../evil.sh" } })
    local link = cjson.decode(tripo_status(id2).body).data.output.model
    local r = http("GET", link, { headers = { "Range: bytes=100-199" } })
    assert.equal(200, r.status)
    assert.equal(5000, #r.body)
    assert.is_nil(r.headers["content-range"])
    assert.equal('attachment; filename="../../evil.sh"', r.headers["content-disposition"])
    os.remove(tmp)
  end)

  it("stalls a download mid-way, then finishes it", function()
    local id = add({ provider = "tripo", queue = 0, run = 0, file_size = 200000, faults = { stall = 1, stall_count = 1 } })
    local link = cjson.decode(tripo_status(id).body).data.output.model
    local o = sh("curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' " .. q(link))
    local code, size, t = o:match("(%d+) (%d+) ([%d.]+)")
    assert.equal("200", code)
    assert.equal("200000", size)
    assert.is_true(tonumber(t) >= 0.9)
    -- a client with a short time limit gives up with the first half
    local id2 = add({ provider = "tripo", queue = 0, run = 0, file_size = 200000, faults = { stall = 3 } })
    local link2 = cjson.decode(tripo_status(id2).body).data.output.model
    local tmp = tmpfile()
    local _, got, rc = fetch(link2, tmp, "--max-time 1.5")
    assert.equal(28, rc) -- CURLE_OPERATION_TIMEDOUT
    assert.equal(100000, got)
    os.remove(tmp)
  end)

  it("answers faults over HTTP", function()
    local id = add({ provider = "tripo", faults = { server_errors = 1, rate_limit = { count = 1, retry_after = 9 },
      html_error = 1, malformed_json = 1 } })
    local r = tripo_status(id)
    assert.equal(500, r.status)
    assert.equal(1000, cjson.decode(r.body).code)
    r = tripo_status(id)
    assert.equal(429, r.status)
    assert.equal("9", r.headers["retry-after"])
    r = tripo_status(id)
    assert.equal(502, r.status)
    assert.matches("^text/html", r.headers["content-type"])
    r = tripo_status(id)
    assert.equal(200, r.status)
    assert.is_false(pcall(cjson.decode, r.body))
    assert.equal(200, tripo_status(id).status)
    local sid = add({ provider = "sellerpic", faults = { code_under_200 = { count = 1, code = 30003 } } })
    r = http("GET", url .. "/sellerpic/v1/api/generate?id=" .. sid, { key = "test-key" })
    assert.equal(200, r.status)
    assert.equal(30003, cjson.decode(r.body).code)
  end)

  it("delays an answer without blocking a concurrent request", function()
    local id = add({ provider = "tripo", faults = { delay = 1.5 } })
    local slow = url .. "/tripo/v2/openapi/task/" .. id
    local fast = url .. "/tripo/v2/openapi/user/balance"
    local auth = "-H 'Authorization: Bearer test-key'"
    local o = sh("(curl -s -o /dev/null " .. auth .. " -w 'S%{http_code} %{time_total}\\n' " .. q(slow) .. " &" ..
      " sleep 0.2; curl -s -o /dev/null " .. auth .. " -w 'F%{http_code} %{time_total}\\n' " .. q(fast) .. "; wait)")
    local sc, st = o:match("S(%d+) ([%d.]+)")
    local fc, ft = o:match("F(%d+) ([%d.]+)")
    assert.equal("200", sc)
    assert.equal("200", fc)
    assert.is_true(tonumber(st) >= 1.4)
    assert.is_true(tonumber(ft) < 0.5)
    assert.is_true(o:find("F") < o:find("S")) -- the fast answer came first
  end)

  describe("Tripo V3", function()
    local function v3(method, path, opts)
      opts = opts or {}
      if opts.key == nil then opts.key = "tsk_test-key" elseif opts.key == false then opts.key = nil end
      if opts.body then
        opts.headers = opts.headers or {}
        opts.headers[#opts.headers + 1] = "Content-Type: application/json"
      end
      return http(method, url .. "/tripo/v3" .. path, opts)
    end

    it("runs a task through V3's shape, echoes X-Request-ID, and V2 reads the same task", function()
      local r = v3("POST", "/generation/text-to-model", { headers = { "X-Request-ID: spec-req-1" },
        body = '{"prompt":"a cat","model_version":"v3.1-20260211","fake":{"queue":0,"run":1,"file_size":5000}}' })
      assert.equal(200, r.status, r.body)
      assert.equal("spec-req-1", r.headers["x-request-id"])
      assert.is_string(r.headers["x-tripo-trace-id"])
      local b = cjson.decode(r.body)
      assert.equal(0, b.code)
      assert.equal("success", b.status)
      assert.equal("text_to_model", b.data.type)
      assert.equal("queued", b.data.status)
      local id = b.data.task_id
      r = v3("GET", "/tasks/" .. id)
      assert.equal(200, r.status)
      assert.matches("^req_", r.headers["x-request-id"])
      local d = cjson.decode(r.body).data
      assert.equal("running", d.status)
      assert.is_number(d.running_left_time)
      assert.is_nil(d.completed_at)
      assert.equal(200, http("POST", url .. "/_fake/advance?seconds=1").status)
      r = v3("GET", "/tasks/" .. id)
      assert.truthy(r.body:find('"credits_consumed":12.5', 1, true))
      d = cjson.decode(r.body).data
      assert.equal("success", d.status)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", d.completed_at)
      assert.matches("^" .. url:gsub("%p", "%%%0") .. "/files/%w+/model%.glb$", d.output.model_url)
      local out = tmpfile()
      local code, size = fetch(d.output.model_url, out)
      assert.equal(200, code)
      assert.equal(5000, size)
      assert.equal(model.file_bytes("taskapi-fake " .. id .. " model", 5000), read_all(out))
      os.remove(out)
      local v2 = cjson.decode(tripo_status(id, "test-key").body).data
      assert.equal("success", v2.status)
      assert.equal(20, v2.consumed_credit)
      assert.is_string(v2.output.model)
    end)

    it("answers 401 code 2, 404 code 2001 and 400 code 1004 in V3's error envelope", function()
      local id = add({ provider = "tripo" })
      local r = v3("GET", "/tasks/" .. id, { key = "bad-key", headers = { "X-Request-ID: spec-req-2" } })
      assert.equal(401, r.status)
      local b = cjson.decode(r.body)
      assert.equal(2, b.code)
      assert.equal("error", b.status)
      assert.equal("spec-req-2", b.request_id)
      assert.is_string(b.suggestion)
      assert.equal(401, v3("GET", "/tasks/" .. id, { key = false }).status)
      r = v3("GET", "/tasks/" .. id, { key = "other-key" })
      assert.equal(404, r.status)
      assert.equal(2001, cjson.decode(r.body).code)
      assert.equal(200, v3("GET", "/tasks/" .. id, { key = "test-key" }).status)
      r = v3("POST", "/generation/image-to-model", { body = '{"input":"https://example.com/a.png"}' })
      assert.equal(400, r.status)
      b = cjson.decode(r.body)
      assert.equal(1004, b.code)
      assert.equal("error", b.status)
      assert.is_string(b.request_id)
      r = v3("GET", "/no/such/route")
      assert.equal(404, r.status)
    end)

    it("creates through every capability endpoint and counts each request in /_fake/stats", function()
      local n = 0
      for path, typ in pairs(model.V3_CREATES) do
        n = n + 1
        local r = v3("POST", path, { body = '{"input":"x","model_version":"v3.1-20260211"}' })
        assert.equal(200, r.status, path)
        assert.equal(typ, cjson.decode(r.body).data.type)
      end
      assert.equal(18, n)
      v3("POST", "/generation/multiview-to-model", { body = '{"inputs":["a","b","",""]}' }) -- 400, still counted
      http("POST", url .. "/tripo/v2/openapi/task", { key = "test-key", body = '{"type":"text_to_model"}',
        headers = { "Content-Type: application/json" } })
      local st = cjson.decode(http("GET", url .. "/_fake/stats").body)
      assert.equal(19, st.creates.tripo)
      assert.equal(18, st.created.tripo)
      assert.equal(1, st.creates["tripo-v2"])
      assert.equal(0, st.creates.sellerpic)
      local log = cjson.decode(http("GET", url .. "/_fake/log").body)
      assert.equal("tripo", log[1].create.provider)
      assert.is_string(log[1].create.task_id)
      assert.is_nil(log[19].create.task_id)
      assert.equal("tripo-v2", log[20].create.provider)
    end)

    it("lists tasks (V3 /tasks/list, V2 /task/batch) with the missed ids, at most 100", function()
      local a = add({ provider = "tripo", queue = 0, run = 0 })
      local b = add({ provider = "tripo", owner_key = "other-key" })
      local body = cjson.encode({ task_ids = { a, b, "nope" } })
      local r = v3("POST", "/tasks/list", { body = body })
      assert.equal(200, r.status)
      local d = cjson.decode(r.body).data
      d.tasks = by_id(d.tasks)
      assert.equal("success", d.tasks[a].status)
      assert.is_string(d.tasks[a].output.model_url)
      assert.same({ b, "nope" }, d.missed)
      r = http("POST", url .. "/tripo/v2/openapi/task/batch", { key = "test-key", body = body,
        headers = { "Content-Type: application/json" } })
      assert.equal(200, r.status)
      d = cjson.decode(r.body).data
      d.tasks = by_id(d.tasks)
      assert.is_string(d.tasks[a].output.model)
      assert.same({ b, "nope" }, d.missed)
      local ids = {}
      for i = 1, 101 do ids[i] = "t" .. i end
      r = v3("POST", "/tasks/list", { body = cjson.encode({ task_ids = ids }) })
      assert.equal(400, r.status)
      assert.equal(1004, cjson.decode(r.body).code)
      r = http("POST", url .. "/tripo/v2/openapi/task/batch", { key = "test-key", body = cjson.encode({ task_ids = ids }),
        headers = { "Content-Type: application/json" } })
      assert.equal(400, r.status)
      assert.equal(1004, cjson.decode(r.body).code)
    end)

    it("answers faults on V3 status reads, and delays them without blocking", function()
      local id = add({ provider = "tripo", faults = { server_errors = 1, rate_limit = { count = 1, retry_after = 4 },
        malformed_json = 1 } })
      local r = v3("GET", "/tasks/" .. id)
      assert.equal(500, r.status)
      assert.equal("error", cjson.decode(r.body).status)
      r = v3("GET", "/tasks/" .. id)
      assert.equal(429, r.status)
      assert.equal("4", r.headers["retry-after"])
      r = v3("GET", "/tasks/" .. id)
      assert.equal(200, r.status)
      assert.is_false(pcall(cjson.decode, r.body))
      assert.equal(200, v3("GET", "/tasks/" .. id).status)
      local slow = add({ provider = "tripo", faults = { delay = 1 } })
      local t0 = os.time()
      local o = sh("curl -s -o /dev/null -H 'Authorization: Bearer test-key' -w '%{http_code} %{time_total}' " ..
        q(url .. "/tripo/v3/tasks/" .. slow))
      local code, t = o:match("(%d+) ([%d.]+)")
      assert.equal("200", code)
      assert.is_true(tonumber(t) >= 0.9)
      assert.is_true(os.time() - t0 < 5)
    end)

    it("uploads files by multipart, refuses other types, and a token works for creates", function()
      local img = tmpfile()
      local f = io.open(img, "wb"); f:write("\137PNG v3 image"); f:close()
      local r = v3("POST", "/files", { form = { "file=@" .. img .. ";filename=hero.png" } })
      assert.equal(200, r.status, r.body)
      local tok = cjson.decode(r.body).data.file_token
      assert.matches("^file_%x+%-%x+%-%x+%-%x+%-%x+$", tok)
      assert.equal(200, v3("POST", "/files", { form = { "file=@" .. img .. ";filename=chair.glb" } }).status)
      r = v3("POST", "/files", { form = { "file=@" .. img .. ";filename=hero.gif" } })
      assert.equal(400, r.status)
      assert.equal(2004, cjson.decode(r.body).code)
      r = v3("POST", "/generation/image-to-model", { body = cjson.encode({ input = { file_token = tok }, model_version = "v3.1-20260211" }) })
      assert.equal(200, r.status)
      r = v3("POST", "/generation/image-to-model", { body = cjson.encode({ input = tok, model_version = "v3.1-20260211" }), key = "other-key" })
      assert.equal(400, r.status)
      assert.equal(1004, cjson.decode(r.body).code)
      local log = cjson.decode(http("GET", url .. "/_fake/log").body)
      assert.equal("hero.png", log[1].upload.filename)
      assert.equal(#"\137PNG v3 image", log[1].upload.size)
      assert.equal(model.adler32("\137PNG v3 image"), log[1].upload.adler32)
      os.remove(img)
    end)

    it("presigns an upload on the same server: a PUT without the key, logged with size and checksum", function()
      local r = v3("POST", "/files/presign", { body = '{"format":"glb"}' })
      assert.equal(200, r.status)
      local d = cjson.decode(r.body).data
      assert.matches("^" .. url:gsub("%p", "%%%0") .. "/storage/", d.upload_url)
      assert.is_number(d.expires_in)
      local src = tmpfile()
      local bytes = string.rep("glTF-binary-bytes\0", 20000)
      local f = io.open(src, "wb"); f:write(bytes); f:close()
      local o = sh("curl -s -o /dev/null -w '%{http_code}' -T " .. q(src) .. " " .. q(d.upload_url))
      assert.equal("200", o)
      local log = cjson.decode(http("GET", url .. "/_fake/log").body)
      local e = log[#log]
      assert.equal("PUT", e.method)
      assert.is_false(e.authorization)
      assert.equal(#bytes, e.upload.size)
      assert.equal(model.adler32(bytes), e.upload.adler32)
      r = v3("POST", "/models/import", { body = cjson.encode({ input = { file_token = d.file_token } }) })
      assert.equal(200, r.status, r.body)
      -- a client that sends its key to the storage URL is seen in the log
      o = sh("curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer test-key' -T " .. q(src) .. " " .. q(d.upload_url))
      assert.equal("200", o)
      log = cjson.decode(http("GET", url .. "/_fake/log").body)
      assert.is_true(log[#log].authorization)
      assert.equal(403, http("PUT", url .. "/storage/uploads/0/x.glb", { body = "x" }).status)
      r = v3("POST", "/files/presign", { body = '{"format":"exe"}' })
      assert.equal(400, r.status)
      os.remove(src)
    end)

    it("answers balance and usage", function()
      local r = v3("GET", "/account/balance")
      assert.equal(200, r.status)
      assert.truthy(r.body:find('"balance":2987.5', 1, true))
      assert.equal(0, cjson.decode(r.body).data.frozen)
      local a = add({ provider = "tripo", queue = 0, run = 0 })
      assert.equal(200, http("POST", url .. "/_fake/advance?seconds=1").status)
      local b = add({ provider = "tripo", queue = 0, run = 0 })
      add({ provider = "tripo", owner_key = "other-key" })
      r = v3("GET", "/account/usage?limit=10&offset=0")
      assert.equal(200, r.status)
      local rows = cjson.decode(r.body).data
      assert.equal(2, #rows)
      assert.equal(b, rows[1].task_id)
      assert.equal(a, rows[2].task_id)
      assert.equal(12.5, rows[2].credits_consumed)
      r = v3("GET", "/account/usage?limit=201")
      assert.equal(400, r.status)
      assert.equal(1004, cjson.decode(r.body).code)
    end)

    it("takes more keys from server.start{keys = ...} and the V3 options", function()
      local s2 = assert(server.start({ ttl = 60, keys = { "ci-key", ["ci-alias"] = "test-key" }, v3_statuses = 8,
        list_shape = "array", v3_eta = false }))
      local function get2(path, key)
        return http("GET", s2.url .. path, { key = key })
      end
      local r = http("POST", s2.url .. "/_fake/tasks", { body = '{"provider":"tripo","queue":0,"run":0,"final":"banned"}' })
      local id = cjson.decode(r.body).id
      assert.equal(200, get2("/tripo/v3/tasks/" .. id, "ci-alias").status)
      assert.equal(200, get2("/tripo/v3/tasks/" .. id, "tsk_test-key").status)
      assert.equal(404, get2("/tripo/v3/tasks/" .. id, "ci-key").status)
      assert.equal(401, get2("/tripo/v3/tasks/" .. id, "nope").status)
      assert.equal("banned", cjson.decode(get2("/tripo/v3/tasks/" .. id, "test-key").body).data.status)
      r = http("POST", s2.url .. "/tripo/v3/tasks/list", { key = "test-key", body = cjson.encode({ task_ids = { id } }),
        headers = { "Content-Type: application/json" } })
      assert.equal(id, cjson.decode(r.body).data.tasks[1].task_id)
      local q2 = cjson.decode(http("POST", s2.url .. "/_fake/tasks", { body = '{"provider":"tripo","queue":30}' }).body).id
      assert.is_nil(cjson.decode(get2("/tripo/v3/tasks/" .. q2, "test-key").body).data.queuing_num)
      s2.stop()
    end)
  end)

  it("starts and stops through the cli", function()
    local state = tmpfile()
    os.remove(state)
    local cli = "lua/taskapi/fake/cli.lua"
    local u = sh("lua5.4 " .. cli .. " start --ttl 60 --state " .. q(state)):gsub("%s+$", "")
    assert.matches("^http://127%.0%.0%.1:%d+$", u)
    assert.equal(200, http("GET", u .. "/static/tripo-status").status)
    -- a second start finds the running one
    assert.equal(u, (sh("lua5.4 " .. cli .. " start --state " .. q(state)):gsub("%s+$", "")))
    local dir = read_all(state):match("^%S+%s+(%S+)")
    sh("lua5.4 " .. cli .. " stop --state " .. q(state))
    assert.is_nil(io.open(state, "rb"))
    assert.is_nil(http("GET", u .. "/static/tripo-status").status)
    assert.is_nil(io.open(dir .. "/nginx.conf", "rb"))
  end)
end)
