-- taskapi.ops.serve's memory of the tasks a worker touched (M.memory): each task's entries in
-- every table go once the task has not been touched for the time given, and only then (the
-- fleet's behaviour over Redis and the nginx fake is spec/fleet_spec.lua's).
local serve = require "taskapi.ops.serve"

describe("a fleet worker's memory of its tasks (taskapi.ops.serve.memory)", function()
  it("drops a task's entries in every table once it is untouched for the time given", function()
    local t = 100
    local mem = serve.memory({ "states", "finals", "retries" }, 10, function() return t end)
    mem.states.a, mem.finals.a, mem.retries.a = "wait a", "task a", 1
    mem.keep("a")
    mem.states.b = "wait b"
    mem.keep("b")
    t = 108
    mem.keep("b")          -- b touched again, a not
    mem.forget()
    assert.equal("wait a", mem.states.a) -- 8 s: kept
    t = 110.5
    mem.forget()
    assert.is_nil(mem.states.a)
    assert.is_nil(mem.finals.a)
    assert.is_nil(mem.retries.a)
    assert.equal("wait b", mem.states.b) -- 2.5 s since its last touch
    t = 118.5
    mem.forget()
    assert.is_nil(mem.states.b)
    assert.is_nil(next(mem.states))
  end)

  it("keeps the entries of a task it touches again before the time is up", function()
    local t = 0
    local mem = serve.memory({ "states" }, 5, function() return t end)
    mem.states.x = 1
    for i = 1, 10 do
      t = i * 4
      mem.keep("x")
      mem.forget()
      assert.equal(1, mem.states.x)
    end
  end)
end)
