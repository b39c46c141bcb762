-- taskapi.run.handle: what the handles of both schedulers share (taskapi.run.scheduler's coroutines,
-- taskapi.run.ngx's light threads): how a function's end is recorded on its handle, and the
-- answer of join. One wording of "a foreign error becomes kind runtime" for both.
local errors = require "taskapi.errors"

local M = {}

M.pack = table.pack or function(...) return { n = select("#", ...), ... } end
M.unpack = table.unpack or unpack

--- Records on handle h how its function ended: ok and its results, or the error it raised
--- (a value that is not a taskapi error becomes kind "runtime", the value kept in err.value).
function M.settle(h, ok, ...)
  h.done = true
  if ok then
    h.results = M.pack(...)
    return
  end
  local e = ...
  if not errors.is(e) then
    local msg = type(e) == "table" and e.message ~= nil and tostring(e.message) or tostring(e)
    e = errors.new("runtime", "coroutine failed: " .. msg, { value = e })
  end
  h.err = e
end

--- The answer of join on a finished handle: its function's results, or nil, err.
function M.outcome(h)
  if h.err then return nil, h.err end
  return M.unpack(h.results, 1, h.results.n)
end

return M
