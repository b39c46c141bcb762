-- client:create, client:upload and client:balance against the nginx-hosted fake, both
-- providers: what reaches the fake (a real multipart body with the file's bytes, JSON bodies
-- with exact integers), what comes back, and every bad input refused before any request.
local fe = require "support.fake_env"
local model = require "taskapi.fake.model"
local taskapi = require "taskapi"

local PNG = "\137PNG\r\n\26\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\8\6\0\0\0\31\21\196\137"
local JPG = "\255\216\255\224\0\16JFIF\0"
local WEBP = "RIFF\36\0\0\0WEBPVP8 "

describe("create, upload and balance on the nginx fake", function()
  local env, dir
  setup(function()
    env = fe.start()
    dir = fe.tmpdir()
  end)
  teardown(function()
    if env then env:stop() end
    fe.rmdir(dir)
  end)

  local function file(name, content)
    local p = dir .. "/" .. name
    fe.write(p, content)
    return p
  end

  -- asserts that the call made no request at all
  local function no_request(fn)
    local mark = env:mark()
    local v, err = fn()
    assert.is_nil(v)
    assert.same({}, env:log(mark))
    return err
  end

  for _, provider in ipairs(fe.PROVIDERS) do
    describe(provider, function()
      local c
      before_each(function() c = env:client(provider, { retries = 0 }) end)

      it("uploads an image as a real multipart body and returns the provider's reference", function()
        local bytes = PNG .. string.rep("\0\1\2\255", 50000)
        local path = file("cat.png", bytes)
        local mark = env:mark()
        local ref, err = c:upload(path)
        assert.is_nil(err)
        assert.is_string(ref)
        if provider == "tripo" then
          assert.matches("^file_[%w%-]+$", ref)
        elseif provider == "tripo-v2" then
          assert.matches("^[%w%-]+$", ref)
        else
          assert.matches("^UPLOAD/%d+/cat%.png$", ref)
        end
        local log = env:log(mark)
        assert.equal(1, #log)
        local e = log[1]
        assert.equal("POST", e.method)
        assert.equal(({ tripo = "/tripo/v3/files", ["tripo-v2"] = "/tripo/v2/openapi/upload",
          sellerpic = "/sellerpic/v1/api/upload" })[provider], e.path)
        assert.matches("^multipart/form%-data; boundary=", e.headers["content-type"])
        assert.is_true(e.authorization)
        assert.same({ filename = "cat.png", content_type = "image/png", size = #bytes, adler32 = model.adler32(bytes) },
          e.upload)
      end)

      it("takes {path=, type=, filename=} and finds the type by magic bytes when the name has none", function()
        local mark = env:mark()
        assert.is_string(c:upload({ path = file("photo", JPG .. "data"), filename = "shot.jpg" }))
        assert.is_string(c:upload(file("noext", WEBP .. "data")))
        assert.is_string(c:upload({ path = file("x.jpeg", JPG), type = "image/jpeg" }))
        local log = env:log(mark)
        assert.equal(3, #log)
        assert.equal("shot.jpg", log[1].upload.filename)
        assert.equal("image/jpeg", log[1].upload.content_type)
        assert.equal(#JPG + 4, log[1].upload.size)
        assert.equal("noext.webp", log[2].upload.filename)
        assert.equal("image/webp", log[2].upload.content_type)
        assert.equal("image/jpeg", log[3].upload.content_type)
      end)

      it("an upload with a wrong key is an auth error that does not show the key", function()
        local bad = env:client(provider, { api_key = "wrong-key", retries = 0 })
        local ref, err = bad:upload(file("k.png", PNG))
        assert.is_nil(ref)
        fe.check_err(err, "auth")
        assert.equal(401, err.status)
      end)

      it("an upload to a server that is down is a transport error after its retries", function()
        local rc = env:client(provider, { retries = 2 })
        local down = env:client(provider, { retries = 1, base_url = "http://127.0.0.1:9/" .. provider })
        local ref, err = down:upload(file("r.png", PNG))
        assert.is_nil(ref)
        fe.check_err(err, "transport")
        assert.is_string(rc:upload(file("r.png", PNG)))
      end)

      local bad_inputs = {
        { "no argument", function() return nil end, "expects a file path" },
        { "a number", function() return 42 end, "expects a file path" },
        { "an unknown option", function() return { path = "x.png", size = 1 } end, "unknown option 'size'" },
        { "an empty path", function() return "" end, "'path' %(a file path%) is required" },
        { "a missing file", function() return dir .. "/missing.png" end, "cannot open '.-missing%.png': No such file" },
        { "a directory", function() return dir end, "is a directory, not a file" },
        { "an empty file", function() return file("empty.png", "") end, "is empty" },
        { "a text file", function() return file("notes.txt", "hello") end, "is not a file " .. provider:gsub("%-", "%%-") .. " takes %(" },
        { "a bad content type", function() return { path = file("t.png", PNG), type = "png" } end, "'type' must be a content type" },
        { "a filename with a slash", function() return { path = file("f.png", PNG), filename = "../x.png" } end, "'filename' must be a base name" },
      }
      for _, case in ipairs(bad_inputs) do
        it("refuses " .. case[1] .. " before any request", function()
          local arg = case[2]()
          local err = no_request(function() return c:upload(arg) end)
          fe.check_err(err, "invalid_argument")
          assert.matches(case[3], err.message)
        end)
      end

      -- (tripo, V3: a file over 200 MB goes the presigned way, spec/upload_presign_spec.lua)
      if provider ~= "tripo" then it("refuses an oversized file before any request, naming the limit", function()
        local limit = ({ ["tripo-v2"] = 20, sellerpic = 40 })[provider]
        local path = dir .. "/huge-" .. provider .. ".png"
        fe.write(path, PNG)
        -- a sparse file one byte over the limit (nothing is read but the first bytes)
        local ok = os.execute("truncate -s " .. (limit * 1024 * 1024 + 1) .. " " .. fe.q(path))
        assert.is_true(ok == true or ok == 0)
        local err = no_request(function() return c:upload(path) end)
        fe.check_err(err, "invalid_argument")
        assert.matches("takes at most " .. limit .. " MB", err.message)
        assert.truthy(err.message:find(provider, 1, true))
      end) end

      it("creates a task and returns its id as a string; the body keeps integers exact", function()
        local mark = env:mark()
        local params = { type = fe.is_tripo(provider) and "text_to_model" or "instructEdit", prompt = "a cat",
          seed = 9007199254740993, count = 3, fake = { queue = 0, run = 1 } }
        if provider == "tripo" then params.model_version = "v3.1-20260211" end
        if not math.type then params.seed = 4503599627370497 end -- exact in a double
        local id, err = c:create(params)
        assert.is_nil(err)
        assert.is_string(id)
        if provider == "sellerpic" then assert.matches("^%d+$", id) end
        local log = env:log(mark)
        assert.equal(1, #log)
        assert.equal("POST", log[1].method)
        assert.equal(({ tripo = "/tripo/v3/generation/text-to-model", ["tripo-v2"] = "/tripo/v2/openapi/task",
          sellerpic = "/sellerpic/v1/api/generate/instructEdit" })[provider], log[1].path)
        local info = env:task_info(id)
        assert.equal(fe.MODEL_PROVIDER[provider] or provider, info.provider)
        assert.equal(fe.is_tripo(provider) and "text_to_model" or "instructEdit", info.spec.type)
        local task = assert(c:wait(id, { timeout = 20, interval = 0.2 }))
        assert.is_true(task.ok)
      end)

      -- a type this provider takes
      local T = ({ tripo = "text_to_image", ["tripo-v2"] = "text_to_model", sellerpic = "instructEdit" })[provider]
      local bad_create = {
        { "no table", function() return "text" end, "expects a table" },
        { "a missing type", function() return { prompt = "x" } end, "parameter 'type' %(the task type%) is required" },
        { "an empty type", function() return { type = "" } end, "must be a non%-empty string, got an empty string" },
        { "a numeric type", function() return { type = 5 } end, "got number" },
        { "a type with a slash", function() return { type = "a/b" } end,
          provider == "tripo" and "unknown tripo task type 'a/b'" or "characters other than" },
        { "a type with a space", function() return { type = "a b" } end, "characters other than" },
        { "an unknown type", function() return { type = "noSuchType" } end,
          "unknown " .. provider:gsub("%-", "%%-") .. " task type 'noSuchType' %(known: .*any_type = true" },
        { "a numeric key", function() return { type = T, "positional" } end, "parameter names must be strings" },
        { "a NaN parameter", function() return { type = T, v = 0 / 0 } end, "request body" },
      }
      for _, case in ipairs(bad_create) do
        it("create refuses " .. case[1] .. " before any request", function()
          local arg = case[2]()
          local err = no_request(function() return c:create(arg) end)
          fe.check_err(err, "invalid_argument")
          assert.matches(case[3], err.message)
        end)
      end

      it("create with a wrong key is an auth error", function()
        local bad = env:client(provider, { api_key = "wrong-key", retries = 0 })
        local id, err = bad:create({ type = fe.is_tripo(provider) and "text_to_model" or "instructEdit",
          model_version = "v3.1-20260211" })
        assert.is_nil(id)
        fe.check_err(err, "auth")
      end)

      it("reads the balance with integer fields", function()
        local b = assert(c:balance())
        if provider == "tripo" then
          assert.is_number(b.balance) -- V3: decimals
          assert.is_number(b.frozen)
        elseif provider == "tripo-v2" then
          assert.is_true(fe.is_integer(b.balance))
          assert.is_true(fe.is_integer(b.frozen))
        else
          assert.is_true(fe.is_integer(b.remaining))
          assert.is_true(fe.is_integer(b.total))
          assert.equal(b.total, b.remaining + b.usage)
        end
      end)
    end)
  end

  it("any_type sends a type newer than the library as it is; the fake answers what the API would", function()
    local mark = env:mark()
    local sp = env:client("sellerpic", { retries = 0 })
    local id, err = sp:create({ type = "brandNewType", prompt = "x" }, { any_type = true })
    assert.is_nil(id)
    fe.check_err(err, "not_found") -- the fake knows only the API's own types
    local v3 = env:client("tripo", { retries = 0 })
    id, err = v3:create({ type = "generation/new-thing", prompt = "x" }, { any_type = true })
    assert.is_nil(id)
    fe.check_err(err, "not_found")
    local log = env:log(mark)
    assert.equal(2, #log)
    assert.equal("/sellerpic/v1/api/generate/brandNewType", log[1].path)
    assert.equal("/tripo/v3/generation/new-thing", log[2].path)
    -- a known type through any_type is the same request as without it
    assert.is_string(sp:create({ type = "instructEdit", fake = { queue = 0, run = 0 } }, { any_type = true }))
    local _, e1 = sp:create({ type = "instructEdit" }, { anytype = true })
    assert.matches("unknown option 'anytype'", e1.message)
    local _, e2 = v3:create({ type = "newthing" }, { any_type = true })
    assert.matches("with the endpoint as the type, e%.g%. 'generation/new%-thing'", e2.message)
  end)

  it("a provider definition without upload, create or balance says so", function()
    local def = { name = "mini", base_url = env.url, status_path = "/x/{id}", read_task = function() return {} end,
      envelope = { code = "code", data = "data" } }
    local c = assert(taskapi.new { provider = def, api_key = "test-key" })
    local _, e1 = c:upload(file("m.png", PNG))
    assert.matches("mini: this provider has no upload", e1.message)
    local _, e2 = c:create({ type = "x" })
    assert.matches("no create", e2.message)
    local _, e3 = c:balance()
    assert.matches("no balance", e3.message)
    c:close()
  end)
end)

describe("upload on the in-process fake", function()
  it("sends the parts through the fake transport", function()
    local fake = require "taskapi.fake"
    local f = fake.new()
    local d = fe.tmpdir()
    fe.write(d .. "/a.png", PNG .. "xyz")
    for _, provider in ipairs(fe.PROVIDERS) do
      local c = assert(taskapi.new { provider = provider, api_key = "test-key", base_url = f:base_url(provider),
        transport = f:transport() })
      local ref = assert(c:upload(d .. "/a.png"))
      assert.is_string(ref)
      local e = f.log[#f.log]
      assert.equal(#PNG + 3, e.upload.size)
      assert.equal(model.adler32(PNG .. "xyz"), e.upload.adler32)
    end
    fe.rmdir(d)
  end)
end)
