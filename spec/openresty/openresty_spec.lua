-- OpenResty: nginx (one worker) runs the example of examples/openresty/ (its nginx.conf, with
-- only the port and the log/pid paths changed: openresty/example_app.lua) against the nginx fake provider: the whole
-- workflow completes with every file downloaded, and the worker keeps answering while 100
-- status reads wait on a slow provider.
local nginx = require "taskapi.fake.process"
local fe = require "support.fake_env"
local model = require "taskapi.fake.model"
local cjson = require "cjson"

local function curl(args)
  local p = io.popen("curl -s -m 20 " .. args .. " 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out
end

describe("OpenResty example #openresty", function()
  local env, app, out

  setup(function()
    env = fe.start()
    out = fe.tmpdir()
    os.execute("chmod 0777 " .. fe.q(out))
    app = require("openresty.example_app").start(env, out)
  end)

  teardown(function()
    if app then app.stop() end
    if env then env:stop() end
    if out then fe.rmdir(out) end
  end)

  -- started as root, nginx's worker is nobody: from a checkout that user cannot read, every
  -- request says so (not "module 'app' not found")
  it("answers every request with what to do when its worker cannot read the example", function()
    if fe.sh("id -u"):match("^0") == nil then
      return pending("only as root: the worker runs as nobody")
    end
    local private = fe.tmpdir() -- mode 0700, root's
    os.execute("chmod 0700 " .. fe.q(private) .. " && cp examples/openresty/*.lua " .. fe.q(private))
    local locked = require("openresty.example_app").start(env, out, nil, { as_nobody = true, app_dir = private })
    local page = curl("-i " .. locked.url .. "/jobs")
    locked.stop()
    fe.rmdir(private)
    assert.truthy(page:find("^HTTP/1%.1 500"), page)
    assert.truthy(page:find("this nginx worker cannot read", 1, true), page)
    assert.truthy(page:find("user root;", 1, true), page)
  end)

  it("lists no jobs as an empty JSON array", function()
    assert.equal('{"jobs":[]}', (curl(app.url .. "/jobs"):gsub("%s+$", "")))
  end)

  it("reports a result it could not save as a failure of the job, with the error", function()
    local id = env:add { provider = "tripo", queue = 0, run = 0, expired_links = 5, outputs = { "model" } }
    local created = cjson.decode(curl("-d " .. fe.q(cjson.encode { provider = "tripo", ids = { id } }) .. " " ..
      app.url .. "/jobs"))
    local entry
    for _ = 1, 100 do
      entry = cjson.decode(curl(app.url .. "/jobs/" .. created.job)).tasks[id]
      if entry.download_failed then break end
      os.execute("sleep 0.1")
    end
    assert.equal("succeeded", entry.state) -- the provider's state stays what it is
    assert.is_true(entry.download_failed)
    assert.matches("^download failed: ", entry.error)
    assert.equal(0, #entry.files) -- no file
    local listed = cjson.decode(curl(app.url .. "/jobs")).jobs[1]
    assert.matches("1 download%(s%) failed", listed.state)
    assert.is_true(curl(app.url .. "/jobs"):find('"files":[]', 1, true) ~= nil)
  end)

  it("runs the workflow: takes task ids, waits for all, downloads each result", function()
    local ids = {}
    for i = 1, 4 do ids[i] = env:add { provider = "tripo", queue = 0.2 * i, run = 0.5 } end
    local failing = env:add { provider = "tripo", queue = 0, run = 0.3, final = "failed" }
    ids[#ids + 1] = failing
    local created = cjson.decode(curl("-d " .. fe.q(cjson.encode { provider = "tripo", ids = ids }) .. " " .. app.url .. "/jobs"))
    assert.truthy(created.job, "no job: " .. tostring(created.error))
    local job
    for _ = 1, 100 do
      job = cjson.decode(curl(app.url .. "/jobs/" .. created.job))
      if job.state == "done" then
        local all = true
        for _, t in pairs(job.tasks) do if t.state == "succeeded" and #t.files < 2 then all = false end end
        if all then break end
      end
      os.execute("sleep 0.2")
    end
    assert.are.equal("done", job.state)
    assert.are.equal("failed", job.tasks[failing].state)
    for i = 1, 4 do
      local t = job.tasks[ids[i]]
      assert.are.equal("succeeded", t.state)
      assert.are.equal(2, #t.files)
      for _, f in ipairs(t.files) do
        -- no file_size: each file is the fake's media file of its type (its record says which)
        local rec = cjson.decode(curl(env.url .. "/_fake/tasks/" .. ids[i] .. "/files"))[f.name]
        assert.are.equal(f.bytes, rec.size)
        assert.are.equal(fe.sha256_string(model.record_bytes(rec)), fe.sha256(f.path))
      end
    end
    assert.are.equal(8, #fe.ls(out))
  end)

  it("starts tasks on the fake and finishes them too", function()
    local created = cjson.decode(curl("-d " .. fe.q(cjson.encode {
      provider = "sellerpic", create = 2,
      params = { type = "instructEdit", fake = { queue = 0.1, run = 0.3, results = 2 } } }) .. " " .. app.url .. "/jobs"))
    assert.are.equal(2, #created.ids)
    local job
    for _ = 1, 100 do
      job = cjson.decode(curl(app.url .. "/jobs/" .. created.job))
      local files = 0
      for _, t in pairs(job.tasks) do files = files + #t.files end
      if job.state == "done" and files == 4 then break end
      os.execute("sleep 0.2")
    end
    assert.are.equal("done", job.state)
    for _, id in ipairs(created.ids) do assert.are.equal(2, #job.tasks[id].files) end
  end)

  it("answers another request in under 100 ms while 100 polls wait on a slow provider", function()
    local slow = env:add { provider = "tripo", queue = 0, run = 60, faults = { delay = 1 } }
    local load = io.popen("curl -s -m 30 " .. fe.q(app.url .. "/poll?n=100&id=" .. slow) .. " 2>/dev/null")
    os.execute("sleep 0.3")
    local times = {}
    for i = 1, 3 do
      times[i] = tonumber(curl("-o /dev/null -w '%{time_total}' " .. app.url .. "/ping"))
    end
    local result = cjson.decode(load:read("*a"))
    load:close()
    table.sort(times)
    io.stderr:write(string.format("\nopenresty: 100 polls in flight took %.2f s; /ping answered in %.1f ms (median of 3)\n",
      result.seconds, times[2] * 1000))
    assert.are.equal(100, result.ok, tostring(result.first_error))
    -- the polls really were in flight together: ~1 s, not 100 s
    assert.is_true(result.seconds >= 0.9 and result.seconds < 5, "polls took " .. result.seconds)
    assert.is_true(times[2] < 0.1, "ping took " .. times[2] .. " s")
  end)

  it("says clearly when a phase cannot yield", function()
    local other = assert(nginx.start {
      ttl = 120,
      locations = [[
        location = /phase {
          content_by_lua_block { ngx.say("body") }
          header_filter_by_lua_block {
            local c = require("taskapi").new { provider = "tripo", api_key = "test-key", base_url = "]] ..
              env.base.tripo .. [[" }
            local task, err = c:status("abc")
            ngx.header["X-Taskapi"] = (task and "task" or err.kind) .. ": " .. tostring(err)
          }
        }]],
    })
    local headers = curl("-i " .. other.url .. "/phase")
    other.stop()
    local line = headers:match("[Xx]%-[Tt]askapi: ([^\r\n]+)")
    assert.truthy(line, headers)
    assert.truthy(line:find("^invalid_argument"), line)
    assert.truthy(line:find("header_filter", 1, true), line)
    assert.truthy(line:find("cannot yield", 1, true), line)
  end)
end)
