-- client:upload's presigned path (Tripo V3): a file over the definition's multipart limit is
-- presigned (POST /files/presign {"format"}) and PUT as raw bytes to the upload_url, a storage
-- host, without the API key. Real HTTP against the nginx fake (its storage route records what
-- arrived and whether an Authorization header came; /_fake/storage_faults scripts faults).
local fe = require "support.fake_env"
local cjson = require "cjson"
local taskapi = require "taskapi"

local PNG = "\137PNG\r\n\26\n\0\0\0\rIHDR"

-- A copy of the tripo definition with a tiny multipart limit, so small files take the
-- presigned path.
local function tiny_def(limit)
  local def = {}
  for k, v in pairs(require "taskapi.providers.tripo") do def[k] = v end
  def.upload_max_bytes = limit or 1000
  return def
end

local adler32 = require("taskapi.fake.model").adler32

local function bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char((i * 31 + math.floor(i / 251)) % 256) end
  return table.concat(t)
end

describe("client:upload, presigned path, on the nginx fake", function()
  local env, dir, base

  local function faults(spec)
    local out = fe.sh("curl -s -X POST -H 'Content-Type: application/json' --data-binary " ..
      fe.q(cjson.encode(spec)) .. " " .. fe.q(env.url .. "/_fake/storage_faults"))
    assert(out:find('"put"', 1, true), "the fake refused the storage faults: " .. out)
  end

  local function client(overrides)
    local o = { provider = tiny_def(), base_url = base }
    for k, v in pairs(overrides or {}) do o[k] = v end
    return env:client("tripo", o)
  end

  local function file(name, content)
    local p = dir .. "/" .. name
    fe.write(p, content)
    return p
  end

  -- the presign calls and the storage PUTs of a log
  local function steps(log)
    local presigns, puts = {}, {}
    for _, e in ipairs(log) do
      if e.path:find("/files/presign", 1, true) then presigns[#presigns + 1] = e end
      if e.path:sub(1, 17) == "/storage/uploads/" then puts[#puts + 1] = e end
    end
    return presigns, puts
  end

  -- no string field of err (nor its text) shows the key or a signature
  local function clean(err)
    fe.check_err(err)
    for k, v in pairs(err) do
      if type(v) == "string" then
        assert(not v:find("fakesig", 1, true), "err." .. k .. " shows the signed URL's query: " .. v)
        assert(not v:find(fe.KEY, 1, true), "err." .. k .. " shows the key")
      end
    end
    return err
  end

  setup(function()
    env = fe.start()
    base = env.base.tripo
    dir = fe.tmpdir()
  end)
  before_each(function() -- a fault a failed test left unused must not reach the next one
    local out = fe.sh("curl -s -X POST " .. fe.q(env.url .. "/_fake/reset"))
    assert(out:find("ok", 1, true), "the fake did not reset: " .. out)
  end)
  teardown(function()
    if env then env:stop() end
    if dir then fe.rmdir(dir) end
  end)

  it("presigns a file over the multipart limit and PUTs its exact bytes without the key", function()
    local c = client()
    local content = PNG .. bytes(5000)
    local path = file("over.png", content)
    local mark = env:mark()
    local token, err = c:upload(path)
    assert.is_nil(err)
    assert.matches("^file_", token)
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns)
    assert.equal("POST", presigns[1].method)
    assert.is_true(presigns[1].authorization)
    assert.equal(1, #puts)
    local put = puts[1]
    assert.equal("PUT", put.method)
    assert.is_false(put.authorization) -- no Authorization header reached the storage host
    assert.is_nil(put.key)
    assert.equal(#content, put.upload.size)
    assert.equal(adler32(content), put.upload.adler32)
    assert.equal("image/png", put.upload.content_type)
    assert.equal(tostring(#content), put.headers["content-length"])
    assert.are_not.equal("application/json", put.headers.accept) -- no API headers
    -- the token is the presigned one, and the fake now takes it in a create
    assert.matches(token, put.path, 1, true)
    local id, cerr = c:create { type = "image_to_model", model_version = "v3.1-20260211",
      file = { type = "png", file_token = token } }
    assert.is_nil(cerr)
    assert.is_string(id)
  end)

  it("keeps a file at or under the limit on the multipart path", function()
    local c = client()
    local mark = env:mark()
    assert.matches("^file_", assert(c:upload(file("small.png", PNG .. bytes(1000 - #PNG)))))
    local log = env:log(mark)
    local presigns, puts = steps(log)
    assert.equal(0, #presigns)
    assert.equal(0, #puts)
    assert.equal(1, #fe.matching(log, "/tripo/v3/files"))
    assert.equal(1000, log[1].upload.size)
  end)

  it("sends the format the file's type names (a model by its name)", function()
    local c = client()
    local mark = env:mark()
    local content = "solid x\n" .. bytes(3000)
    assert.matches("^file_", assert(c:upload(file("part.stl", content))))
    local _, puts = steps(env:log(mark))
    assert.matches("%.stl$", puts[1].path)
    assert.equal("model/stl", puts[1].upload.content_type)
    assert.equal(adler32(content), puts[1].upload.adler32)
  end)

  it("renews an expired presigned URL once (the storage host answers 403)", function()
    local c = client()
    local content = PNG .. bytes(2000)
    faults { put = { 403 } }
    local mark = env:mark()
    local token = assert(c:upload(file("renew.png", content)))
    local presigns, puts = steps(env:log(mark))
    assert.equal(2, #presigns)
    assert.equal(2, #puts)
    assert.are_not.equal(puts[1].path, puts[2].path) -- the second PUT went to the new URL
    assert.matches(token, puts[2].path, 1, true)
    assert.equal(#content, puts[2].upload.size)
  end)

  it("gives up after one renewal when the new URL is refused too, naming the PUT step", function()
    local c = client()
    faults { put = { 403, 403 }, sign = 2 }
    local mark = env:mark()
    local token, err = c:upload(file("expired.png", PNG .. bytes(2000)))
    assert.is_nil(token)
    clean(err)
    assert.equal("auth", err.kind)
    assert.equal(403, err.status)
    assert.equal("put", err.step)
    assert.matches("^tripo: upload, PUT to the storage host: ", err.message)
    assert.matches("127%.0%.0%.1:%d+", err.message)
    assert.matches("again after a new presign", err.message)
    local presigns, puts = steps(env:log(mark))
    assert.equal(2, #presigns)
    assert.equal(2, #puts)
  end)

  it("retries a storage host answering 500, then succeeds", function()
    local c = client { retries = 3 }
    local content = PNG .. bytes(4000)
    faults { put = { 500, 503 } }
    local mark = env:mark()
    assert.matches("^file_", assert(c:upload(file("flaky.png", content))))
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns) -- a 5xx is retried on the same URL, not presigned again
    assert.equal(3, #puts)
    assert.equal(puts[1].path, puts[3].path)
    assert.equal(#content, puts[3].upload.size)
    assert.equal(adler32(content), puts[3].upload.adler32)
  end)

  it("ends with a server error when the storage host keeps failing, the signature hidden", function()
    local c = client { retries = 2 }
    faults { put = { 500, 500, 500 }, sign = 1 }
    local mark = env:mark()
    local token, err = c:upload(file("down5.png", PNG .. bytes(2000)))
    assert.is_nil(token)
    clean(err)
    assert.equal("server", err.kind)
    assert.equal(500, err.status)
    assert.equal("put", err.step)
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns)
    assert.equal(3, #puts) -- 1 + 2 retries
    assert.matches("fakesig", puts[1].query and cjson.encode(puts[1].query) or "", 1, true)
  end)

  it("ends with a transport error when the storage host is down, after its retries", function()
    local c = client { retries = 1 }
    faults { down = 1, sign = 1 }
    local mark = env:mark()
    local token, err = c:upload(file("down.png", PNG .. bytes(2000)))
    assert.is_nil(token)
    clean(err)
    assert.equal("transport", err.kind)
    assert.equal("put", err.step)
    assert.matches("^tripo: upload, PUT to the storage host: ", err.message)
    assert.matches("127.0.0.1:1", err.message, 1, true)
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns)
    assert.equal(0, #puts)
  end)

  it("does not retry a presign answering 4xx, and names the presign step", function()
    local c = client { retries = 3 }
    faults { presign = { 400 } }
    local mark = env:mark()
    local token, err = c:upload(file("p400.png", PNG .. bytes(2000)))
    assert.is_nil(token)
    clean(err)
    assert.equal("invalid_argument", err.kind)
    assert.equal(400, err.status)
    assert.equal(1004, err.code)
    assert.equal("presign", err.step)
    assert.matches("^tripo: upload, presign: ", err.message)
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns)
    assert.equal(0, #puts)
  end)

  it("retries a presign answering 5xx or 429 as an API call", function()
    local c = client { retries = 3 }
    faults { presign = { 500, 429 } }
    local mark = env:mark()
    assert.matches("^file_", assert(c:upload(file("p500.png", PNG .. bytes(2000)))))
    local presigns, puts = steps(env:log(mark))
    assert.equal(3, #presigns)
    assert.equal(1, #puts)
  end)

  it("a wrong key fails at the presign step as auth, the key not shown, nothing PUT", function()
    local c = client { api_key = "wrong-key", retries = 0 }
    local mark = env:mark()
    local token, err = c:upload(file("key.png", PNG .. bytes(2000)))
    assert.is_nil(token)
    clean(err)
    assert.equal("auth", err.kind)
    assert.equal(401, err.status)
    assert.equal("presign", err.step)
    assert.is_nil(tostring(err):find("wrong-key", 1, true))
    local _, puts = steps(env:log(mark))
    assert.equal(0, #puts)
  end)

  it("works inside taskapi.run (the scheduler's multi handle)", function()
    local c = client()
    local content = PNG .. bytes(3000)
    local p1, p2 = file("run1.png", content), file("run2.png", content .. "x")
    local mark = env:mark()
    local res = taskapi.run(function()
      return taskapi.gather { function() return c:upload(p1) end, function() return c:upload(p2) end }
    end)
    assert.matches("^file_", res[1])
    assert.matches("^file_", res[2])
    local _, puts = steps(env:log(mark))
    assert.equal(2, #puts)
    local sizes = { puts[1].upload.size, puts[2].upload.size }
    table.sort(sizes)
    assert.same({ #content, #content + 1 }, sizes)
  end)

  it("the default definition sends a 201 MB file (sparse) the presigned way #big", function()
    local c = env:client("tripo", { base_url = base, stall_time = 30 })
    local path = dir .. "/big.glb"
    fe.write(path, "glTF\2\0\0\0")
    local ok = os.execute("truncate -s 201M " .. fe.q(path))
    assert.is_true(ok == true or ok == 0)
    local mark = env:mark()
    local t0 = os.time()
    local token, err = c:upload(path)
    local took = os.time() - t0
    assert.is_nil(err)
    assert.matches("^file_", token)
    local presigns, puts = steps(env:log(mark))
    assert.equal(1, #presigns)
    assert.equal(1, #puts)
    assert.equal(201 * 1024 * 1024, puts[1].upload.size)
    assert.is_false(puts[1].authorization)
    assert.equal("model/gltf-binary", puts[1].upload.content_type)
    print(string.format("\n201 MB presigned upload: about %d s", took))
  end)
end)

-- The in-process fake (a unit test of the Lua layer, no sockets): its transport takes the C
-- module's req.body_file shape, so a workflow's own tests can use the presigned path too.
describe("client:upload, presigned path, on the in-process fake", function()
  it("presigns and PUTs the bytes, without the key", function()
    local fake = require "taskapi.fake"
    local f = fake.new()
    local c = assert(taskapi.new { provider = tiny_def(), api_key = fe.KEY, base_url = f:base_url("tripo"),
      transport = f:transport(), min_interval = 0 })
    local dir = fe.tmpdir()
    local content = PNG .. bytes(3000)
    fe.write(dir .. "/x.png", content)
    local token, err = c:upload(dir .. "/x.png")
    fe.rmdir(dir)
    assert.is_nil(err)
    assert.matches("^file_", token)
    local e = f.log[#f.log]
    assert.equal("PUT", e.method)
    assert.is_false(e.authorization)
    assert.equal(#content, e.upload.size)
    assert.equal(adler32(content), e.upload.adler32)
    assert.equal("image/png", e.upload.content_type)
  end)
end)
