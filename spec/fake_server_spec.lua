-- taskapi.fake.server: the nginx host of the fake provider, over real HTTP (curl).
local server = require "taskapi.fake.server"
local model = require "taskapi.fake.model"
local cjson = require "cjson"
local files = require "taskapi.files"
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
