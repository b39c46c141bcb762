-- taskapi.util.heap: a binary min-heap of tables ordered by their `at` field, and by insertion
-- order among equal times. It holds the scheduler's timers and wait_many's next polls.
local M = {}

local function less(a, b) return a.at < b.at or (a.at == b.at and a.seq < b.seq) end

--- An empty heap (its items are its array part).
function M.new() return { seq = 0 } end

function M.push(h, item)
  h.seq = h.seq + 1
  item.seq = h.seq
  local i = #h + 1
  h[i] = item
  while i > 1 do
    local p = (i - i % 2) / 2
    if not less(item, h[p]) then break end
    h[i], h[p] = h[p], item
    i = p
  end
  return item
end

--- Removes and returns the earliest item (nil when empty).
function M.pop(h)
  local n = #h
  local top = h[1]
  if n <= 1 then
    h[1] = nil
    return top
  end
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, m = 2 * i, i
    if l <= n and less(h[l], h[m]) then m = l end
    if l + 1 <= n and less(h[l + 1], h[m]) then m = l + 1 end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

return M
