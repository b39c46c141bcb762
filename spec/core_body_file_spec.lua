-- taskapi.core req.body_file: a PUT or POST body streamed from one file (the raw bytes, no
-- multipart), checked against a private nginx on 127.0.0.1 that reports what really arrived.
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"

-- /store answers what arrived: method, headers of interest, size and Adler-32 of the body
-- (read from nginx's temporary file when it buffered the body there). /redirect reads the whole
-- body, then answers 307 to /store, so libcurl must rewind the file and send it again.
-- /deny answers 403 at once.
local LOCATIONS = [[
location = /store {
  client_max_body_size 0;
  content_by_lua_block {
    ngx.req.read_body()
    local core = require "taskapi.core"
    local size, sum, in_file = 0, nil, false
    local body = ngx.req.get_body_data()
    if body then size, sum = #body, core.sha256(body)
    else
      local p = ngx.req.get_body_file()
      local f = p and io.open(p, "rb")
      if f then
        in_file = true
        size = f:seek("end")
        f:close()
        sum = core.sha256_file(p)
      end
    end
    local h = ngx.req.get_headers()
    ngx.header["Content-Type"] = "application/json"
    ngx.print(require("cjson").encode({
      method = ngx.req.get_method(), content_type = h["content-type"] or false,
      content_length = tonumber(h["content-length"]) or false,
      chunked = h["transfer-encoding"] ~= nil, authorization = h["authorization"] ~= nil,
      size = size, sha256 = sum or core.sha256(""), in_file = in_file,
    }))
  }
}
location = /redirect {
  content_by_lua_block { ngx.req.read_body() ngx.redirect("/store", 307) }
}
location = /deny { return 403 "denied\n"; }
]]

-- SHA-256 as the location computes it (taskapi.core's, so a large body costs the spec no Lua loop)
local sha256 = core.sha256

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local bytes = require "support.bytes"

-- How many of this process's descriptors are open on path (through /proc).
local function fds_on(path)
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("*l"):match("^(%d+)")
  f:close()
  local p = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  local n = 0
  for line in p:lines() do
    if line:sub(-#path - 4) == "-> " .. path or line:find("-> " .. path, 1, true) then n = n + 1 end
  end
  p:close()
  return n
end

describe("core req.body_file", function()
  local srv, dir, m
  setup(function()
    srv = assert(nginx.start { locations = LOCATIONS, ttl = 300 })
    local p = io.popen("mktemp -d /tmp/taskapi-bodyfile-spec.XXXXXX")
    dir = p:read("*l")
    p:close()
    m = core.multi()
  end)
  teardown(function()
    if m then m:close() end
    if srv then srv.stop() end
    if dir and dir:match("^/tmp/taskapi%-bodyfile%-spec%.") then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local function send(req)
    req.url = req.url or srv.url .. "/store"
    req.method = req.method or "PUT"
    if req.json == nil then req.json = true end
    return m:request(req)
  end

  it("PUTs the file's exact bytes with its size as Content-Length and no Content-Type", function()
    local content = bytes(3000) .. "\r\n--x\r\n\0" .. bytes(10)
    write(dir .. "/a.bin", content)
    local res = assert(send { body_file = dir .. "/a.bin" })
    assert.equal(200, res.status)
    local j = res.json
    assert.equal("PUT", j.method)
    assert.equal(#content, j.size)
    assert.equal(#content, j.content_length)
    assert.equal(sha256(content), j.sha256)
    assert.is_false(j.chunked)
    assert.is_false(j.content_type)
    assert.is_false(j.authorization)
  end)

  it("POSTs it too, with req.body_type as Content-Type (no form default)", function()
    local content = bytes(777)
    write(dir .. "/b.glb", content)
    local res = assert(send { method = "POST", body_file = dir .. "/b.glb", body_type = "model/gltf-binary" })
    assert.equal("POST", res.json.method)
    assert.equal("model/gltf-binary", res.json.content_type)
    assert.equal(sha256(content), res.json.sha256)
    res = assert(send { method = "POST", body_file = dir .. "/b.glb" })
    assert.is_false(res.json.content_type)
    assert.equal(777, res.json.size)
  end)

  it("keeps a Content-Type header of req.headers when there is no body_type", function()
    write(dir .. "/c.bin", "hello")
    local res = assert(send { body_file = dir .. "/c.bin", headers = { "Content-Type: application/x-thing", "X-A: 1" } })
    assert.equal("application/x-thing", res.json.content_type)
    assert.equal(5, res.json.size)
  end)

  it("sends an empty file as Content-Length: 0", function()
    write(dir .. "/empty", "")
    local res = assert(send { body_file = dir .. "/empty" })
    assert.equal(200, res.status)
    assert.equal(0, res.json.size)
    assert.equal(0, res.json.content_length)
  end)

  it("streams a 24 MiB file (buffered to disk by nginx) exactly, twice", function()
    local path = dir .. "/big.bin"
    local block = bytes(65536)
    local n = os.getenv("TASKAPI_MEMCHECK") and 40 or 384 -- 2.5 MiB under valgrind
    local f = assert(io.open(path, "wb"))
    for _ = 1, n do f:write(block) end
    f:close()
    local res = assert(send { body_file = path, timeout = 60 })
    assert.equal(200, res.status)
    assert.equal(n * 65536, res.json.size)
    assert.equal(n * 65536, res.json.content_length)
    assert.is_true(res.json.in_file)
    -- the same bytes again: the sums agree, so every byte arrived in order
    local res2 = assert(send { body_file = path, timeout = 60 })
    assert.equal(res.json.sha256, res2.json.sha256)
  end)

  it("rewinds the file when a 307 redirect asks for the body again", function()
    local content = bytes(5000)
    write(dir .. "/r.bin", content)
    local res = assert(send { url = srv.url .. "/redirect", body_file = dir .. "/r.bin" })
    assert.equal(200, res.status)
    assert.equal(1, res.redirects)
    assert.equal("PUT", res.json.method)
    assert.equal(#content, res.json.size)
    assert.equal(sha256(content), res.json.sha256)
  end)

  it("returns the server's refusal as a response, not an error", function()
    write(dir .. "/d.bin", bytes(2000000))
    local res = assert(send { url = srv.url .. "/deny", body_file = dir .. "/d.bin", json = false })
    assert.equal(403, res.status)
    assert.equal("denied\n", res.body)
  end)

  it("reports upload progress: bytes of the file sent, and its size", function()
    local path = dir .. "/p.bin"
    write(path, bytes(300000))
    local t = assert(m:add { url = srv.url .. "/store", method = "PUT", body_file = path, json = true })
    local done, total = t:progress()
    assert.equal(0, done)
    assert.equal(300000, total)
    while #m:completed() == 0 do
      m:perform()
      m:poll(0.05)
    end
    done, total = t:progress()
    assert.equal(300000, done)
    assert.equal(300000, total)
    assert.equal(300000, assert(t:result()).json.size)
    t:close()
  end)

  it("ends as kind io when the file shrank after the transfer was set up", function()
    local path = dir .. "/s.bin"
    write(path, bytes(5000))
    local t = assert(m:add { url = srv.url .. "/store", method = "PUT", body_file = path })
    write(path, bytes(100)) -- truncated before any byte was read
    while #m:completed() == 0 do
      m:perform()
      m:poll(0.05)
    end
    local res, err = t:result()
    assert.is_nil(res)
    assert.equal("io", err.kind)
    assert.matches("shrank while sending %(100 of 5000 bytes read%)", err.message)
    assert.is_false(err.retryable)
    t:close()
  end)

  it("refuses bad requests at add, naming the problem", function()
    write(dir .. "/ok.bin", "x")
    local cases = {
      { { body_file = dir .. "/missing" }, "req.body_file: cannot read the file: No such file or directory" },
      { { body_file = dir }, "req.body_file is not a regular file" },
      { { body_file = "" }, "req.body_file is empty" },
      { { body_file = 42 }, "req.body_file must be a path" },
      { { body_file = dir .. "/ok.bin", body = "x" }, "req.body and req.body_file exclude each other" },
      { { body_file = dir .. "/ok.bin", mime = { { name = "a", data = "b" } } }, "req.mime and req.body_file exclude each other" },
      { { body_file = dir .. "/ok.bin", method = "GET" }, "req.body_file needs method PUT or POST" },
      { { body_file = dir .. "/ok.bin", method = "DELETE" }, "req.body_file needs method PUT or POST" },
      { { body_file = dir .. "/ok.bin", body_type = 5 }, "req.body_type must be a string" },
      { { body_file = dir .. "/ok.bin", body_type = "a/b\r\nX-Evil: 1" }, "req.body_type must be a content type without line breaks" },
      { { body_file = dir .. "/ok.bin", body_type = "a/b", headers = { "content-type: c/d" } },
        "req.body_type and a Content-Type header in req.headers exclude each other" },
    }
    for _, c in ipairs(cases) do
      local req = c[1]
      req.url = srv.url .. "/store"
      if req.method == nil then req.method = "PUT" end
      local t, err = m:add(req)
      assert.is_nil(t)
      assert.equal("invalid_argument", err.kind)
      assert.matches(c[2], err.message, 1, true)
    end
    assert.equal(0, m:count())
  end)

  it("closes the file once whatever the end: done, cancelled, closed, or its multi closed", function()
    local path = dir .. "/fd.bin"
    write(path, bytes(200000))
    assert.equal(0, fds_on(path))
    for _ = 1, 10 do
      assert(send { body_file = path })
      assert.equal(0, fds_on(path))
      local t = assert(m:add { url = srv.url .. "/store", method = "PUT", body_file = path })
      assert.equal(1, fds_on(path)) -- open while the transfer lives
      m:perform()
      assert.is_true(t:cancel())
      assert.equal(0, fds_on(path))
      t:close()
      t = assert(m:add { url = srv.url .. "/store", method = "PUT", body_file = path })
      t:close()
      assert.equal(0, fds_on(path))
    end
    local m2 = core.multi()
    assert(m2:add { url = srv.url .. "/store", method = "PUT", body_file = path })
    assert(m2:add { url = srv.url .. "/store", method = "PUT", body_file = path })
    assert.equal(2, fds_on(path))
    m2:close()
    assert.equal(0, fds_on(path))
  end)
end)
