-- examples/workflow_spec.lua: testing examples/workflow.lua with the fake provider, as a user
-- would test their own workflow: on the in-process fake (no sockets, virtual time: instant)
-- and on the nginx fake (real HTTP), including a task that fails and a server fault.
-- `make test` runs it (spec/examples_spec.lua loads it).
local taskapi = require "taskapi"
local fake = require "taskapi.fake"
local workflow = require "workflow"

local PNG = "\137PNG\r\n\26\n" .. string.rep("\0", 64)

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/taskapi-example.XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function rmdir(d)
  if d and d:match("^/tmp/taskapi%-example%.") then os.execute("rm -rf '" .. d .. "'") end
end

describe("the example workflow", function()
  local dir, image
  before_each(function()
    dir = tmpdir()
    image = dir .. "/photo.png"
    write(image, PNG)
  end)
  after_each(function() rmdir(dir) end)

  describe("on the in-process fake", function()
    local f, now
    local function client(provider, extra)
      local opts = { provider = provider, api_key = "test-key", base_url = f:base_url(provider),
        transport = f:transport(), min_interval = 0, backoff = 0.01 }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return assert(taskapi.new(opts))
    end
    before_each(function()
      now = 1000
      -- virtual time: the fake's clock only moves when the client sleeps
      f = fake.new { clock = function() return now end, sleep = function(s) now = now + s end }
    end)

    for _, provider in ipairs({ "tripo", "tripo-v2", "sellerpic" }) do
      it(provider .. ": uploads, creates, waits and downloads", function()
        local lines = {}
        local r = assert(workflow.run(client(provider), { image = image, dir = dir,
          extra_params = { fake = { queue = 5, run = 30 } }, log = function(l) lines[#lines + 1] = l end }))
        assert.is_true(r.task.ok)
        assert.is_true(#r.files >= 1)
        for _, file in ipairs(r.files) do
          local h = assert(io.open(file.path, "rb"))
          assert.equal(file.bytes, #h:read("*a"))
          h:close()
        end
        -- what reached the fake: the upload with the image's bytes, then the create
        local up, created
        for _, e in ipairs(f.log) do
          if e.upload then up = e end
          if e.method == "POST" and (e.path:find("/task", 1, true) or e.path:find("/generat", 1, true)) then created = e end
        end
        assert.equal(#PNG, up.upload.size)
        assert.is_table(created)
        assert.matches("^uploaded ", lines[1])
        assert.is_true(now >= 1035) -- it really waited for the queue and the run
      end)
    end

    it("reports a scripted failure of the task at the wait step", function()
      local r, err = workflow.run(client("tripo"), { image = image, dir = dir,
        extra_params = { fake = { run = 5, final = "failed" } } })
      assert.is_nil(r)
      assert.equal("wait", err.step)
      assert.equal("task_failed", err.kind)
      assert.equal("failed", err.task.state)
    end)

    it("survives transient server errors (retried) and reports an upload of a missing file", function()
      local r = assert(workflow.run(client("tripo", { retries = 3 }), { image = image, dir = dir,
        extra_params = { fake = { run = 2, faults = { server_errors = 2 } } } }))
      assert.is_true(r.task.ok)
      local _, err = workflow.run(client("tripo"), { image = dir .. "/none.png", dir = dir })
      assert.equal("upload", err.step)
      assert.equal("invalid_argument", err.kind)
    end)

    it("gives up when the task outlasts the timeout", function()
      local _, err = workflow.run(client("tripo"), { image = image, dir = dir, timeout = 10,
        extra_params = { fake = { queue = 60, run = 60 } } })
      assert.equal("wait", err.step)
      assert.equal("timeout", err.kind)
    end)
  end)

  describe("on the nginx fake", function()
    local server
    setup(function() server = assert(fake.start { ttl = 120 }) end)
    teardown(function() if server then server.stop() end end)

    local function client(provider)
      return assert(taskapi.new { provider = provider, api_key = "test-key", min_interval = 0.1,
        base_url = server.url .. ({ tripo = "/tripo/v3", ["tripo-v2"] = "/tripo/v2/openapi", sellerpic = "/sellerpic" })[provider], backoff = 0.05 })
    end

    for _, provider in ipairs({ "tripo", "tripo-v2", "sellerpic" }) do
      it(provider .. ": the whole workflow over HTTP", function()
        local c = client(provider)
        local r = assert(workflow.run(c, { image = image, dir = dir, interval = 0.2,
          extra_params = { fake = { queue = 0, run = 1 } } }))
        assert.is_true(r.task.ok)
        for _, file in ipairs(r.files) do
          local h = assert(io.open(file.path, "rb"))
          assert.equal(file.bytes, h:seek("end"))
          h:close()
        end
        c:close()
      end)
    end

    it("a download link that expired is renewed; a failed SellerPic task is reported", function()
      local c = client("tripo")
      local r = assert(workflow.run(c, { image = image, dir = dir, interval = 0.2,
        extra_params = { fake = { run = 0, faults = { expired_links = 1 } } } }))
      assert.is_true(r.task.ok)
      c:close()
      local s = client("sellerpic")
      local _, err = workflow.run(s, { image = image, dir = dir, interval = 0.2,
        extra_params = { fake = { run = 0, final = "failed" } } })
      assert.equal("wait", err.step)
      assert.equal("task_failed", err.kind)
      s:close()
    end)

    it("runs as a script, configured by the environment", function()
      local lua = (jit and "luajit" or "lua5.4")
      local cmd = "cd examples && TASKAPI_PROVIDER=tripo TASKAPI_API_KEY=test-key TASKAPI_BASE_URL=" ..
        server.url .. "/tripo/v3 LUA_PATH='../lua/?.lua;../lua/?/init.lua;;' LUA_CPATH='../build/" ..
        lua .. "/?.so;;' " .. lua .. " workflow.lua '" .. image .. "' '" .. dir .. "' 2>&1; echo \"exit=$?\""
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      assert.matches("uploaded ", out)
      assert.matches("created task ", out)
      assert.matches("saved ", out)
      assert.matches("exit=0", out)
    end)
  end)
end)
