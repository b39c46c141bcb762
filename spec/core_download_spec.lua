-- taskapi.core download mode: bodies stream into a part file and are renamed when complete;
-- resume with Range (nginx's static module answers 206), restart on a 200, dropped
-- connections, lying lengths, max_bytes, non-2xx, unwritable destinations, cancel/close/GC.
local core = require "taskapi.core"
local nginx = require "taskapi.fake.process"
local files = require "taskapi.util.files"
local sh, exists, size, write, read = files.sh, files.exists, files.size, files.write, files.read

local SIZE = 1048576 + 12345

local function sha(path) return sh("sha256sum '" .. path .. "'"):match("^(%x+)") end

local data_dir = sh("mktemp -d /tmp/taskapi-core-dl.XXXXXX")
local out_dir = data_dir .. "/out"
local src = data_dir .. "/files/data.bin"
os.execute("mkdir -p '" .. data_dir .. "/files' '" .. out_dir .. "'")
os.execute("head -c " .. SIZE .. " /dev/urandom > '" .. src .. "'")

local LOCATIONS = [[
location /files/ { alias ]] .. data_dir .. [[/files/; }
location = /norange {
  content_by_lua_block {
    local f = io.open("]] .. src .. [[", "rb")
    local s = f:read("*a")
    f:close()
    ngx.header["Content-Length"] = #s
    ngx.print(s)
  }
}
location = /half {
  content_by_lua_block {
    local f = io.open("]] .. src .. [[", "rb")
    local s = f:read("*a")
    f:close()
    ngx.header["Content-Length"] = #s
    ngx.print(s:sub(1, math.floor(#s / 2)))
    ngx.flush(true)
    ngx.exit(ngx.ERROR)
  }
}
location = /badtotal {
  content_by_lua_block {
    ngx.status = 206
    ngx.header["Content-Range"] = "bytes 0-99/5000"
    ngx.header["Content-Length"] = 100
    ngx.print(string.rep("a", 100))
  }
}
location = /lie {
  content_by_lua_block {
    ngx.header["Content-Length"] = 2000
    ngx.print(string.rep("l", 1000))
    if ngx.var.arg_close then
      ngx.flush(true)
      ngx.exit(ngx.ERROR)
    end
  }
}
location = /wrongrange {
  content_by_lua_block {
    ngx.status = 206
    ngx.header["Content-Range"] = "bytes 0-99/100"
    ngx.header["Content-Length"] = 100
    ngx.print(string.rep("a", 100))
  }
}
location = /chunked {
  content_by_lua_block {
    for _ = 1, 100 do ngx.print(string.rep("c", 1000)) ngx.flush(true) end
  }
}
location = /named {
  content_by_lua_block {
    ngx.header["Content-Type"] = "model/gltf-binary"
    ngx.header["Content-Disposition"] = 'attachment; filename="../../evil.glb"'
    ngx.print("glTF")
  }
}
location = /empty {
  content_by_lua_block { ngx.header["Content-Length"] = 0 }
}
location = /slow {
  content_by_lua_block {
    ngx.header["Content-Length"] = 200000
    ngx.print(string.rep("s", 100000))
    ngx.flush(true)
    ngx.sleep(10)
    ngx.print(string.rep("s", 100000))
  }
}
]]

local srv
local function url(p) return srv.url .. p end
local function clean() os.execute("rm -rf '" .. out_dir .. "'/* '" .. out_dir .. "'/.[!.]* 2>/dev/null") end

describe("core download mode", function()
  local m
  setup(function()
    srv = assert(nginx.start { locations = LOCATIONS, ttl = 300 })
    m = core.multi()
  end)
  teardown(function()
    if m then m:close() end
    if srv then srv.stop() end
    os.execute("rm -rf '" .. data_dir .. "'")
  end)
  before_each(clean)

  it("streams a file to disk, verified by sha256", function()
    local path = out_dir .. "/data.bin"
    local res = assert(m:request { url = url("/files/data.bin"), path = path, part = path .. ".part" })
    assert.are.equal(200, res.status)
    assert.are.equal(path, res.path)
    assert.are.equal(SIZE, res.bytes)
    assert.is_false(res.resumed)
    assert.is_nil(res.body)
    assert.are.equal(sha(src), sha(path))
    assert.is_false(exists(path .. ".part"))
  end)

  it("defaults the part name to path .. '.part' and reports the sanitized filename", function()
    local path = out_dir .. "/model"
    local res = assert(m:request { url = url("/named"), path = path })
    assert.are.equal("evil.glb", res.filename)
    assert.are.equal("model/gltf-binary", res.content_type)
    assert.are.equal("glTF", read(path))
    assert.is_false(exists(out_dir .. "/evil.glb"))
  end)

  it("creates an empty file for an empty 200 body", function()
    local path = out_dir .. "/empty"
    local res = assert(m:request { url = url("/empty"), path = path })
    assert.are.equal(0, res.bytes)
    assert.are.equal(0, size(path))
  end)

  it("resumes a part file with Range (206) and counts the offset in progress", function()
    local path, part = out_dir .. "/data.bin", out_dir .. "/data.bin.part"
    write(part, read(src, 300000))
    local t = assert(m:add { url = url("/files/data.bin"), path = path, part = part, resume = true })
    local done0 = t:progress()
    assert.are.equal(300000, done0)
    while m:perform() > 0 do m:poll(0.1) end
    local res = assert(t:result())
    assert.are.equal(206, res.status)
    assert.is_true(res.resumed)
    assert.are.equal(SIZE, res.bytes)
    assert.are.equal(sha(src), sha(path))
    local done, total = t:progress()
    assert.are.equal(SIZE, done)
    assert.are.equal(SIZE, total)
    assert.is_false(exists(part))
    assert.are.equal(t, m:completed()[1])
    t:close()
  end)

  it("restarts cleanly when the server ignores Range (200)", function()
    local path, part = out_dir .. "/data.bin", out_dir .. "/data.bin.part"
    write(part, string.rep("G", 5000))
    local res = assert(m:request { url = url("/norange"), path = path, part = part, resume = true })
    assert.are.equal(200, res.status)
    assert.is_false(res.resumed)
    assert.are.equal(SIZE, res.bytes)
    assert.are.equal(sha(src), sha(path))
  end)

  it("fails a dropped connection as retryable transport; keeps the part only with keep_partial", function()
    local path, part = out_dir .. "/data.bin", out_dir .. "/data.bin.part"
    local res, err = m:request { url = url("/half"), path = path, part = part }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_true(err.retryable)
    assert.is_false(exists(part))
    assert.is_false(exists(path))
    res, err = m:request { url = url("/half"), path = path, part = part, keep_partial = true }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.is_true(err.retryable)
    local kept = size(part)
    assert.is_true(kept > 0 and kept <= math.floor(SIZE / 2))
    assert.is_false(exists(path))
    -- the retry resumes from the kept part
    res = assert(m:request { url = url("/files/data.bin"), path = path, part = part, resume = true })
    assert.is_true(res.resumed)
    assert.are.equal(sha(src), sha(path))
  end)

  it("fails a Content-Range total that the body does not reach (length mismatch)", function()
    local path = out_dir .. "/x"
    local res, err = m:request { url = url("/badtotal"), path = path }
    assert.is_nil(res)
    assert.are.equal("download", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal("length mismatch: got 100 of 5000 bytes", err.message)
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
  end)

  it("fails a Content-Length that promises more than the body (retryable, no file)", function()
    local path = out_dir .. "/lie"
    -- the server closes the connection short of Content-Length: libcurl's partial file
    local res, err = m:request { url = url("/lie?close=1"), path = path }
    assert.is_nil(res)
    assert.are.equal("transport", err.kind)
    assert.are.equal(18, err.curl_code)
    assert.is_true(err.retryable)
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
    -- the server keeps the connection open short of Content-Length: a stall
    res, err = m:request { url = url("/lie"), path = path, low_speed_time = 1, low_speed_limit = 10 }
    assert.is_nil(res)
    assert.are.equal("timeout", err.kind)
    assert.is_true(err.retryable)
    assert.truthy(err.message:find("^stalled"))
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
  end)

  it("fails a resumed 206 whose Content-Range does not start at the offset", function()
    local path, part = out_dir .. "/x", out_dir .. "/x.part"
    write(part, string.rep("p", 50))
    local res, err = m:request { url = url("/wrongrange"), path = path, part = part, resume = true,
                                 keep_partial = true }
    assert.is_nil(res)
    assert.are.equal("download", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal(0, size(part)) -- truncated: the next attempt starts over
    assert.is_false(exists(path))
  end)

  it("fails a 416 on resume (part as large as the file) and removes the part", function()
    local path, part = out_dir .. "/data.bin", out_dir .. "/data.bin.part"
    write(part, read(src))
    local res, err = m:request { url = url("/files/data.bin"), path = path, part = part, resume = true }
    assert.is_nil(res)
    assert.are.equal("download", err.kind)
    assert.is_true(err.retryable)
    assert.are.equal(416, err.status)
    assert.is_false(exists(part))
    assert.is_false(exists(path))
  end)

  it("refuses at once when Content-Length exceeds max_bytes", function()
    local path = out_dir .. "/data.bin"
    local res, err = m:request { url = url("/files/data.bin"), path = path, max_bytes = 1000 }
    assert.is_nil(res)
    assert.are.equal("download", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("max_bytes (1000 bytes)", 1, true))
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
  end)

  it("aborts when the bytes written exceed max_bytes (no Content-Length)", function()
    local path = out_dir .. "/c"
    local res, err = m:request { url = url("/chunked"), path = path, max_bytes = 5000 }
    assert.is_nil(res)
    assert.are.equal("download", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("5000", 1, true))
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
    res = assert(m:request { url = url("/chunked"), path = path, max_bytes = 100000 })
    assert.are.equal(100000, res.bytes)
  end)

  it("writes nothing for a non-2xx status and returns the body", function()
    local path = out_dir .. "/missing"
    local res, err = m:request { url = url("/files/missing.bin"), path = path }
    assert.is_nil(err)
    assert.are.equal(404, res.status)
    assert.is_nil(res.path)
    assert.truthy(res.body:find("404", 1, true))
    assert.is_false(exists(path))
    assert.is_false(exists(path .. ".part"))
  end)

  it("reports an unwritable destination as io, leaving no file", function()
    local res, err = m:request { url = url("/files/data.bin"), path = out_dir .. "/no/such/dir/f" }
    assert.is_nil(res)
    assert.are.equal("io", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("No such file or directory", 1, true))
    write(out_dir .. "/afile", "x")
    res, err = m:request { url = url("/files/data.bin"), path = out_dir .. "/afile/f" }
    assert.is_nil(res)
    assert.are.equal("io", err.kind)
    assert.truthy(err.message:find("Not a directory", 1, true))
    if sh("id -u") ~= "0" then
      os.execute("mkdir -p '" .. out_dir .. "/ro' && chmod 555 '" .. out_dir .. "/ro'")
      res, err = m:request { url = url("/files/data.bin"), path = out_dir .. "/ro/f" }
      os.execute("chmod 755 '" .. out_dir .. "/ro'")
      assert.are.equal("io", err.kind)
      assert.is_false(exists(out_dir .. "/ro/f"))
    end
  end)

  it("refuses a part that is not a regular file (io, before any request) and never unlinks it", function()
    if not exists("/dev/full") then return pending("no /dev/full") end
    local path = out_dir .. "/full"
    local res, err = m:request { url = url("/files/data.bin"), path = path, part = "/dev/full" }
    assert.is_nil(res)
    assert.are.equal("io", err.kind)
    assert.is_false(err.retryable)
    assert.truthy(err.message:find("not a regular file", 1, true))
    assert.is_true(exists("/dev/full"))
    assert.is_false(exists(path))
  end)

  it("removes the part file on cancel and on close mid-transfer", function()
    local path, part = out_dir .. "/s", out_dir .. "/s.part"
    local t = assert(m:add { url = url("/slow"), path = path, part = part })
    assert.is_true(exists(part)) -- opened (and locked) when added
    local deadline = os.time() + 5
    while select(2, t:progress()) == 0 and os.time() < deadline do m:perform() m:poll(0.05) end
    local done, total = t:progress()
    assert.is_true(done >= 0)
    assert.are.equal(200000, total)
    assert.is_true(t:cancel())
    assert.is_false(exists(part))
    assert.are.equal("cancelled", select(2, t:result()).kind)
    t:close()
    local m2 = core.multi()
    t = assert(m2:add { url = url("/slow"), path = path, part = part, keep_partial = true })
    deadline = os.time() + 5
    while not exists(part) and os.time() < deadline do m2:perform() m2:poll(0.05) end
    assert.is_true(exists(part))
    t:close()
    assert.is_false(exists(part))
    assert.is_false(exists(path))
    m2:close()
  end)

  it("removes the part file when an unclosed multi is garbage collected", function()
    local part = out_dir .. "/g.part"
    do
      local m3 = core.multi()
      assert(m3:add { url = url("/slow"), path = out_dir .. "/g", part = part })
      local deadline = os.time() + 5
      while not exists(part) and os.time() < deadline do m3:perform() m3:poll(0.05) end
      assert.is_true(exists(part))
    end
    collectgarbage()
    collectgarbage()
    assert.is_false(exists(part))
  end)
end)
