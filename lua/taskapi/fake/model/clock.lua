-- taskapi.fake.model.clock: the model's time (the host's clock plus what /_fake/advance added)
-- and where a task stands in it: the one place a task's end is computed.
local P = { Model = {} }
local Model = P.Model

function Model:now()
  return self.clock() + self.offset
end

--- Moves the model's clock forward by s seconds (for hosts whose clock is real time).
function Model:advance(s)
  self.offset = self.offset + (tonumber(s) or 0)
end

--- The model time from which task t is final (its status no longer changes). This is the
--- one place a task's end is computed: phase, completed_at and anything told of a task's
--- end (webhooks) read it.
function Model:final_time(t)
  return t.created + t.queue + t.run
end

-- "queued" | "running" | "final", seconds since creation
function Model:phase(t, now)
  local e = (now or self:now()) - t.created
  if e < t.queue then return "queued", e end
  if e < t.queue + t.run then return "running", e end -- final from final_time(t) on
  return "final", e
end

return P
