-- taskapi.fake.model.control: the fake's own routes (/_fake/...): scripted tasks and their
-- records, the request log, create stats, request and storage faults, reset, the clock.
local B = require "taskapi.fake.model.base"

local P = { Model = {} }
local Model = P.Model

local json_resp = B.json_resp

-- A control request whose body is a JSON object: fn(self, value, ctx) answers it.
local function with_body(what, fn)
  return function(self, ctx)
    local v, err = B.decode_json(ctx.body or "")
    if type(v) ~= "table" then
      return json_resp(400, { error = "the body must be " .. what .. ": " .. tostring(err or "not an object") })
    end
    return fn(self, v, ctx)
  end
end

-- "METHOD path" -> handler(self, ctx)
local ROUTES = {
  ["POST /_fake/tasks"] = with_body("a JSON task spec", function(self, spec)
    local id, err = self:add_task(spec)
    if not id then return json_resp(400, { error = err }) end
    return json_resp(200, { id = id })
  end),
  ["GET /_fake/log"] = function(self) return json_resp(200, self:log_json()) end,
  ["GET /_fake/stats"] = function(self) return json_resp(200, self:get_stats()) end,
  ["POST /_fake/faults"] = with_body("a JSON request fault", function(self, f)
    local ok, err = self:add_request_fault(f)
    if not ok then return json_resp(400, { error = err }) end
    return json_resp(200, { ok = true, pending = #self.request_faults })
  end),
  ["DELETE /_fake/faults"] = function(self)
    local n = #self.request_faults
    self.request_faults = {}
    return json_resp(200, { ok = true, cleared = n })
  end,
  ["POST /_fake/storage_faults"] = function(self, ctx) return self:set_storage_faults(ctx) end,
  ["POST /_fake/reset"] = function(self) self:reset(); return json_resp(200, { ok = true }) end,
  ["POST /_fake/advance"] = function(self, ctx)
    local s = tonumber(ctx.query.seconds)
    if not s then return json_resp(400, { error = "seconds=N is required" }) end
    self:advance(s)
    return json_resp(200, { ok = true, offset = self.offset })
  end,
}

function Model:route_control(ctx)
  local p, m = ctx.path, ctx.method
  local id = p:match("^/_fake/tasks/([^/]+)/files$")
  if id and m == "GET" then return self:file_records(id) end
  local route = ROUTES[m .. " " .. p]
  if route then return route(self, ctx) end
  id = p:match("^/_fake/tasks/([^/]+)$")
  if id and m == "GET" then
    local t = self.tasks[id]
    if not t then return json_resp(404, { error = "no such task" }) end
    local phase = self:phase(t, ctx.now)
    return json_resp(200, { id = t.id, provider = t.provider, owner_key = t.owner_key, phase = phase,
      polls = t.polls, spec = t.spec, final_time = self:final_time(t) })
  end
  return json_resp(404, { error = "no such control route: " .. m .. " " .. p })
end

return P
