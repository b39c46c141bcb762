-- The README's example of testing your own workflow: a client on the in-process fake
-- provider (no sockets), a scripted task, and an assertion on what your code got.
local taskapi = require "taskapi"
local fake = require "taskapi.fake"

describe("my workflow", function()
  it("waits for a task and downloads every result", function()
    local f = fake.new()
    local id = f:add_task { provider = "tripo", queue = 0, run = 1 }
    local client = assert(taskapi.new { provider = "tripo", api_key = "test-key",
      base_url = f:base_url("tripo"), transport = f:transport(), min_interval = 0 })
    local task = assert(client:wait(id, { interval = 0.2 }))
    assert.is_true(task.ok)
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir)
    local files = assert(client:download(task, { dir = dir }))
    assert.is_true(#files > 0)
    os.execute("rm -rf " .. dir)
  end)
end)
