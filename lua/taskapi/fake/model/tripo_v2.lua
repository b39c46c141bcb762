-- taskapi.fake.model.tripo_v2: Tripo's V2 API (/tripo/v2/openapi): its routes, envelope and
-- errors, the V2 task object (outputs under V2's names, multiview views nested), create,
-- batch read, balance and image upload. The task itself is tripo_task.lua's.
local B = require "taskapi.fake.model.base"
local tripo_task = require "taskapi.fake.model.tripo_task"
local store = require "taskapi.fake.model.store"

local P = { Model = {} }
local Model = P.Model

local floor = math.floor

local TRIPO = "/tripo/v2/openapi"
P.PREFIX = TRIPO

--- A Tripo V2 answer: {"code": 0, "data": ...}, or with a message an error {"code",
--- "message", "suggestion"}.
function Model:reply_tripo_v2(status, data_or_code, message, suggestion, headers)
  return tripo_task.reply(self, false, status, data_or_code, message, suggestion, headers)
end

function Model:tripo_data(t, ctx)
  local phase, progress, queuing, left = self:tripo_progress(t, ctx)
  local data = {
    task_id = t.id, type = t.type, status = "queued", input = t.input, output = {},
    progress = progress, consumed_credit = 0, queuing_num = queuing or -1, running_left_time = -1,
    create_time = floor(t.created),
  }
  if phase == "running" then
    data.status = "running"
    data.running_left_time = left
  elseif phase == "final" then
    data.status = t.status_value or t.final
    if data.status == "success" then
      data.consumed_credit = 20
      for _, o in ipairs(t.outputs) do data.output[o.name] = self:tripo_link(t, ctx, o) end
      if t.multiview then data.output.generate_multiview_image = self:tripo_views(t, ctx) end
      if t.rig then
        data.output.riggable = t.rig.riggable
        data.output.rig_type = t.rig.rig_type
      end
    elseif data.status == "failed" then
      data.error_code = t.error_code or 1001
    elseif data.status == "banned" then
      data.error_code = t.error_code or 2008
    elseif t.error_code then
      data.error_code = t.error_code
    end
  end
  return data
end

function Model:tripo_create(ctx)
  self:count_create(ctx, "tripo-v2")
  local body, err = B.decode_json(ctx.body or "")
  if type(body) ~= "table" then
    return self:reply_tripo_v2(400, 1003, "malformed request body: " .. tostring(err or "not an object"), "Send a JSON object")
  end
  if type(body.type) ~= "string" or body.type == "" then
    return self:reply_tripo_v2(400, 1004, "invalid parameter: type is required", "Set the task type")
  end
  local spec = store.create_spec(body, "tripo", body.type, ctx.key)
  local id, aerr = self:add_task(spec)
  if not id then return self:reply_tripo_v2(400, 1004, "invalid parameter: " .. aerr, "Check the fake task spec") end
  self:created(ctx, "tripo-v2", id)
  return self:reply_tripo_v2(200, { task_id = id })
end

function Model:route_tripo(ctx)
  local p, m = ctx.path:sub(#TRIPO + 1), ctx.method
  local id = p:match("^/task/([^/]+)$")
  if id == "batch" and m == "POST" then return self:tripo_list(ctx, P.API) end
  if id and m == "GET" then return self:tripo_read(ctx, id, P.API) end
  if p == "/task" and m == "POST" then return self:tripo_create(ctx) end
  if p == "/user/balance" and m == "GET" then
    return self:reply_tripo_v2(200, { balance = self.balance, frozen = 0 })
  end
  if p == "/upload" and m == "POST" then
    local part, err = self:upload_part(ctx)
    if not part then return self:reply_tripo_v2(400, 1003, "malformed request: " .. err, "Send the image as multipart field 'file'") end
    return self:reply_tripo_v2(200, { image_token = tripo_task.tripo_id(self:next_count() + 1000000) })
  end
  if id or p == "/task" or p == "/user/balance" or p == "/upload" then
    return self:reply_tripo_v2(405, 1004, "method not allowed", "")
  end
  return self:reply_tripo_v2(404, 1004, "no such endpoint: " .. ctx.path, "Check the base URL")
end

-- A missing or unknown key answers 401 code 1002.
function Model:serve_tripo(ctx)
  if not ctx.owner then
    return self:reply_tripo_v2(401, 1002, "Authentication failed", "Check your API key (and its region)")
  end
  return self:route_tripo(ctx)
end

-- The API (see tripo_task.api).
P.API = tripo_task.api("tripo-v2", TRIPO, Model.serve_tripo, Model.reply_tripo_v2, Model.tripo_data, function(sub)
  if sub == "/task" then return "create" end
  if sub == "/upload" then return "upload" end
  return nil
end)

return P
