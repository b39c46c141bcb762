-- taskapi.util.heap: earliest first, insertion order among equal times, empty pops.
local heap = require "taskapi.util.heap"

describe("taskapi.util.heap", function()
  it("pops items in time order, equal times in the order they came", function()
    local h = heap.new()
    local times = { 5, 1, 4, 1, 3, 9, 2, 6, 5, 3 }
    for i, t in ipairs(times) do heap.push(h, { at = t, i = i }) end
    local out = {}
    while h[1] do
      local item = heap.pop(h)
      out[#out + 1] = item.at .. ":" .. item.i
    end
    assert.are.same({ "1:2", "1:4", "2:7", "3:5", "3:10", "4:3", "5:1", "5:9", "6:8", "9:6" }, out)
    assert.is_nil(heap.pop(h))
  end)

  it("always pops the smallest time under mixed pushes and pops", function()
    local h, live = heap.new(), {}
    math.randomseed(7)
    for round = 1, 2000 do
      local t = math.random(1, 1000)
      heap.push(h, { at = t })
      live[#live + 1] = t
      if round % 3 == 0 then
        table.sort(live)
        assert.are.equal(table.remove(live, 1), heap.pop(h).at)
      end
    end
    local prev = -math.huge
    while h[1] do
      local item = heap.pop(h)
      assert.is_true(item.at >= prev)
      prev = item.at
    end
  end)
end)
