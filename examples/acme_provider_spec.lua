-- Testing a provider definition of your own (examples/acme_provider.lua) with busted: a few
-- nginx locations stand in for the API on 127.0.0.1 (taskapi.fake.server's `locations`), the
-- real client polls and downloads over HTTP.
local taskapi = require "taskapi"
local server = require "taskapi.fake.server"
local acme = require "acme_provider"

-- Job "j1" is done with one file; job "j2" is still rendering.
local LOCATIONS = [[
    location = /acme/v1/jobs/j1 {
      default_type application/json;
      content_by_lua_block {
        ngx.print('{"status":0,"result":{"phase":"done","percent":100,"files":[' ..
          '{"name":"preview","href":"http://' .. ngx.var.http_host .. '/acme/files/preview.png"}]}}')
      }
    }
    location = /acme/v1/jobs/j2 {
      default_type application/json;
      return 200 '{"status":0,"result":{"phase":"rendering","percent":40,"files":[]}}';
    }
    location = /acme/v1/jobs/nope {
      return 404 '{"status":7,"reason":"no such job"}';
    }
    location = /acme/v1/links/preview {
      default_type application/json;
      content_by_lua_block {
        ngx.print('{"status":0,"result":{"href":"http://' .. ngx.var.http_host .. '/acme/files/preview.png"}}')
      }
    }
    location = /acme/files/preview.png {
      default_type image/png;
      return 200 "not really a png, but bytes";
    }
]]

describe("a provider of my own (acme)", function()
  local fake, client, dir
  setup(function()
    fake = assert(server.start { ttl = 120, locations = LOCATIONS })
    client = assert(taskapi.new { provider = acme, api_key = "acme-key", base_url = fake.url .. "/acme/v1",
      min_interval = 0 })
    dir = os.tmpname()
    os.remove(dir)
  end)
  teardown(function()
    if client then client:close() end
    if fake then fake.stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("reads a running job: its state and progress in the library's shape", function()
    local task = assert(client:status("j2"))
    assert.equal("running", task.state)
    assert.equal("rendering", task.status)
    assert.equal(40, task.progress)
    assert.is_false(task.done)
  end)

  it("waits for a job and downloads its file", function()
    local task = assert(client:wait("j1", { interval = 0.1 }))
    assert.equal("succeeded", task.state)
    assert.equal("acme", task.provider)
    local files = assert(client:download(task, { dir = dir }))
    assert.equal(1, #files)
    assert.equal("j1_preview.png", files[1].path:match("([^/]+)$"))
    assert.equal(27, files[1].bytes)
  end)

  it("takes a download link from an endpoint of the provider's when its definition has link()", function()
    -- a definition's link(call, task, out, opts) makes the link (call is an API call of the
    -- client, with its key, retries and errors); file_ext names the file's extension
    local def = {}
    for k, v in pairs(acme) do def[k] = v end
    def.link = function(call, _, out)
      local data, err = call("GET", "/links/{id}", { id = out.name })
      if not data then return nil, err end
      return data.href
    end
    def.file_ext = function() return "dat" end
    local c = assert(taskapi.new { provider = def, api_key = "acme-key", base_url = fake.url .. "/acme/v1", min_interval = 0 })
    local task = assert(c:status("j1"))
    local files = assert(c:download(task, { dir = dir, overwrite = true }))
    assert.equal("j1_preview.dat", files[1].path:match("([^/]+)$"))
    assert.equal(27, files[1].bytes)
    c:close()
    def.link = "not a function"
    local bad, err = taskapi.new { provider = def, api_key = "acme-key" }
    assert.is_nil(bad)
    assert.equal("provider definition's 'link' must be a function", err.message)
  end)

  it("turns the API's errors into the library's", function()
    local task, err = client:status("nope")
    assert.is_nil(task)
    assert.equal("not_found", err.kind)
    assert.equal(7, err.code)
    assert.matches("acme: no such job", tostring(err))
    local _, bad = client:status("../etc")
    assert.equal("invalid_argument", bad.kind) -- checked before any request
  end)
end)
