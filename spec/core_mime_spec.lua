-- taskapi.core req.mime: multipart/form-data bodies streamed by libcurl from files (and plain
-- fields), checked against a private nginx on 127.0.0.1 that parses what really arrived.
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"

-- /parts answers the parsed body: [{name, filename, content_type, size, sha256}], plus the
-- request's method and Content-Type; the body may have been buffered to a temporary file.
local LOCATIONS = [[
location = /parts {
  content_by_lua_block {
    local model = require "taskapi.fake.model"
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
      local p = ngx.req.get_body_file()
      local f = p and io.open(p, "rb")
      if f then body = f:read("*a") f:close() end
    end
    local parts, err = model.multipart_parts({ ["content-type"] = ngx.var.http_content_type }, body)
    local out = { method = ngx.req.get_method(), content_type = ngx.var.http_content_type,
      length = #(body or ""), error = err, parts = {} }
    for i, p in ipairs(parts or {}) do
      out.parts[i] = { name = p.name, filename = p.filename or false, content_type = p.content_type or false,
        size = p.size, sha256 = require("taskapi.core").sha256(p.data), data = p.size <= 64 and p.data or false }
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.print(require("cjson").encode(out))
  }
}
]]

local srv, dir

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local bytes = require "support.bytes"

describe("core req.mime", function()
  local m
  setup(function()
    srv = assert(nginx.start { locations = LOCATIONS, ttl = 300 })
    local p = io.popen("mktemp -d /tmp/taskapi-mime-spec.XXXXXX")
    dir = p:read("*l")
    p:close()
    m = core.multi()
  end)
  teardown(function()
    if m then m:close() end
    if srv then srv.stop() end
    if dir and dir:match("^/tmp/taskapi%-mime%-spec%.") then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local function post(mime, extra)
    local req = { url = srv.url .. "/parts", method = "POST", mime = mime, json = true }
    for k, v in pairs(extra or {}) do req[k] = v end
    return m:request(req)
  end

  it("sends a file part with its bytes, name, filename and type, and a plain field", function()
    local content = bytes(3000) .. "\r\n--not-a-boundary\r\n" .. bytes(100)
    write(dir .. "/cat.png", content)
    local res = assert(post({
      { name = "file", path = dir .. "/cat.png", type = "image/png" },
      { name = "note", data = "hello world" },
    }))
    assert.equal(200, res.status)
    local j = res.json
    assert.equal("POST", j.method)
    assert.matches("^multipart/form%-data; boundary=", j.content_type)
    assert.is_nil(j.error)
    assert.equal(2, #j.parts)
    assert.same({ name = "file", filename = "cat.png", content_type = "image/png", size = #content,
      sha256 = core.sha256(content), data = false }, j.parts[1])
    assert.equal("note", j.parts[2].name)
    assert.equal(false, j.parts[2].filename)
    assert.equal("hello world", j.parts[2].data)
  end)

  it("takes another filename than the path's, and streams a large file (3 MiB) intact", function()
    local big = bytes(3 * 1024 * 1024)
    write(dir .. "/big.bin", big)
    local res = assert(post({ { name = "upload", path = dir .. "/big.bin", filename = "photo.webp", type = "image/webp" } },
      { timeout = 60 }))
    assert.equal(200, res.status)
    local p = res.json.parts[1]
    assert.equal("photo.webp", p.filename)
    assert.equal("image/webp", p.content_type)
    assert.equal(#big, p.size)
    assert.equal(core.sha256(big), p.sha256)
  end)

  it("works with PUT and keeps custom headers", function()
    write(dir .. "/a.jpg", "JPEGDATA")
    local res = assert(post({ { name = "file", path = dir .. "/a.jpg" } }, { method = "PUT", headers = { "X-Test: 1" } }))
    assert.equal("PUT", res.json.method)
    assert.equal("JPEGDATA", res.json.parts[1].data)
    assert.equal("a.jpg", res.json.parts[1].filename)
  end)

  it("sends the same req twice (the parts are rebuilt per transfer)", function()
    write(dir .. "/twice.png", "twice")
    local req = { url = srv.url .. "/parts", method = "POST", json = true, mime = { { name = "file", path = dir .. "/twice.png" } } }
    for _ = 1, 2 do
      local res = assert(m:request(req))
      assert.equal("twice", res.json.parts[1].data)
    end
  end)

  it("runs on the non-blocking add/perform/completed path too", function()
    write(dir .. "/nb.png", "nonblocking")
    local t = assert(m:add({ url = srv.url .. "/parts", method = "POST", json = true,
      mime = { { name = "file", path = dir .. "/nb.png" } } }))
    local done
    for _ = 1, 400 do
      m:perform()
      for _, x in ipairs(m:completed()) do if x == t then done = true end end
      if done then break end
      m:poll(0.05)
    end
    assert.is_true(done)
    local res = assert(t:result())
    assert.equal("nonblocking", res.json.parts[1].data)
    t:close()
  end)

  local bad = {
    { "not a table", "x", "array of parts" },
    { "empty", {}, "at least one part" },
    { "a part that is not a table", { "x" }, "mime%[1%]: each part must be a table" },
    { "no name", { { path = "/etc/hostname" } }, "mime%[1%]: name" },
    { "a name with a quote", { { name = 'a"b', data = "x" } }, "mime%[1%]: name" },
    { "neither path nor data", { { name = "f" } }, "exactly one of path" },
    { "both path and data", { { name = "f", path = "/etc/hostname", data = "x" } }, "exactly one of path" },
    { "a missing file", { { name = "f", path = "/nonexistent/x.png" } }, "cannot read the file: No such file" },
    { "a directory", { { name = "f", path = "/tmp" } }, "not a regular file" },
    { "a type with a line break", { { name = "f", path = "/etc/hostname", type = "image/png\r\nX: y" } }, "type must be" },
    { "a filename with a slash", { { name = "f", path = "/etc/hostname", filename = "../x" } }, "filename must be" },
    { "a type on a data part", { { name = "f", data = "x", type = "text/plain" } }, "belong to file parts" },
    { "a numeric path", { { name = "f", path = 1 } }, "must be strings" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. case[1] .. " before any request", function()
      local t, err = m:add({ url = srv.url .. "/parts", method = "POST", mime = case[2] })
      assert.is_nil(t)
      assert.equal("invalid_argument", err.kind)
      assert.matches(case[3], err.message)
      assert.equal(0, m:count())
    end)
  end

  it("refuses mime together with body, and with GET", function()
    write(dir .. "/c.png", "c")
    local parts = { { name = "f", path = dir .. "/c.png" } }
    local t, err = m:add({ url = srv.url .. "/parts", method = "POST", body = "x", mime = parts })
    assert.is_nil(t)
    assert.matches("exclude each other", err.message)
    t, err = m:add({ url = srv.url .. "/parts", mime = parts })
    assert.is_nil(t)
    assert.matches("needs method POST or PUT", err.message)
  end)

  it("frees an unsent transfer with parts on close and on GC", function()
    write(dir .. "/gc.png", "gc")
    for _ = 1, 50 do
      local t = assert(m:add({ url = srv.url .. "/parts", method = "POST", mime = { { name = "f", path = dir .. "/gc.png" } } }))
      t:close()
      t:close() -- idempotent
    end
    for _ = 1, 20 do
      m:add({ url = srv.url .. "/parts", method = "POST", mime = { { name = "f", path = dir .. "/gc.png" } } })
    end
    assert.equal(20, m:count())
    local m2 = core.multi()
    m2:add({ url = srv.url .. "/parts", method = "POST", mime = { { name = "f", path = dir .. "/gc.png" } } })
    m2 = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    -- the running ones of m are aborted by its close (in teardown); drain them here
    local left = m:count()
    for _ = 1, 400 do
      left = m:perform()
      m:completed()
      if left == 0 then break end
      m:poll(0.05)
    end
    assert.equal(0, left)
  end)

  it("a file that disappears before sending is an io error", function()
    local path = dir .. "/gone.png"
    write(path, "gone")
    local t = assert(m:add({ url = srv.url .. "/parts", method = "POST", mime = { { name = "f", path = path } } }))
    os.remove(path)
    local res, err
    for _ = 1, 400 do
      m:perform()
      local fin = m:completed()
      if #fin > 0 then res, err = t:result() break end
      m:poll(0.05)
    end
    assert.is_nil(res)
    assert.equal("io", err.kind)
    assert.matches("cannot read the file", err.message)
    assert.is_falsy(err.retryable)
    t:close()
  end)
end)
